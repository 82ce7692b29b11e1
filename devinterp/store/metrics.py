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

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from devinterp.store.atomic import atomic_write_bytes
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
    """The run's complete metric part files, in write order (temporary files excluded); [] while the
    run has none. Raises UnreadableFileError if the directory cannot be listed."""
    directory = Path(run_dir) / METRICS_DIRNAME
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise UnreadableFileError(directory, error_line(e)) from None
    return [directory / n for n in sorted(names) if n.startswith("part-") and n.endswith(".parquet")]


def read_part(path: Path) -> pd.DataFrame:
    """One part file, its columns in the table's types. Raises UnreadableFileError naming the file if
    it is not a complete Parquet file of metric rows (FileNotFoundError if it is gone)."""
    try:
        frame = pq.read_table(path).to_pandas()
    except FileNotFoundError:
        raise
    except Exception as e:  # pyarrow raises several types for truncated or foreign files
        raise UnreadableFileError(path, f"not a readable Parquet file ({error_line(e)})") from None
    missing = [c for c in ("step", "name", "value") if c not in frame.columns]
    if missing:
        raise UnreadableFileError(path, f"missing columns {missing}")
    try:
        frame["step"] = pd.to_numeric(frame["step"], errors="raise").astype("int64")
    except (ValueError, TypeError, OverflowError) as e:
        raise UnreadableFileError(path, f"bad step column ({error_line(e)})") from None
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    frame["name"] = frame["name"].astype(str)
    return frame


@dataclass
class PartCache:
    """Parsed part files, keyed by path and (size, mtime): a reader that polls a run (the dashboard)
    parses only new or changed parts. Safe to share between threads."""

    max_entries: int = 50_000
    _entries: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, path: Path) -> pd.DataFrame:
        """`read_part(path)`, parsed again only if the file changed since it was cached."""
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            hit = self._entries.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        frame = read_part(path)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[path] = (key, frame)
        return frame


def read_metrics_and_problems(run_dir: Path, latest_only: bool = True, cache: PartCache | None = None
                              ) -> tuple[pd.DataFrame, list[UnreadableFileError]]:
    """`read_metrics`, and the files that could not be read (skipped, not warned about): damaged
    parts, or the metrics directory itself. `cache` keeps parsed parts between calls."""
    frames, problems = [], []
    try:
        parts = metric_parts(run_dir)
    except UnreadableFileError as e:
        parts, problems = [], [e]
    for path in parts:
        try:
            frames.append(cache.read(path) if cache is not None else read_part(path))
        except FileNotFoundError:
            continue  # vanished between listing and reading
        except UnreadableFileError as e:
            problems.append(e)
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
