"""Per-run records of adaptive schedules: which checkpoints a callback measured, round by round.

    adaptive/<callback>-<settings hash>.json

{"checkpoint_steps": the checkpoints the rounds chose from, "rounds": [[steps of round 0], [round 1], ...],
"settings": the schedule's adaptive settings}. Rewritten atomically whenever a round is added; the
rounds are a pure function of the stored results (see `devinterp.transitions.adaptive`), so the record
only saves readers (the report, the dashboard) from recomputing them.
"""
from __future__ import annotations

import json
from pathlib import Path

from devinterp.store.atomic import atomic_write_json
from devinterp.store.results import result_key
from devinterp.store.unreadable import UnreadableFileError, error_line

ADAPTIVE_DIRNAME = "adaptive"


def adaptive_path(run_dir: Path, callback: str, settings: str) -> Path:
    return Path(run_dir) / ADAPTIVE_DIRNAME / f"{result_key(callback, settings)}.json"


def write_adaptive_record(run_dir: Path, callback: str, settings: str, record: dict) -> None:
    path = adaptive_path(run_dir, callback, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)


def read_adaptive_record(run_dir: Path, callback: str, settings: str) -> dict | None:
    """The record, or None when this callback's settings were not scheduled adaptively in this run.
    Raises UnreadableFileError naming the file if it is damaged."""
    path = adaptive_path(run_dir, callback, settings)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise UnreadableFileError(path, error_line(e)) from None
