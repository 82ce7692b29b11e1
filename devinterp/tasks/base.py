"""What every task provides, how a task is configured and built, and deterministic seeding.

Each task is one module of this package: its config dataclass (a `TaskConfig`, the schema of
`configs/task/<name>.yaml`, with its value checks and the vocabulary it needs) and the task class its
`_target_` names, built by `build_task` (`hydra.utils.instantiate`). A new task is a new module and
a new YAML file; `task_schemas` finds every module's config.

A task is a source of token sequences for next-token prediction:
- `train_batch(step, batch_size)`: the training batch for a step, a LongTensor (batch, seq_len),
  a pure function of (task seed, step) so a resumed run sees exactly the batches it would have;
- `eval_tokens()`: the fixed held-out evaluation set (eval_size, seq_len), the same for every
  checkpoint of a run so analyses compare like with like;
- `labels(tokens)`: which tokens the loss scores, as Hugging Face labels of the same shape: the
  tokens themselves where scored, IGNORE_INDEX (-100) elsewhere. Every loss of a run (training
  step, eval and training-sample losses, gradients, Hessian, LLC) is the mean next-token
  cross-entropy over the scored tokens only. `NextTokenTask` provides the default: every token;
- `eval_metrics(token_losses)`: task-specific summaries of the per-token eval losses.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import MISSING, OmegaConf

from devinterp.core.errors import require


class Task(Protocol):
    name: str
    vocab_size: int
    seq_len: int

    def train_batch(self, step: int, batch_size: int) -> torch.Tensor: ...

    def eval_tokens(self) -> torch.Tensor: ...

    def labels(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def eval_metrics(self, token_losses: torch.Tensor) -> dict[str, float]: ...


IGNORE_INDEX = -100  # label of a token the loss does not score (torch / Hugging Face convention)


class NextTokenTask:
    """Mixin: the default `labels`, scoring every next token of a sequence."""

    def labels(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens


# Streams of derived_generator: training batches, the eval set, and a task's fixed structure (the
# modular train/test split, the bigram language of the induction filler).
TRAIN_STREAM, EVAL_STREAM, STRUCTURE_STREAM = 0, 1, 2


def derived_generator(*key: int) -> torch.Generator:
    """A torch.Generator seeded from a tuple of non-negative ints (e.g. (seed, stream, step)).

    Uses numpy's SeedSequence so nearby keys give independent streams.
    """
    state = np.random.SeedSequence(list(key)).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def icl_score(token_losses: torch.Tensor, early: int, late: int) -> float:
    """In-context learning score (Olsson et al. 2022): mean loss at position `late` minus at `early`.

    `token_losses` is (examples, positions) where column t is the loss of predicting token t+1.
    Negative means later context helps.
    """
    return float(token_losses[:, late].mean() - token_losses[:, early].mean())


def windowed_icl_score(token_losses: torch.Tensor) -> float:
    """In-context learning score on real text (nats): the mean loss over the last eighth of the positions
    minus the mean over the second sixteenth (Olsson et al. 2022 compare the 500th token with the 50th).
    Windows of positions, not single ones: a single position of a few hundred windows of text scatters by
    ~0.15 nats, as much as the induction bump moves it. `token_losses` as in `icl_score`."""
    width = token_losses.shape[1]
    early, late = token_losses[:, width // 16 : width // 8], token_losses[:, width - width // 8 :]
    return float(late.mean() - early.mean())


@dataclass
class TaskConfig:
    """What every task's config holds. `_target_` names the task class; its other fields are the
    class's arguments (with `seed`, which the run gives). Subclasses set `name`, `_target_` and their
    own fields, and extend `validate` and `needed_vocab_size`."""

    _target_: str = MISSING
    name: str = MISSING
    seq_len: int = 64
    eval_size: int = 512  # sequences in the fixed held-out evaluation set

    def validate(self) -> None:
        """Check values; raise SettingError naming the first bad key (relative: `seq_len`) and value."""
        require(self.seq_len >= 4, "seq_len", self.seq_len, "must be at least 4")
        require(self.eval_size > 0, "eval_size", self.eval_size, "must be positive")

    def needed_vocab_size(self) -> int:
        """Tokens the task's sequences use: a model's vocabulary must cover them."""
        raise NotImplementedError

    def in_run(self, run_dir: Path) -> "TaskConfig":
        """This config as stored in the run directory `run_dir`, with the files it names there found:
        a task whose data lives in the run (`tokens`: `data.safetensors`) names it relative to the run."""
        return self


def build_task(cfg: TaskConfig, seed: int) -> Task:
    """The task `cfg` configures (its `_target_` called with its fields and `seed`)."""
    return instantiate(cfg, seed=seed)


def task_schemas() -> dict[str, type[TaskConfig]]:
    """Every task's config class by task name. Each module of `devinterp.tasks` but this one defines
    one; they are all imported here, so a new task's module needs no registration."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{module.name}")
    return {schema.name: schema for schema in TaskConfig.__subclasses__()}


def task_config(values: Mapping) -> TaskConfig:
    """A task's config from stored values (the `task` of a run's config.yaml), by its `name`. Keys it
    lacks take the schema's defaults: runs written before tasks had a `_target_` get their class's."""
    schema = task_schemas()[values["name"]]
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))
