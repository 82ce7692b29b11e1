"""Reading run directories for the dashboard: robust, read-only, no Dash imports.

Conventions
- A *run* is any directory below `runs_dir` holding `config.yaml`; the walk does not descend into
  a run (its `checkpoints/` may hold hundreds of directories) nor into `.tmp-*` or hidden names.
- A run's *id* is its path relative to `runs_dir` in POSIX form; it is what the page sends back.
- Nothing here writes, creates or deletes anything. Every problem with one run (missing or
  corrupted files, a foreign directory) becomes an error message attached to that run; the
  `load_*` functions below never raise for bad data, so one broken run cannot stop the others.
- Metrics and status files are read through the store (`devinterp.store.metrics`,
  `devinterp.store.run_dir`): the last row written for a (step, name) wins; non-finite values become
  NaN (a gap in a chart). A run whose status says "training" (or "analysing") but was not updated for
  `stale_after` seconds is shown as "stale".
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from devinterp.store.adaptive import ADAPTIVE_DIRNAME, AdaptiveRecord, read_adaptive_file
from devinterp.store.atomic import TMP_PREFIX
from devinterp.store.metrics import METRICS_DIRNAME, PartCache, metric_parts, read_metrics_and_problems
from devinterp.store.run_dir import (ANALYSIS_STATUS_FILE, CHECKPOINT_INDEX_FILE, CHECKPOINTS_DIRNAME, REPORT_DIRNAME,
                                     RUN_CONFIG_FILE, STAGES_FILE, STATUS_FILE, Status, read_status)
from devinterp.store.unreadable import UnreadableFileError
from devinterp.views.stages import STAGE_COLORS

STAGES_PATH = Path(REPORT_DIRNAME) / STAGES_FILE
CHECKPOINT_INDEX_PATH = Path(CHECKPOINTS_DIRNAME) / CHECKPOINT_INDEX_FILE
# What the run list shows; "error" means the run's status could not be read at all.
BADGES = ("training", "analysing", "finished", "failed", "stale", "error")
ACTIVE_STATES = {"training": "training", "analysing": "analysing"}


class RunDataError(Exception):
    """A file of a run is missing, unreadable or not in the expected format."""


@dataclass(frozen=True)
class RunStatus:
    """What the run list shows for a run: a badge (one of BADGES) and a one-line detail."""

    badge: str
    detail: str
    training: Status | None = None
    analysis: Status | None = None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunSnapshot:
    """Everything the charts need from one run, as read at one poll. `errors` lists what could not be read."""

    run_id: str
    path: Path
    status: RunStatus
    metrics: pd.DataFrame  # long format: step (int64), name (str), value (float64)
    stages: pd.DataFrame  # start_step, end_step, type (a key of STAGE_COLORS); may be empty
    checkpoint_steps: tuple[int, ...]
    errors: tuple[str, ...] = ()
    adaptive: AdaptiveRecord | None = None  # the LLC's adaptive schedule, when it has one


def empty_metrics() -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype="int64"), "name": pd.Series(dtype="object"),
                         "value": pd.Series(dtype="float64")})


def empty_stages() -> pd.DataFrame:
    return pd.DataFrame({"start_step": pd.Series(dtype="int64"), "end_step": pd.Series(dtype="int64"),
                         "type": pd.Series(dtype="object")})


# ---------------------------------------------------------------------------------------------
# Finding runs
# ---------------------------------------------------------------------------------------------

def _skipped(name: str) -> bool:
    return name.startswith(".") or name.startswith(TMP_PREFIX)


def find_runs(runs_dir: Path) -> list[Path]:
    """Run directories below `runs_dir` (itself included), sorted by path. Unreadable
    subdirectories are skipped; symlinked directories are not followed."""
    runs_dir = Path(runs_dir)
    found = []
    for root, dirs, files in os.walk(runs_dir, onerror=lambda _e: None):
        if RUN_CONFIG_FILE in files:
            found.append(Path(root))
            dirs[:] = []  # a run's own subdirectories are not runs
        else:
            dirs[:] = sorted(d for d in dirs if not _skipped(d))
    return sorted(found)


def run_id(runs_dir: Path, run_dir: Path) -> str:
    relative = Path(run_dir).relative_to(runs_dir).as_posix()
    return relative if relative != "." else Path(runs_dir).name


def resolve_run_ids(runs_dir: Path, ids: list[str] | None) -> list[tuple[str, Path]]:
    """(id, path) for the ids that name a run currently below `runs_dir`, in the given order.
    Ids come from the browser, so only ids of runs found by `find_runs` are accepted."""
    known = {run_id(runs_dir, p): p for p in find_runs(runs_dir)}
    return [(i, known[i]) for i in ids or [] if i in known]


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------

def read_status_file(run_dir: Path, name: str = STATUS_FILE) -> Status:
    """A status file of the run (`devinterp.store.run_dir.read_status`); RunDataError naming the file if it
    is missing or malformed."""
    try:
        return read_status(run_dir, name)
    except FileNotFoundError:
        raise RunDataError(f"{name} is missing") from None
    except UnreadableFileError as e:
        raise RunDataError(f"{name} is unreadable ({e.reason})") from None


def _age(status: Status, now: float) -> float | None:
    return None if status.updated is None else max(0.0, now - status.updated)


def _is_stale(status: Status, now: float, stale_after: float) -> bool:
    age = _age(status, now)
    return age is None or age > stale_after


def _format_age(seconds: float | None) -> str:
    if seconds is None:
        return "never updated"
    if seconds < 90:
        return f"updated {seconds:.0f} s ago"
    if seconds < 5400:
        return f"updated {seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"updated {seconds / 3600:.1f} h ago"
    return f"updated {seconds / 86400:.0f} d ago"


def load_status(run_dir: Path, now: float, stale_after: float) -> RunStatus:
    """The run's badge: an active (training / analysing) state wins over a finished one; an
    active state not updated for `stale_after` seconds is "stale"; a failure is "failed"."""
    run_dir = Path(run_dir)
    errors = []
    try:
        training = read_status_file(run_dir)
    except RunDataError as e:
        training, errors = None, [str(e)]
    analysis = None
    if (run_dir / ANALYSIS_STATUS_FILE).exists():
        try:
            analysis = read_status_file(run_dir, ANALYSIS_STATUS_FILE)
        except RunDataError as e:
            errors.append(str(e))

    for source, label in ((training, ""), (analysis, "analysis ")):
        if source is not None and source.state in ACTIVE_STATES:
            age = _age(source, now)
            step = f"step {source.step}, " if source.step is not None else ""
            badge = "stale" if _is_stale(source, now, stale_after) else ACTIVE_STATES[source.state]
            detail = f"{label}{source.state}: {step}{_format_age(age)}"
            return RunStatus(badge, detail, training, analysis, tuple(errors))
    failed = [(s, label) for s, label in ((training, ""), (analysis, "analysis ")) if s and s.state == "failed"]
    if failed:
        source, label = failed[0]
        step = f" at step {source.step}" if source.step is not None else ""
        return RunStatus("failed", f"{label}failed{step}", training, analysis, tuple(errors))
    if training is not None and training.state == "finished":
        step = f"{training.step} steps" if training.step is not None else "finished"
        return RunStatus("finished", step, training, analysis, tuple(errors))
    if training is not None:
        errors.append(f"{STATUS_FILE} has an unknown state {training.state!r}")
    return RunStatus("error", errors[0] if errors else "no status", training, analysis, tuple(errors))


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def load_metrics(run_dir: Path, cache: PartCache | None = None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """All readable metric rows of a run (step, name, value; sorted by step, name; the last row written
    for a (step, name) wins; non-finite values NaN) and one error per file that could not be read."""
    frame, problems = read_metrics_and_problems(run_dir, latest_only=True, cache=cache)
    errors = tuple(f"{METRICS_DIRNAME}/{p.path.name}: {p.reason}" if p.path.name != METRICS_DIRNAME
                   else f"{METRICS_DIRNAME}/ is unreadable ({p.reason})" for p in problems)
    metrics = frame[["step", "name", "value"]].reset_index(drop=True)
    metrics["value"] = metrics["value"].where(np.isfinite(metrics["value"]))
    return metrics, errors


# ---------------------------------------------------------------------------------------------
# Stages and checkpoints
# ---------------------------------------------------------------------------------------------

def load_stages(run_dir: Path) -> pd.DataFrame:
    """Detected stages from `<run_dir>/report/stages.csv` (columns start_step, end_step, type;
    other columns ignored); empty if the file does not exist. Raises RunDataError if malformed."""
    path = Path(run_dir) / STAGES_PATH
    if not path.exists():
        return empty_stages()
    try:
        frame = pd.read_csv(path)
    except Exception as e:  # empty, truncated or binary file
        raise RunDataError(f"{STAGES_PATH.as_posix()} is unreadable ({type(e).__name__})") from None
    missing = {"start_step", "end_step", "type"} - set(frame.columns)
    if missing:
        raise RunDataError(f"{STAGES_PATH.as_posix()}: missing columns {sorted(missing)}")
    try:
        start = pd.to_numeric(frame["start_step"]).astype("int64")
        end = pd.to_numeric(frame["end_step"]).astype("int64")
    except (ValueError, TypeError) as e:
        raise RunDataError(f"{STAGES_PATH.as_posix()}: non-integer steps ({e})") from None
    kind = frame["type"].astype(str).str.strip()
    kind = kind.where(kind.isin(list(STAGE_COLORS)), "other")
    return pd.DataFrame({"start_step": start, "end_step": end, "type": kind}).sort_values("start_step").reset_index(drop=True)


def load_checkpoint_steps(run_dir: Path) -> tuple[int, ...]:
    """Steps listed in `checkpoints/index.json` (without importing torch); () if none yet.
    Raises RunDataError if the manifest exists but is malformed."""
    path = Path(run_dir) / CHECKPOINT_INDEX_PATH
    if not path.exists():
        return ()
    try:
        entries = json.loads(path.read_text())
        return tuple(sorted(int(entry["step"]) for entry in entries))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as e:
        raise RunDataError(f"{CHECKPOINT_INDEX_PATH.as_posix()} is malformed ({type(e).__name__})") from None


def load_adaptive_llc(run_dir: Path) -> AdaptiveRecord | None:
    """The newest LLC adaptive-schedule record (`adaptive/llc-*.json`), or None. Raises RunDataError if malformed."""
    records = sorted((Path(run_dir) / ADAPTIVE_DIRNAME).glob("llc-*.json"), key=lambda p: p.stat().st_mtime_ns)
    if not records:
        return None
    try:
        return read_adaptive_file(records[-1])
    except (FileNotFoundError, UnreadableFileError) as e:
        raise RunDataError(f"{ADAPTIVE_DIRNAME}/{records[-1].name} is malformed ({type(e).__name__})") from None


# ---------------------------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------------------------

def load_run(runs_dir: Path, run_dir: Path, now: float, stale_after: float,
             cache: PartCache | None = None) -> RunSnapshot:
    """Everything about one run; never raises for bad data (problems go to `errors`)."""
    run_dir = Path(run_dir)
    status = load_status(run_dir, now, stale_after)
    errors = list(status.errors)
    metrics, metric_errors = load_metrics(run_dir, cache)
    errors.extend(metric_errors)
    if not (run_dir / METRICS_DIRNAME).is_dir():
        errors.append(f"{METRICS_DIRNAME}/ is missing (not a devinterp run, or not started yet)")
    try:
        stages = load_stages(run_dir)
    except RunDataError as e:
        stages = empty_stages()
        errors.append(str(e))
    try:
        steps = load_checkpoint_steps(run_dir)
    except RunDataError as e:
        steps = ()
        errors.append(str(e))
    try:
        adaptive = load_adaptive_llc(run_dir)
    except RunDataError as e:
        adaptive = None
        errors.append(str(e))
    return RunSnapshot(run_id(runs_dir, run_dir), run_dir, status, metrics, stages, steps, tuple(errors), adaptive)


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def change_signature(run_dir: Path) -> tuple:
    """Cheap fingerprint (file names, sizes, mtimes) of everything `load_run` reads; it changes
    whenever the charts could change, so the page can skip redrawing unchanged runs."""
    run_dir = Path(run_dir)
    try:
        parts = metric_parts(run_dir)
    except UnreadableFileError:
        parts = []
    return (
        str(run_dir),
        len(parts),
        parts[-1].name if parts else None,
        tuple(_stat_key(p) for p in parts[-3:]),
        _stat_key(run_dir / STATUS_FILE),
        _stat_key(run_dir / ANALYSIS_STATUS_FILE),
        _stat_key(run_dir / STAGES_PATH),
        _stat_key(run_dir / CHECKPOINT_INDEX_PATH),
        tuple(_stat_key(p) for p in sorted((run_dir / ADAPTIVE_DIRNAME).glob("llc-*.json"))),
    )
