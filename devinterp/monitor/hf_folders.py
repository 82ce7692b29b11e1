"""Checkpoint folders written elsewhere (`transformers.Trainer(save_steps=...)`, `save_pretrained`), read
without trusting them.

A folder of checkpoints holds one subfolder per checkpoint, `checkpoint-<step>/` (also `step_<step>`,
`step-<step>`, `ckpt_<step>`, `<step>`): the step is read from the name. Each has a `config.json` and its
weights: `model.safetensors` (or shards listed in `model.safetensors.index.json`), else
`pytorch_model.bin` (or its shards).

Nothing in such a folder runs: the weights are read from safetensors, or with
`torch.load(weights_only=True)` for a `.bin` (plain tensors only: a pickle that would run code is
refused); the optimizer, scheduler, RNG and training-argument files (pickles) are never opened; the
config is read as JSON and built only from a `model_type` transformers itself defines (`auto_map` and
custom modelling code are ignored: no `trust_remote_code`). The model is built from its config (nothing
is downloaded) and gets the weights, in eager attention (the estimators need double backward and vmap).
`trainer_state.json` (JSON) gives the training losses the Trainer logged, when present.

Every problem raises `CheckpointFolderError` (a ConfigError): one line naming the file and what is wrong.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from devinterp.core.errors import ConfigError

CONFIG_FILE = "config.json"
SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
BIN, BIN_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"
TRAINER_STATE = "trainer_state.json"
STEP_NAME = re.compile(r"(?:checkpoint|ckpt|step|global_step|iter|iteration)?[-_]?(\d+)", re.IGNORECASE)


class CheckpointFolderError(ConfigError):
    """A checkpoint folder (or the folder of them) cannot be used; the message names the file."""


@dataclass(frozen=True)
class CheckpointFolder:
    step: int
    path: Path


def find_checkpoints(directory: Path, exclude: tuple[Path, ...] = ()) -> list[CheckpointFolder]:
    """The checkpoint subfolders of `directory` (those with a config.json, but `exclude`), by step."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise CheckpointFolderError(f"{directory}: no such directory")
    if (directory / CONFIG_FILE).is_file():
        raise CheckpointFolderError(f"{directory}: one checkpoint (it has {CONFIG_FILE}), not a folder of checkpoints; "
                                    "give the folder that holds checkpoint-<step>/ folders")
    skip = {Path(p).resolve() for p in exclude}
    folders = sorted(p for p in directory.iterdir()
                     if p.is_dir() and (p / CONFIG_FILE).is_file() and p.resolve() not in skip)
    if not folders:
        raise CheckpointFolderError(f"{directory}: no checkpoints found (subfolders with {CONFIG_FILE}, "
                                    "e.g. checkpoint-500/)")
    found: dict[int, Path] = {}
    for folder in folders:
        match = STEP_NAME.fullmatch(folder.name)
        if match is None:
            raise CheckpointFolderError(f"{folder}: cannot read a training step from the folder name (expected "
                                        "checkpoint-<step>, step_<step> or <step>)")
        step = int(match.group(1))
        if step in found:
            raise CheckpointFolderError(f"{folder}: step {step} again (also {found[step].name})")
        found[step] = folder
    return [CheckpointFolder(step, found[step]) for step in sorted(found)]


def read_config(folder: Path) -> PretrainedConfig:
    """The model's config, from JSON and transformers' own config classes only."""
    path = Path(folder) / CONFIG_FILE
    try:
        values = json.loads(path.read_text())
    except Exception as e:
        raise CheckpointFolderError(f"{path}: not readable JSON ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(values, dict):
        raise CheckpointFolderError(f"{path}: not a JSON object")
    model_type = values.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise CheckpointFolderError(f"{path}: model_type {model_type!r} is not a model transformers defines "
                                    "(custom modelling code is never run)")
    values.pop("auto_map", None)
    try:
        return CONFIG_MAPPING[model_type].from_dict(values)
    except Exception as e:
        raise CheckpointFolderError(f"{path}: transformers cannot build this config ({type(e).__name__}: "
                                    f"{_first_line(e)})") from None


def model_class(config: PretrainedConfig, path: Path) -> type[PreTrainedModel]:
    """The config's first architecture when transformers defines it for this config type, else the causal
    language model of its `model_type`."""
    for name in config.architectures or []:
        cls = getattr(transformers, name, None) if str(name).isidentifier() else None
        if isinstance(cls, type) and issubclass(cls, PreTrainedModel) and isinstance(config, cls.config_class):
            return cls
    if type(config) in AutoModelForCausalLM._model_mapping:
        return AutoModelForCausalLM._model_mapping[type(config)]
    raise CheckpointFolderError(f"{path}: transformers has no model for architectures {config.architectures} "
                                f"of model_type {config.model_type!r}")


def weight_files(folder: Path) -> tuple[list[Path], bool]:
    """The folder's weight files, and whether they are safetensors (preferred) rather than .bin."""
    folder = Path(folder)
    for single, index, safe in ((SAFETENSORS, SAFETENSORS_INDEX, True), (BIN, BIN_INDEX, False)):
        if (folder / single).is_file():
            return [folder / single], safe
        if (folder / index).is_file():
            return _shards(folder / index), safe
    raise CheckpointFolderError(f"{folder}: no weights ({SAFETENSORS} or {BIN}, or their shards)")


def _shards(index: Path) -> list[Path]:
    try:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except Exception as e:
        raise CheckpointFolderError(f"{index}: not a shard index ({type(e).__name__}: {_first_line(e)})") from None
    if any(Path(name).name != name for name in names):
        raise CheckpointFolderError(f"{index}: a shard outside its folder ({names})")
    missing = [name for name in names if not (index.parent / name).is_file()]
    if missing:
        raise CheckpointFolderError(f"{index.parent / missing[0]}: missing shard")
    return [index.parent / name for name in names]


def check_buildable(config: PretrainedConfig, path: Path) -> None:
    """Build the model of `config` without memory (on the meta device): a config transformers accepts but
    cannot build a model from (heads that do not divide the width, ...) fails here, naming `path`.
    Configs already built are not built again (a run's checkpoints usually share one)."""
    key = config.to_json_string()
    if key in _BUILDABLE:
        return
    try:
        with torch.device("meta"):
            model_class(config, path)._from_config(config, attn_implementation="eager")
    except CheckpointFolderError:
        raise
    except Exception as e:
        raise CheckpointFolderError(f"{path}: transformers cannot build the model ({type(e).__name__}: "
                                    f"{_first_line(e)})") from None
    _BUILDABLE.add(key)


_BUILDABLE: set[str] = set()


def check_folder(folder: Path) -> PretrainedConfig:
    """What can be checked without reading the weights: config, model class, building the model (on the
    meta device), weight files (a safetensors header must be complete). Returns the config."""
    config = read_config(folder)
    check_buildable(config, Path(folder) / CONFIG_FILE)
    files, safe = weight_files(folder)
    for file in files if safe else []:
        try:
            with safe_open(file, framework="pt") as f:
                f.keys()
        except Exception as e:
            raise CheckpointFolderError(f"{file}: not a readable safetensors file ({_first_line(e)})") from None
    return config


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's weights: safetensors, or `.bin` through `torch.load(weights_only=True)`."""
    files, safe = weight_files(folder)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            loaded = load_file(file) if safe else torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:
            how = "safetensors" if safe else "torch.load(weights_only=True), which loads plain tensors only"
            raise CheckpointFolderError(f"{file}: not readable with {how} ({type(e).__name__}: "
                                        f"{_first_line(e)})") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise CheckpointFolderError(f"{file}: not a mapping of parameter names to tensors")
        state.update(loaded)
    return state


def load_checkpoint(folder: Path) -> PreTrainedModel:
    """The model of one checkpoint folder (module docstring), in eval mode on the CPU."""
    folder = Path(folder)
    config = check_folder(folder)
    try:
        model = model_class(config, folder / CONFIG_FILE)._from_config(config, attn_implementation="eager")
    except Exception as e:
        raise CheckpointFolderError(f"{folder / CONFIG_FILE}: transformers cannot build the model "
                                    f"({type(e).__name__}: {_first_line(e)})") from None
    state = read_weights(folder)
    missing, _unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    loaded = {tensor.data_ptr() for name, tensor in model.state_dict().items() if name in state}
    untied = [name for name in missing if model.state_dict()[name].data_ptr() not in loaded]
    if untied:
        raise CheckpointFolderError(f"{folder}: the weights lack {len(untied)} of the model's tensors "
                                    f"({', '.join(untied[:3])}{' ...' if len(untied) > 3 else ''})")
    return model.eval()


def logged_losses(folder: Path) -> dict[int, float]:
    """The training losses the Trainer logged ({step: loss}, from trainer_state.json), or {}."""
    try:
        history = json.loads((Path(folder) / TRAINER_STATE).read_text())["log_history"]
        return {int(entry["step"]): float(entry["loss"]) for entry in history if "loss" in entry and "step" in entry}
    except Exception:  # noqa: BLE001 - no or a foreign trainer_state.json: no logged losses
        return {}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else ""
