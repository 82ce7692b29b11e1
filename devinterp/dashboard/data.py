"""Reading run directories for the dashboard: robust, read-only, no Dash imports.

Conventions
- A *run* is any directory below `runs_dir` holding `config.yaml`; the walk does not descend into
  a run (its `checkpoints/` may hold hundreds of directories) nor into `.tmp-*` or hidden names.
- A run's *id* is its path relative to `runs_dir` in POSIX form; it is what the page sends back.
- Nothing here writes, creates or deletes anything. Every problem with one run (missing or
  corrupted files, a foreign directory) becomes an error message attached to that run; the
  `load_*` functions below never raise for bad data, so one broken run cannot stop the others.
- Metrics follow `devinterp.store.metrics`: part files sort in write order and the last row
  written for a (step, name) wins. Non-finite values become NaN (a gap in a chart).
- Status files (`status.json`, `analysis_status.json`) hold {"state", "step", "updated"} with
  `updated` in Unix seconds. A run whose status says "training" (or "analysing") but was not
  updated for `stale_after` seconds is shown as "stale".
"""
from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from devinterp.store.atomic import TMP_PREFIX
from devinterp.store.metrics import METRICS_DIRNAME
from devinterp.store.run_dir import CHECKPOINTS_DIRNAME, CONFIG_FILE, STATUS_FILE

ANALYSIS_STATUS_FILE = "analysis_status.json"
STAGES_FILE = Path("report") / "stages.csv"
CHECKPOINT_INDEX_FILE = Path(CHECKPOINTS_DIRNAME) / "index.json"
STAGE_TYPES = ("A", "B", "other")
# What the run list shows; "error" means the run's status could not be read at all.
BADGES = ("training", "analysing", "finished", "failed", "stale", "error")
ACTIVE_STATES = {"training": "training", "analysing": "analysing"}


class RunDataError(Exception):
    """A file of a run is missing, unreadable or not in the expected format."""


@dataclass(frozen=True)
class StatusFile:
    """One status file: state, last step, last update (Unix seconds; None if absent)."""

    state: str
    step: int | None
    updated: float | None


@dataclass(frozen=True)
class RunStatus:
    """What the run list shows for a run: a badge (one of BADGES) and a one-line detail."""

    badge: str
    detail: str
    training: StatusFile | None = None
    analysis: StatusFile | None = None
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunData:
    """Everything the charts need from one run. `errors` lists what could not be read."""

    run_id: str
    path: Path
    status: RunStatus
    metrics: pd.DataFrame  # long format: step (int64), name (str), value (float64)
    stages: pd.DataFrame  # start_step, end_step, type (one of STAGE_TYPES); may be empty
    checkpoint_steps: tuple[int, ...]
    errors: tuple[str, ...] = ()


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
        if CONFIG_FILE in files:
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

def read_status_file(path: Path) -> StatusFile:
    """Parse a status file; raises RunDataError naming the file if it is missing or malformed."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise RunDataError(f"{Path(path).name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDataError(f"{Path(path).name} is unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("state"), str):
        raise RunDataError(f"{Path(path).name} has no 'state' string")
    step, updated = raw.get("step"), raw.get("updated")
    step = int(step) if isinstance(step, (int, float)) and math.isfinite(step) else None
    updated = float(updated) if isinstance(updated, (int, float)) and math.isfinite(updated) else None
    return StatusFile(state=raw["state"], step=step, updated=updated)


def _age(status: StatusFile, now: float) -> float | None:
    return None if status.updated is None else max(0.0, now - status.updated)


def _is_stale(status: StatusFile, now: float, stale_after: float) -> bool:
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
        training = read_status_file(run_dir / STATUS_FILE)
    except RunDataError as e:
        training, errors = None, [str(e)]
    analysis = None
    if (run_dir / ANALYSIS_STATUS_FILE).exists():
        try:
            analysis = read_status_file(run_dir / ANALYSIS_STATUS_FILE)
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

@dataclass
class PartCache:
    """In-memory cache of parsed metric part files, keyed by path and (size, mtime), so polling
    re-reads only new or changed parts. Safe to share between request threads."""

    max_entries: int = 50_000
    _entries: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, path: Path, key: tuple[int, int]) -> pd.DataFrame | None:
        with self._lock:
            hit = self._entries.get(path)
        return hit[1] if hit is not None and hit[0] == key else None

    def put(self, path: Path, key: tuple[int, int], frame: pd.DataFrame) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[path] = (key, frame)


def metric_parts(run_dir: Path) -> list[Path]:
    """The run's complete metric part files in write order (temporary files excluded)."""
    directory = Path(run_dir) / METRICS_DIRNAME
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise RunDataError(f"{METRICS_DIRNAME}/ is unreadable ({e.strerror or e})") from None
    return [directory / n for n in sorted(names) if n.startswith("part-") and n.endswith(".parquet")]


def read_part(path: Path) -> pd.DataFrame:
    """One part file as a clean (step, name, value) frame; raises RunDataError if unusable."""
    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as e:  # pyarrow raises several types for truncated or foreign files
        raise RunDataError(f"{path.parent.name}/{path.name}: not a readable Parquet file ({type(e).__name__})") from None
    missing = {"step", "name", "value"} - set(frame.columns)
    if missing:
        raise RunDataError(f"{path.parent.name}/{path.name}: missing columns {sorted(missing)}")
    try:
        step = pd.to_numeric(frame["step"], errors="raise").astype("int64")
        value = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    except (ValueError, TypeError, OverflowError) as e:
        raise RunDataError(f"{path.parent.name}/{path.name}: bad step/value column ({e})") from None
    value = value.where(value.abs() != math.inf)
    return pd.DataFrame({"step": step, "name": frame["name"].astype(str), "value": value})


def load_metrics(run_dir: Path, cache: PartCache | None = None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """All readable metric rows of a run (sorted by step, name) and the errors for unreadable
    parts. A part that vanishes between listing and reading is skipped silently."""
    frames, errors = [], []
    try:
        parts = metric_parts(run_dir)
    except RunDataError as e:
        return empty_metrics(), (str(e),)
    for path in parts:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        key = (stat.st_size, stat.st_mtime_ns)
        frame = cache.get(path, key) if cache is not None else None
        if frame is None:
            try:
                frame = read_part(path)
            except RunDataError as e:
                errors.append(str(e))
                continue
            if cache is not None:
                cache.put(path, key, frame)
        frames.append(frame)
    if not frames:
        return empty_metrics(), tuple(errors)
    metrics = pd.concat(frames, ignore_index=True).drop_duplicates(subset=["step", "name"], keep="last")
    return metrics.sort_values(["step", "name"], kind="stable").reset_index(drop=True), tuple(errors)


# ---------------------------------------------------------------------------------------------
# Stages and checkpoints
# ---------------------------------------------------------------------------------------------

def load_stages(run_dir: Path) -> pd.DataFrame:
    """Detected stages from `<run_dir>/report/stages.csv` (columns start_step, end_step, type;
    other columns ignored); empty if the file does not exist. Raises RunDataError if malformed."""
    path = Path(run_dir) / STAGES_FILE
    if not path.exists():
        return empty_stages()
    try:
        frame = pd.read_csv(path)
    except Exception as e:  # empty, truncated or binary file
        raise RunDataError(f"{STAGES_FILE.as_posix()} is unreadable ({type(e).__name__})") from None
    missing = {"start_step", "end_step", "type"} - set(frame.columns)
    if missing:
        raise RunDataError(f"{STAGES_FILE.as_posix()}: missing columns {sorted(missing)}")
    try:
        start = pd.to_numeric(frame["start_step"]).astype("int64")
        end = pd.to_numeric(frame["end_step"]).astype("int64")
    except (ValueError, TypeError) as e:
        raise RunDataError(f"{STAGES_FILE.as_posix()}: non-integer steps ({e})") from None
    kind = frame["type"].astype(str).str.strip()
    kind = kind.where(kind.isin(STAGE_TYPES), "other")
    return pd.DataFrame({"start_step": start, "end_step": end, "type": kind}).sort_values("start_step").reset_index(drop=True)


def load_checkpoint_steps(run_dir: Path) -> tuple[int, ...]:
    """Steps listed in `checkpoints/index.json` (without importing torch); () if none yet.
    Raises RunDataError if the manifest exists but is malformed."""
    path = Path(run_dir) / CHECKPOINT_INDEX_FILE
    if not path.exists():
        return ()
    try:
        entries = json.loads(path.read_text())
        return tuple(sorted(int(entry["step"]) for entry in entries))
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as e:
        raise RunDataError(f"{CHECKPOINT_INDEX_FILE.as_posix()} is malformed ({type(e).__name__})") from None


# ---------------------------------------------------------------------------------------------
# A whole run
# ---------------------------------------------------------------------------------------------

def load_run(runs_dir: Path, run_dir: Path, now: float, stale_after: float,
             cache: PartCache | None = None) -> RunData:
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
    return RunData(run_id(runs_dir, run_dir), run_dir, status, metrics, stages, steps, tuple(errors))


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
    except RunDataError:
        parts = []
    return (
        str(run_dir),
        len(parts),
        parts[-1].name if parts else None,
        tuple(_stat_key(p) for p in parts[-3:]),
        _stat_key(run_dir / STATUS_FILE),
        _stat_key(run_dir / ANALYSIS_STATUS_FILE),
        _stat_key(run_dir / STAGES_FILE),
        _stat_key(run_dir / CHECKPOINT_INDEX_FILE),
    )
