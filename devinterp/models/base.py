"""How a model is configured and built.

Each model is one module of this package: its config dataclass (a `ModelConfig`, the schema of
`configs/model/<name>.yaml`, with its value checks) and the function its `_target_` names, which
`build_model` calls (`hydra.utils.instantiate`). A new model is a new module and a new YAML file;
`model_schemas` finds every module's config. Models are built from configs, never downloaded.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from hydra.utils import instantiate
from omegaconf import MISSING
from transformers import PreTrainedModel

from devinterp.core.errors import require


@dataclass
class ModelConfig:
    """What every model's config holds. `_target_` names a function that takes the other fields but
    `name` (the preset's label) as keyword arguments and returns a freshly initialised
    `transformers.PreTrainedModel`."""

    _target_: str = MISSING
    name: str = MISSING
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    # Default None: taken from the task. Set explicitly, they must cover what the task needs.
    vocab_size: Optional[int] = None
    n_ctx: Optional[int] = None

    def validate(self, task_name: str, task_vocab_size: int, task_seq_len: int) -> None:
        """Check values against themselves and the task's needs; raise SettingError naming the first
        bad key (relative: `vocab_size`) and value."""
        require(self.n_layers > 0, "n_layers", self.n_layers, "must be positive")
        require(self.n_heads > 0, "n_heads", self.n_heads, "must be positive")
        require(self.d_model > 0 and self.d_model % self.n_heads == 0, "d_model", self.d_model,
                f"must be a positive multiple of model.n_heads={self.n_heads}")
        if self.vocab_size is not None:
            require(self.vocab_size >= task_vocab_size, "vocab_size", self.vocab_size,
                    f"smaller than the vocabulary task={task_name} needs ({task_vocab_size})")
        if self.n_ctx is not None:
            require(self.n_ctx >= task_seq_len, "n_ctx", self.n_ctx, f"shorter than task.seq_len={task_seq_len}")


def build_model(cfg: ModelConfig, task_vocab_size: int, task_seq_len: int, seed: int) -> PreTrainedModel:
    """A freshly initialised model from `cfg`. Vocabulary size and context length are the config's when
    set, else the task's. Initialisation is seeded by `seed` without touching the caller's global RNG."""
    arguments = {key: value for key, value in asdict(cfg).items() if key != "name"}
    arguments["vocab_size"] = cfg.vocab_size if cfg.vocab_size is not None else task_vocab_size
    arguments["n_ctx"] = cfg.n_ctx if cfg.n_ctx is not None else task_seq_len
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return instantiate(arguments)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_schemas() -> dict[str, type[ModelConfig]]:
    """Every model's config class by model name. Each module of `devinterp.models` but this one defines
    one; they are all imported here, so a new model's module needs no registration."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{module.name}")
    return {schema.name: schema for schema in ModelConfig.__subclasses__()}
