"""Callback results in a run directory: one atomic write per (step, callback, settings).

    metrics.parquet/part-<time>-cb-<callback>-<settings hash>-s<step>.parquet   the scalars
    arrays/<callback>-<settings hash>/step_<step>.npz                           the arrays
    failures/<callback>-<settings hash>/step_<step>.json                        error + traceback

The scalars' part file is written last and marks the result complete: a crash leaves either a
complete result or none (at worst an orphan array file that the retry overwrites). Distinct file
names mean concurrent analyses of one run never lose each other's rows. A failure is recorded
but does not count as done, so a re-run retries it.
"""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import numpy as np

from devinterp.store.atomic import atomic_write_bytes, atomic_write_json
from devinterp.store.metrics import METRICS_DIRNAME, write_part

ARRAYS_DIRNAME = "arrays"
FAILURES_DIRNAME = "failures"
_RESULT_PART = re.compile(r"-cb-(?P<callback>[A-Za-z0-9_]+)-(?P<settings>[0-9a-f]+)-s(?P<step>\d+)\.parquet$")


def result_key(callback: str, settings: str) -> str:
    return f"{callback}-{settings}"


class ResultStore:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def completed(self) -> set[tuple[int, str, str]]:
        """(step, callback name, settings hash) of every stored result."""
        done = set()
        for path in (self.run_dir / METRICS_DIRNAME).glob("part-*-cb-*.parquet"):
            match = _RESULT_PART.search(path.name)
            if match:
                done.add((int(match["step"]), match["callback"], match["settings"]))
        return done

    def write(self, step: int, callback: str, settings: str, scalars: dict[str, float],
              arrays: dict[str, np.ndarray]) -> None:
        if arrays:
            buffer = io.BytesIO()
            np.savez(buffer, **{name.replace("/", "__"): np.asarray(a) for name, a in arrays.items()})
            path = self.run_dir / ARRAYS_DIRNAME / result_key(callback, settings) / f"step_{step:07d}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buffer.getvalue())
        rows = [(step, name, float(value)) for name, value in scalars.items()]
        write_part(self.run_dir, rows, callback, settings, label=f"cb-{callback}-{settings}-s{step:07d}")
        self._failure_path(step, callback, settings).unlink(missing_ok=True)

    def _failure_path(self, step: int, callback: str, settings: str) -> Path:
        return self.run_dir / FAILURES_DIRNAME / result_key(callback, settings) / f"step_{step:07d}.json"

    def write_failure(self, step: int, callback: str, settings: str, error: str, traceback: str) -> None:
        path = self._failure_path(step, callback, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"step": step, "callback": callback, "settings": settings, "error": error,
                                 "traceback": traceback, "time": time.time()})

    def failures(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.run_dir / FAILURES_DIRNAME).glob("*/step_*.json"))]

    def load_arrays(self, callback: str, settings: str, step: int) -> dict[str, np.ndarray]:
        path = self.run_dir / ARRAYS_DIRNAME / result_key(callback, settings) / f"step_{step:07d}.npz"
        with np.load(path) as data:
            return {name.replace("__", "/"): data[name] for name in data.files}
