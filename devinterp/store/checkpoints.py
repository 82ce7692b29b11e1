"""Dense checkpoints of a run, written atomically and loaded lazily.

    <run_dir>/checkpoints/
      index.json                  manifest: one entry per complete checkpoint
      step_0000100/
        config.json, model.safetensors   (transformers save_pretrained layout)
        trainer_state.pt          optimizer, LR scheduler and RNG states, for exact resume
                                  (only devinterp-train writes it: a monitored run has none)
        meta.json                 step, train loss, wall time, bytes

A model that is not a `transformers.PreTrainedModel` (a plain torch module, from `devinterp.Monitor`)
is saved as its state dict in model.safetensors and a config.json naming its class
(TORCH_MODULE_KEY); it cannot be rebuilt from the checkpoint, so `load` raises CheckpointError for it.

A checkpoint is written into a `.tmp-` directory, fsynced, then renamed into place, so a
checkpoint directory either is complete or does not exist; the manifest is rewritten atomically
after the rename. Loading trusts the directories (the manifest is a convenience for readers).
A write that fails (e.g. a full disk) leaves no checkpoint directory and raises an OSError naming
the checkpoint.

A file damaged after the fact (truncated, overwritten) makes `load` / `load_trainer_state` raise
`CheckpointError` naming that file; `list_checkpoints` skips a checkpoint whose meta.json is
unreadable, with a warning. Nothing here deletes or repairs a damaged checkpoint: when training
resumed from an earlier one writes that step anew, the old directory is renamed to
`.replaced-step_<step>-<time>` (hidden from every reader) and kept.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_model as save_model_file
from transformers import AutoModelForCausalLM, PreTrainedModel

import devinterp.models  # noqa: F401  (registers the attention-only model with AutoModel)
from devinterp.store.atomic import TMP_PREFIX, atomic_write_json, fsync_dir, fsync_tree
from devinterp.store.run_dir import CHECKPOINT_INDEX_FILE, CHECKPOINTS_DIRNAME
from devinterp.store.unreadable import UnreadableFileError, error_line, warn_unreadable

TRAINER_STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"
REPLACED_PREFIX = ".replaced-"  # a checkpoint directory written anew is kept under this name
MODEL_CONFIG_FILE = "config.json"  # written by save_pretrained
WEIGHTS_FILE = "model.safetensors"  # written by save_pretrained
TORCH_MODULE_KEY = "devinterp_torch_module"  # config.json of a plain torch module: its class, for the reader

transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bar per checkpoint


class CheckpointError(UnreadableFileError):
    """A file of a saved checkpoint cannot be read; `path` names it, `step` is the checkpoint."""

    def __init__(self, path: Path, reason: str, step: int):
        super().__init__(path, reason)
        self.step = step


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


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (e.g. the disk is full); no part of it is visible."""

    def __init__(self, path: Path, reason: str, errno: int | None = None):
        super().__init__(errno, reason, str(path))

    def __str__(self) -> str:
        return f"{self.filename}: could not write checkpoint ({self.strerror})"


def _write_error(error: Exception, final: Path) -> CheckpointWriteError:
    """The error of a failed write, naming the checkpoint and the free space left there.
    safetensors and torch.save report a full disk as their own error types, not as OSError."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else error_line(error)
    try:
        reason += f"; {shutil.disk_usage(final.parent).free // 1024} KiB free there"
    except OSError:
        pass
    return CheckpointWriteError(final, reason, getattr(error, "errno", None))


def save_model(model: torch.nn.Module, directory: Path) -> None:
    """`model` into `directory`: save_pretrained (safetensors) for a transformers model, else the state
    dict in model.safetensors and a config.json naming the module's class (see the module docstring)."""
    if isinstance(model, PreTrainedModel):
        model.save_pretrained(directory, safe_serialization=True)
        return
    directory.mkdir(parents=True, exist_ok=True)
    save_model_file(model, str(directory / WEIGHTS_FILE))  # handles shared (tied) tensors
    cls = type(model)
    (directory / MODEL_CONFIG_FILE).write_text(json.dumps({TORCH_MODULE_KEY: f"{cls.__module__}.{cls.__qualname__}"}))


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    trainer_state: dict | None,
    train_loss: float | None,
    wall_time: float,
) -> CheckpointInfo:
    """Write checkpoint `step` atomically and add it to the manifest. `trainer_state` (what an exact
    resume needs) is left out when None: a monitored run is resumed by its own training code."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dirname(step)
    tmp = root / f"{TMP_PREFIX}{step_dirname(step)}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model(model, tmp)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER_STATE_FILE)
        size = sum(f.stat().st_size for f in tmp.iterdir())
        info = CheckpointInfo(step, f"{CHECKPOINTS_DIRNAME}/{final.name}", train_loss, wall_time, size)
        (tmp / META_FILE).write_text(json.dumps(asdict(info), indent=2))
        fsync_tree(tmp)
        if final.exists():  # a resume from an earlier checkpoint: this one did not load (damaged)
            os.rename(final, root / f"{REPLACED_PREFIX}{final.name}-{time.time_ns()}")  # kept, not deleted
        os.rename(tmp, final)
        fsync_dir(root)
    except Exception as e:
        raise _write_error(e, final) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_index(run_dir)
    return info


def list_checkpoints(run_dir: Path) -> list[CheckpointInfo]:
    """Complete checkpoints of a run, sorted by step (read from the directories themselves).
    One whose meta.json cannot be read is skipped with an UnreadableFileWarning."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    infos = []
    for meta in root.glob(f"step_*/{META_FILE}"):
        try:
            infos.append(CheckpointInfo(**json.loads(meta.read_text())))
        except FileNotFoundError:
            continue
        except Exception as e:  # OSError, UnicodeDecodeError, JSONDecodeError, TypeError
            warn_unreadable(UnreadableFileError(meta, error_line(e)), "skipped this checkpoint")
    return sorted(infos, key=lambda info: info.step)


def write_index(run_dir: Path) -> None:
    atomic_write_json(checkpoints_dir(run_dir) / CHECKPOINT_INDEX_FILE, [asdict(i) for i in list_checkpoints(run_dir)])


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


def _check_readable(path: Path, step: int, read) -> None:
    try:
        read(path)
    except Exception as e:
        raise CheckpointError(path, error_line(e), step) from None


def _read_safetensors_header(path: Path) -> None:
    with safe_open(path, framework="pt") as f:  # checks the header and that the data is all there
        f.keys()


def load(run_dir: Path, step: int, device: str | torch.device = "cpu") -> PreTrainedModel:
    """The model saved at `step`, in eval mode, on `device`. Raises CheckpointError naming the
    file if its config.json or model.safetensors is damaged (FileNotFoundError if there is no
    complete checkpoint at `step`)."""
    directory = checkpoint_path(run_dir, step)
    config = _read_config(directory / MODEL_CONFIG_FILE, step)
    _check_readable(directory / WEIGHTS_FILE, step, _read_safetensors_header)
    try:
        # eager attention, as built (see devinterp.models): the saved config does not keep the choice, and
        # the fused kernel has no double backward (Hessian) nor vmap batching rule (SGLD chains)
        model = model_class(config).from_pretrained(directory, attn_implementation="eager")
    except Exception as e:
        raise CheckpointError(directory, error_line(e), step) from None
    return model.to(device).eval()


def _read_config(path: Path, step: int) -> dict:
    try:
        config = json.loads(path.read_text())
    except Exception as e:
        raise CheckpointError(path, error_line(e), step) from None
    if not isinstance(config, dict):
        raise CheckpointError(path, "not a JSON object", step)
    if TORCH_MODULE_KEY in config:
        raise CheckpointError(path, f"the weights of a plain torch module ({config[TORCH_MODULE_KEY]}): only a "
                                    "transformers model can be rebuilt from its checkpoint", step)
    return config


def model_class(config: dict) -> type[PreTrainedModel]:
    """The class that loads a saved transformers model: its config's first architecture when transformers
    itself defines it (`GPT2LMHeadModel`, `LlamaForCausalLM`, `BertForSequenceClassification`, ...), else
    `AutoModelForCausalLM` by `model_type` (which also knows the attention-only model). Never remote code."""
    for name in config.get("architectures") or []:
        cls = getattr(transformers, str(name), None) if str(name).isidentifier() else None
        if isinstance(cls, type) and issubclass(cls, PreTrainedModel):
            return cls
    return AutoModelForCausalLM


def load_trainer_state(run_dir: Path, step: int) -> dict:
    """Optimizer, scheduler and RNG states saved at `step`; CheckpointError if damaged."""
    path = checkpoint_path(run_dir, step) / TRAINER_STATE_FILE
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:
        raise CheckpointError(path, error_line(e), step) from None


def latest_step(run_dir: Path) -> int | None:
    infos = list_checkpoints(run_dir)
    return infos[-1].step if infos else None


@dataclass
class Resumable:
    """A checkpoint that loads completely: model and trainer state."""

    step: int
    model: PreTrainedModel
    trainer_state: dict


def load_latest(run_dir: Path, device: str | torch.device = "cpu") -> tuple[Resumable | None, list[CheckpointError]]:
    """The newest checkpoint whose weights, config and trainer state all load (None if none
    does), and the newer ones that failed to load (left untouched)."""
    skipped = []
    for info in reversed(list_checkpoints(run_dir)):
        try:
            model = load(run_dir, info.step, device)
            state = load_trainer_state(run_dir, info.step)
        except CheckpointError as e:
            skipped.append(e)
            continue
        return Resumable(info.step, model, state), skipped
    return None, skipped


def initial_state(run_dir: Path) -> dict[str, torch.Tensor] | None:
    """The weights at step 0 (for distance-from-init), or None if step 0 was not saved or cannot
    be read (then with an UnreadableFileWarning naming the file)."""
    if not (checkpoints_dir(run_dir) / step_dirname(0) / META_FILE).is_file():
        return None
    try:
        return load(run_dir, 0).state_dict()
    except CheckpointError as e:
        warn_unreadable(e, "distances from the initial weights are not measured")
        return None
