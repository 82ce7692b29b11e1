"""Dense checkpoints of a run, written atomically and loaded lazily.

    <run_dir>/checkpoints/
      index.json                  manifest: one entry per complete checkpoint
      step_0000100/
        config.json, model.safetensors   (transformers save_pretrained layout)
        trainer_state.pt          optimizer, LR scheduler and RNG states, for exact resume
        meta.json                 step, train loss, wall time, bytes

A checkpoint is written into a `.tmp-` directory, fsynced, then renamed into place, so a
checkpoint directory either is complete or does not exist; the manifest is rewritten atomically
after the rename. Loading trusts the directories (the manifest is a convenience for readers).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

import devinterp.models  # noqa: F401  (registers the attention-only model with AutoModel)
from devinterp.store.atomic import TMP_PREFIX, atomic_write_json, fsync_dir, fsync_tree
from devinterp.store.run_dir import CHECKPOINTS_DIRNAME

INDEX_FILE = "index.json"
TRAINER_STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: str  # relative to the run directory
    train_loss: float | None
    wall_time: float  # seconds since the run started (summed over resumed segments)
    bytes: int


def step_dirname(step: int) -> str:
    return f"step_{step:07d}"


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIRNAME


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: PreTrainedModel,
    trainer_state: dict,
    train_loss: float | None,
    wall_time: float,
) -> CheckpointInfo:
    """Write checkpoint `step` atomically and add it to the manifest."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dirname(step)
    tmp = root / f"{TMP_PREFIX}{step_dirname(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
        size = sum(f.stat().st_size for f in tmp.iterdir())
        info = CheckpointInfo(step, f"{CHECKPOINTS_DIRNAME}/{final.name}", train_loss, wall_time, size)
        (tmp / META_FILE).write_text(json.dumps(asdict(info), indent=2))
        fsync_tree(tmp)
        if final.exists():  # a previous attempt at this step completed: replace it whole
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_index(run_dir)
    return info


def list_checkpoints(run_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints of a run, sorted by step (read from the directories themselves)."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    infos = []
    for meta in root.glob(f"step_*/{META_FILE}"):
        infos.append(CheckpointInfo(**json.loads(meta.read_text())))
    return sorted(infos, key=lambda info: info.step)


def write_index(run_dir: Path) -> None:
    atomic_write_json(checkpoints_dir(run_dir) / INDEX_FILE, [asdict(i) for i in list_checkpoints(run_dir)])


def remove_incomplete(run_dir: Path) -> list[Path]:
    """Delete leftovers of interrupted checkpoint writes; returns what was removed."""
    root = checkpoints_dir(run_dir)
    stale = [p for p in root.glob(f"{TMP_PREFIX}*")] if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return stale


def checkpoint_path(run_dir: Path, step: int) -> Path:
    path = checkpoints_dir(run_dir) / step_dirname(step)
    if not (path / META_FILE).is_file():
        available = [i.step for i in list_checkpoints(run_dir)]
        raise FileNotFoundError(f"{run_dir}: no complete checkpoint at step {step} (available: {available})")
    return path


def load(run_dir: Path, step: int, device: str | torch.device = "cpu") -> PreTrainedModel:
    """The model saved at `step`, in eval mode, on `device`."""
    # eager attention, as built (see devinterp.models): the saved config does not keep the choice, and
    # the fused kernel has no double backward (Hessian) nor vmap batching rule (SGLD chains)
    model = AutoModelForCausalLM.from_pretrained(checkpoint_path(run_dir, step), attn_implementation="eager")
    return model.to(device).eval()


def load_trainer_state(run_dir: Path, step: int) -> dict:
    return torch.load(checkpoint_path(run_dir, step) / TRAINER_STATE_FILE, weights_only=False)


def latest_step(run_dir: Path) -> int | None:
    infos = list_checkpoints(run_dir)
    return infos[-1].step if infos else None


def initial_state(run_dir: Path) -> dict[str, torch.Tensor] | None:
    """The weights at step 0 (for distance-from-init), or None if step 0 was not saved."""
    if not (checkpoints_dir(run_dir) / step_dirname(0) / META_FILE).is_file():
        return None
    return load(run_dir, 0).state_dict()
