"""Callback results in a run directory: one atomic write per (step, callback, settings).

    metrics.parquet/part-<time>-cb-<callback>-<settings hash>-s<step>.parquet   the scalars
    arrays/<callback>-<settings hash>/step_<step>.npz                           the arrays
    failures/<callback>-<settings hash>/step_<step>.json                        error + traceback

    locks/<callback>-<settings hash>-s<step>.lock                               while being computed

The scalars' part file is written last and marks the result complete: a crash leaves either a
complete result or none (at worst an orphan array file that the retry overwrites). A part file
that is not a complete Parquet file (truncated, overwritten) does not count as a result, so the
next analysis computes it again (the bad file is left as it is). A failure is recorded but does
not count as done, so a re-run retries it.

Concurrent writers (two analyses, or an analysis beside a live run) `claim` a result before
computing it: an exclusive `flock` on its lock file, which the kernel releases when the holder
exits or is killed, so no claim outlives its process. Whoever holds the claim checks that the
result is still missing, computes it, stores it and removes the lock file: each result is stored
once.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from devinterp.store.atomic import atomic_write_bytes, atomic_write_json
from devinterp.store.metrics import METRICS_DIRNAME, PartCache, write_part
from devinterp.store.unreadable import UnreadableFileError, error_line, has_parquet_magic, warn_unreadable

ARRAYS_DIRNAME = "arrays"
FAILURES_DIRNAME = "failures"
LOCKS_DIRNAME = "locks"
_RESULT_PART = re.compile(r"-cb-(?P<callback>[A-Za-z0-9_]+)-(?P<settings>[0-9a-f]+)-s(?P<step>\d+)\.parquet$")


def result_key(callback: str, settings: str) -> str:
    return f"{callback}-{settings}"


class ResultStore:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._parts = PartCache()  # `scalars` is read at every poll of a follower: parse each part once

    def completed(self) -> set[tuple[int, str, str]]:
        """(step, callback name, settings hash) of every stored result (unreadable parts are
        named in a warning and do not count)."""
        done = set()
        for path in (self.run_dir / METRICS_DIRNAME).glob("part-*-cb-*.parquet"):
            match = _RESULT_PART.search(path.name)
            if match and self._readable(path):
                done.add((int(match["step"]), match["callback"], match["settings"]))
        return done

    def is_complete(self, step: int, callback: str, settings: str) -> bool:
        """Whether this one result is stored (cheaper than `completed` on a large run)."""
        pattern = f"part-*-cb-{callback}-{settings}-s{step:07d}.parquet"
        return any(self._readable(p) for p in (self.run_dir / METRICS_DIRNAME).glob(pattern))

    @staticmethod
    def _readable(path: Path) -> bool:
        if has_parquet_magic(path):
            return True
        if path.exists():
            warn_unreadable(UnreadableFileError(path, "not a complete Parquet file"), "the result is computed again")
        return False

    @contextlib.contextmanager
    def claim(self, step: int, callback: str, settings: str, wait: bool = False) -> Iterator[bool]:
        """Hold the exclusive right to compute this result; yields False (without waiting) when
        another process holds it, unless `wait`. The holder must re-check `is_complete`."""
        path = self.run_dir / LOCKS_DIRNAME / f"{result_key(callback, settings)}-s{step:07d}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with _claim(path, wait) as claimed:
            yield claimed

    def remove_stale_locks(self) -> int:
        """Remove lock files no process holds (left by killed holders); returns how many."""
        removed = 0
        for path in (self.run_dir / LOCKS_DIRNAME).glob("*.lock"):
            with _claim(path, wait=False) as claimed:
                removed += claimed
        return removed

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

    def write_failure(self, step: int, callback: str, settings: str, error: str, traceback: str,
                      file: str | None = None) -> None:
        """Record that this result could not be computed; `file`: the unreadable input, if that was why."""
        path = self._failure_path(step, callback, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"step": step, "callback": callback, "settings": settings, "error": error,
                  "traceback": traceback, "time": time.time()}
        atomic_write_json(path, record if file is None else {**record, "file": file})

    def failures(self) -> list[dict]:
        """Every recorded failure (an unreadable record is named in a warning and skipped)."""
        records = []
        for path in sorted((self.run_dir / FAILURES_DIRNAME).glob("*/step_*.json")):
            try:
                records.append(json.loads(path.read_text()))
            except FileNotFoundError:
                continue  # a retry succeeded meanwhile
            except (OSError, UnicodeDecodeError, ValueError) as e:
                warn_unreadable(UnreadableFileError(path, error_line(e)))
        return records

    def scalars(self, callback: str, settings: str, names: list[str]) -> pd.DataFrame:
        """The stored scalars `names` of one callback's settings: one row per stored step (index `step`,
        ascending), one column per name (NaN where a result lacks it). Unreadable parts are left out
        (with a warning, as `completed` does)."""
        rows = []
        for path in (self.run_dir / METRICS_DIRNAME).glob(f"part-*-cb-{result_key(callback, settings)}-s*.parquet"):
            if self._readable(path):
                try:
                    rows.append(self._parts.read(path))
                except (FileNotFoundError, UnreadableFileError):
                    continue
        frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["step", "name", "value"])
        wide = frame[frame["name"].isin(names)].pivot_table(index="step", columns="name", values="value", aggfunc="last")
        return wide.reindex(columns=names).rename_axis("step").sort_index()

    def load_arrays(self, callback: str, settings: str, step: int) -> dict[str, np.ndarray]:
        """The arrays of one result. Raises FileNotFoundError if it has none, UnreadableFileError
        if its file is corrupted."""
        path = self.run_dir / ARRAYS_DIRNAME / result_key(callback, settings) / f"step_{step:07d}.npz"
        try:
            with np.load(path) as data:
                return {name.replace("__", "/"): data[name] for name in data.files}
        except FileNotFoundError:
            raise
        except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, OSError, ...
            raise UnreadableFileError(path, error_line(e)) from None


@contextlib.contextmanager
def _claim(path: Path, wait: bool) -> Iterator[bool]:
    """An exclusive flock on the file at `path` (created if missing), removed again on release."""
    fd = _lock(path, wait)
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a waiter then finds a new file and retries
        os.close(fd)


def _lock(path: Path, wait: bool) -> int | None:
    """An open descriptor holding an exclusive flock on the file now at `path` (created if
    missing); None if another process holds it and not `wait`."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
