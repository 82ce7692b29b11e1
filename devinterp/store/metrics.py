"""The run's metrics table: long format (step, name, value), stored as a Parquet dataset.

`<run_dir>/metrics.parquet/` is a directory of part files, each written atomically; pandas and
pyarrow read the directory as one table (`pd.read_parquet(run_dir / "metrics.parquet")`).
Appending is a new part file, so a crash loses at most the rows not yet flushed, earlier parts are
never rewritten, and several writers (a live run and a post-hoc analysis) never clobber each
other. Part names sort in write order; `read_metrics` keeps the last row written for a repeated
(step, name), which is what a resumed run produces when it recomputes rows lost in a crash.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from devinterp.store.atomic import TMP_PREFIX, atomic_write_bytes

METRICS_DIRNAME = "metrics.parquet"
SCHEMA = pa.schema([("step", pa.int64()), ("name", pa.string()), ("value", pa.float64())])


class MetricsWriter:
    """Buffers (step, name, value) rows and appends them to the run's metrics dataset on `flush`."""

    def __init__(self, run_dir: Path, flush_every: int = 500):
        self.directory = Path(run_dir) / METRICS_DIRNAME
        self.directory.mkdir(parents=True, exist_ok=True)
        self.flush_every = flush_every
        self._rows: list[tuple[int, str, float]] = []

    def add(self, step: int, metrics: dict[str, float]) -> None:
        self._rows.extend((int(step), name, float(value)) for name, value in metrics.items())
        if len(self._rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        steps, names, values = zip(*self._rows)
        table = pa.table({"step": steps, "name": names, "value": values}, schema=SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        atomic_write_bytes(self.directory / name, sink.getvalue().to_pybytes())
        self._rows = []


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """All metrics of a run as a long DataFrame (step, name, value), sorted by step then name."""
    directory = Path(run_dir) / METRICS_DIRNAME
    parts = sorted(p for p in directory.glob("part-*.parquet") if not p.name.startswith(TMP_PREFIX))
    if not parts:
        return pd.DataFrame({"step": pd.Series(dtype="int64"), "name": pd.Series(dtype="str"),
                             "value": pd.Series(dtype="float64")})
    frame = pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
    frame = frame.drop_duplicates(subset=["step", "name"], keep="last")
    return frame.sort_values(["step", "name"], kind="stable").reset_index(drop=True)


def metric_series(metrics: pd.DataFrame, name: str) -> pd.Series:
    """One metric as a Series indexed by step."""
    rows = metrics[metrics["name"] == name]
    return pd.Series(rows["value"].to_numpy(), index=rows["step"].to_numpy(), name=name)
