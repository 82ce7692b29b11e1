"""Per-run calibrations: settings a callback chose once for the whole run.

    calibration/<callback>-<settings hash>.json

A calibration is written once, atomically, and never replaced: the first writer wins and later
writers read its record instead, so every checkpoint of a run is measured with the same settings
even when several processes analyse the run at once.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from devinterp.store.atomic import fsync_dir, tmp_path_for
from devinterp.store.results import result_key
from devinterp.store.unreadable import UnreadableFileError

CALIBRATION_DIRNAME = "calibration"


def calibration_path(run_dir: Path, callback: str, settings: str) -> Path:
    return Path(run_dir) / CALIBRATION_DIRNAME / f"{result_key(callback, settings)}.json"


def read_calibration(run_dir: Path, callback: str, settings: str) -> dict | None:
    """The stored record, or None if this callback's settings have not been calibrated in this run.
    Raises UnreadableFileError naming the file if it is damaged (it is never replaced: move it aside
    to calibrate again)."""
    path = calibration_path(run_dir, callback, settings)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UnreadableFileError(path, f"{type(e).__name__}: {e}; move it aside to calibrate again") from None


def write_calibration(run_dir: Path, callback: str, settings: str, record: dict) -> dict:
    """Store `record` unless a calibration is already stored; returns the stored one (the winner)."""
    path = calibration_path(run_dir, callback, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails if a calibration exists: never replace it
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return read_calibration(run_dir, callback, settings)
