"""Per-run records of adaptive schedules: which checkpoints a callback measured, round by round.

    adaptive/<callback>-<settings hash>.json

{"checkpoint_steps": the checkpoints the rounds chose from, "rounds": [[steps of round 0], [round 1], ...],
"settings": the schedule's adaptive settings}. Rewritten atomically whenever a round is added; the
rounds are a pure function of the stored results (see `devinterp.transitions.adaptive`), so the record
only saves readers (the report, the dashboard) from recomputing them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devinterp.store.atomic import atomic_write_json
from devinterp.store.results import result_key
from devinterp.store.unreadable import UnreadableFileError, error_line

ADAPTIVE_DIRNAME = "adaptive"


@dataclass(frozen=True)
class AdaptiveRecord:
    checkpoint_steps: list[int]
    rounds: list[list[int]]
    settings: dict = field(default_factory=dict)

    @property
    def measured(self) -> set[int]:
        """Every step the rounds chose."""
        return set().union(*map(set, self.rounds))

    @property
    def refined(self) -> set[int]:
        """The steps the refinement rounds (all but round 0) added."""
        return set().union(*map(set, self.rounds[1:]))


def adaptive_path(run_dir: Path, callback: str, settings: str) -> Path:
    return Path(run_dir) / ADAPTIVE_DIRNAME / f"{result_key(callback, settings)}.json"


def write_adaptive_record(run_dir: Path, callback: str, settings: str, record: AdaptiveRecord) -> None:
    path = adaptive_path(run_dir, callback, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, asdict(record))


def read_adaptive_record(run_dir: Path, callback: str, settings: str) -> AdaptiveRecord | None:
    """The record, or None when this callback's settings were not scheduled adaptively in this run.
    Raises UnreadableFileError naming the file if it is damaged."""
    try:
        return read_adaptive_file(adaptive_path(run_dir, callback, settings))
    except FileNotFoundError:
        return None


def read_adaptive_file(path: Path) -> AdaptiveRecord:
    """One record file. Raises FileNotFoundError, or UnreadableFileError naming it if it is damaged."""
    try:
        values = json.loads(Path(path).read_text())
        return AdaptiveRecord([int(s) for s in values["checkpoint_steps"]],
                              [[int(s) for s in r] for r in values["rounds"]], dict(values.get("settings", {})))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise UnreadableFileError(Path(path), error_line(e)) from None
