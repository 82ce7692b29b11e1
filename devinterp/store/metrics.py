"""The run's metrics table: long format (step, name, value, callback, settings), a Parquet dataset.

`callback` says what produced a row ("train" for the training loop, else a callback's name) and
`settings` the hash of that callback's settings ("" for the training loop).

`<run_dir>/metrics.parquet/` is a directory of part files, each written atomically; pandas and
pyarrow read the directory as one table (`pd.read_parquet(run_dir / "metrics.parquet")`).
Appending is a new part file, so a crash loses at most the rows not yet flushed, earlier parts are
never rewritten, and several writers (a live run and a post-hoc analysis) never clobber each
other. Part names sort in write order; `read_metrics` keeps the last row written for a repeated
(step, name), which is what a resumed run produces when it recomputes rows lost in a crash.
A part that cannot be read (truncated, overwritten) is skipped and named, never removed.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from devinterp.store.atomic import TMP_PREFIX, atomic_write_bytes
from devinterp.store.unreadable import UnreadableFileError, error_line, warn_unreadable

METRICS_DIRNAME = "metrics.parquet"
SCHEMA = pa.schema([("step", pa.int64()), ("name", pa.string()), ("value", pa.float64()),
                    ("callback", pa.string()), ("settings", pa.string())])
COLUMNS = [field.name for field in SCHEMA]


def write_part(run_dir: Path, rows: list[tuple[int, str, float]], callback: str, settings: str,
               label: str = "") -> Path:
    """Append rows (step, name, value) as one new, atomically written part file."""
    directory = Path(run_dir) / METRICS_DIRNAME
    directory.mkdir(parents=True, exist_ok=True)
    steps, names, values = zip(*rows) if rows else ((), (), ())
    table = pa.table({"step": steps, "name": names, "value": values, "callback": [callback] * len(rows),
                      "settings": [settings] * len(rows)}, schema=SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    path = directory / f"part-{time.time_ns():020d}-{label or uuid.uuid4().hex[:8]}.parquet"
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


class MetricsWriter:
    """Buffers (step, name, value) rows and appends them to the run's metrics dataset on `flush`."""

    def __init__(self, run_dir: Path, flush_every: int = 500, callback: str = "train", settings: str = ""):
        self.run_dir = Path(run_dir)
        (self.run_dir / METRICS_DIRNAME).mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self.callback, self.settings = callback, settings
        self._rows: list[tuple[int, str, float]] = []

    def add(self, step: int, metrics: dict[str, float]) -> None:
        self._rows.extend((int(step), name, float(value)) for name, value in metrics.items())
        if len(self._rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            write_part(self.run_dir, self._rows, self.callback, self.settings)
            self._rows = []


def metric_parts(run_dir: Path) -> list[Path]:
    """The run's complete metric part files, in write order (temporary files excluded)."""
    directory = Path(run_dir) / METRICS_DIRNAME
    return sorted(p for p in directory.glob("part-*.parquet") if not p.name.startswith(TMP_PREFIX))


def read_metrics_and_problems(run_dir: Path, latest_only: bool = True
                              ) -> tuple[pd.DataFrame, list[UnreadableFileError]]:
    """`read_metrics`, and the part files that could not be read (skipped, not warned about)."""
    frames, problems = [], []
    for path in metric_parts(run_dir):
        try:
            frames.append(pq.read_table(path).to_pandas())
        except FileNotFoundError:
            continue  # vanished between listing and reading
        except Exception as e:  # pyarrow raises several types for truncated or foreign files
            problems.append(UnreadableFileError(path, error_line(e)))
    if not frames:
        return SCHEMA.empty_table().to_pandas(), problems
    frame = pd.concat(frames, ignore_index=True)
    if latest_only:
        frame = frame.drop_duplicates(subset=["step", "name"], keep="last")
    return frame.sort_values(["step", "name"], kind="stable").reset_index(drop=True), problems


def read_metrics(run_dir: Path, latest_only: bool = True) -> pd.DataFrame:
    """All metrics of a run as a long DataFrame (step, name, value, callback, settings), sorted by
    step then name. With `latest_only`, one row per (step, name): the last one written (after a
    callback's settings change, its newest results). An unreadable part file is skipped with an
    `UnreadableFileWarning` naming it."""
    frame, problems = read_metrics_and_problems(run_dir, latest_only)
    for problem in problems:
        warn_unreadable(problem, "skipped this metrics part")
    return frame


def metric_series(metrics: pd.DataFrame, name: str) -> pd.Series:
    """One metric as a Series indexed by step."""
    rows = metrics[metrics["name"] == name]
    return pd.Series(rows["value"].to_numpy(), index=rows["step"].to_numpy(), name=name)
