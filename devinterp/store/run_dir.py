"""Run directory layout and status.

    <run_dir>/
      config.yaml          resolved training config (overrides.yaml: its command-line overrides)
      status.json          the trainer's status: {"state": "training" | "finished" | "failed", "step", "updated"}
      analysis_status.json an analysis's or follower's status: "analysing" | "finished" | "stopped" | "failed"
      train.log            log file of the run (follow.log: of a follower started by the trainer)
      eval_tokens.safetensors   the fixed held-out evaluation set (same for every checkpoint)
      metrics.parquet/     long-format metrics dataset (see devinterp.store.metrics)
      checkpoints/         dense checkpoints (see devinterp.store.checkpoints)
      report/stages.csv    the stages of the report (see devinterp.views.report), when written there

Status files hold {"state", "step", "updated"} with `updated` in Unix seconds, and may hold more
keys (a follower's outcome, seconds per callback, lag).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from devinterp.store.atomic import atomic_write_json
from devinterp.store.unreadable import UnreadableFileError, error_line

RUN_CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
STATUS_FILE = "status.json"
ANALYSIS_STATUS_FILE = "analysis_status.json"
LOG_FILE = "train.log"
FOLLOW_LOG_FILE = "follow.log"  # the log of a follower the trainer started (analyze=follow)
EVAL_TOKENS_FILE = "eval_tokens.safetensors"
CHECKPOINTS_DIRNAME = "checkpoints"
CHECKPOINT_INDEX_FILE = "index.json"  # in checkpoints/: the manifest of complete checkpoints
REPORT_DIRNAME = "report"
STAGES_FILE = "stages.csv"  # in the report directory


@dataclass(frozen=True)
class Status:
    """One status file: state, last step and last update (Unix seconds; None where absent or not a
    number), and any further keys it holds (`extra`)."""

    state: str
    step: int | None
    updated: float | None
    extra: dict = field(default_factory=dict, compare=False)


def unique_run_dir(path: Path) -> Path:
    """`path` if it does not exist yet, else `path_1`, `path_2`, ... (never reuses a directory)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}_{n}")
    return candidate


def read_run_config(run_dir: Path) -> dict:
    """The run's resolved config (config.yaml) as plain containers. Raises FileNotFoundError if there
    is none, and UnreadableFileError naming it if it is not a YAML mapping (damaged, truncated)."""
    path = Path(run_dir) / RUN_CONFIG_FILE
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # yaml's scanner/parser errors, a bad interpolation, UnicodeDecodeError, OSError
        raise UnreadableFileError(path, error_line(e)) from None
    if not isinstance(config, dict):
        raise UnreadableFileError(path, f"not a mapping of config keys (a {type(config).__name__})")
    return config


def write_status(run_dir: Path, state: str, step: int | None, name: str = STATUS_FILE, **extra) -> None:
    """Atomically replace the status file `name` (the trainer's by default) of `run_dir`."""
    atomic_write_json(Path(run_dir) / name, {"state": state, "step": step, "updated": time.time(), **extra})


def read_status(run_dir: Path, name: str = STATUS_FILE) -> Status:
    """The status file `name` of `run_dir`. Raises FileNotFoundError if there is none, and
    UnreadableFileError naming it if it is not a JSON object with a "state" string."""
    path = Path(run_dir) / name
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UnreadableFileError(path, error_line(e)) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("state"), str):
        raise UnreadableFileError(path, "no 'state' string")
    step, updated = raw.pop("step", None), raw.pop("updated", None)
    step = int(step) if isinstance(step, (int, float)) and math.isfinite(step) else None
    updated = float(updated) if isinstance(updated, (int, float)) and math.isfinite(updated) else None
    return Status(raw.pop("state"), step, updated, raw)
