"""Run directory layout and status.

    <run_dir>/
      config.yaml          resolved training config
      status.json          {"state": "training" | "finished" | "failed", "step": int, "updated": unix time}
      train.log            log file of the run
      eval_tokens.safetensors   the fixed held-out evaluation set (same for every checkpoint)
      metrics.parquet/     long-format metrics dataset (see devinterp.store.metrics)
      checkpoints/         dense checkpoints (see devinterp.checkpoints)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from devinterp.store.atomic import atomic_write_json

CONFIG_FILE = "config.yaml"
STATUS_FILE = "status.json"
LOG_FILE = "train.log"
EVAL_TOKENS_FILE = "eval_tokens.safetensors"
CHECKPOINTS_DIRNAME = "checkpoints"


def unique_run_dir(path: Path) -> Path:
    """`path` if it does not exist yet, else `path_1`, `path_2`, ... (never reuses a directory)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}_{n}")
    return candidate


def write_status(run_dir: Path, state: str, step: int) -> None:
    atomic_write_json(Path(run_dir) / STATUS_FILE, {"state": state, "step": step, "updated": time.time()})


def read_status(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / STATUS_FILE).read_text())
