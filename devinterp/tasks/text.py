"""Byte-level language modelling on a local text file (vocab 256).

The file's bytes are split into a training part and a held-out tail (`eval_fraction`). Training
batches are random windows of the training part; the evaluation set is `eval_size` fixed windows
of the tail.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import MISSING

from devinterp.core.errors import require
from devinterp.tasks.base import (EVAL_STREAM, TRAIN_STREAM, NextTokenTask, TaskConfig, derived_generator,
                                  windowed_icl_score)

BYTE_VOCAB = 256


def random_windows(part: torch.Tensor, seq_len: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` windows of `seq_len` consecutive tokens of the 1-D `part`, at random starts."""
    starts = torch.randint(0, len(part) - seq_len + 1, (count,), generator=generator)
    return torch.stack([part[s : s + seq_len] for s in starts.tolist()])


class StreamWindows(NextTokenTask):
    """Mixin for tasks over one 1-D token stream (`stream`): training batches are random windows of its first
    (1 − `eval_fraction`), seeded by (seed, step); the eval set is `eval_size` fixed windows of the rest."""

    @property
    def split(self) -> int:
        return int(len(self.stream) * (1 - self.eval_fraction))

    def train_batch(self, step: int, batch_size: int) -> torch.Tensor:
        return random_windows(self.stream[: self.split], self.seq_len, batch_size,
                              derived_generator(self.seed, TRAIN_STREAM, step))

    def eval_tokens(self) -> torch.Tensor:
        return random_windows(self.stream[self.split :], self.seq_len, self.eval_size,
                              derived_generator(self.seed, EVAL_STREAM))

    def eval_metrics(self, token_losses: torch.Tensor) -> dict[str, float]:
        """`eval/icl_score`: `windowed_icl_score` of the eval windows."""
        return {"eval/icl_score": windowed_icl_score(token_losses)}


@dataclass
class TextTaskConfig(TaskConfig):
    """Schema of configs/task/text.yaml."""

    _target_: str = "devinterp.tasks.text.TextTask"
    name: str = "text"
    path: str = MISSING
    seq_len: int = 128
    eval_size: int = 256
    eval_fraction: float = 0.1

    def validate(self) -> None:
        super().validate()
        path = Path(self.path)
        require(path.is_file(), "path", self.path, "no such file")
        size = path.stat().st_size
        require(size > 0, "path", self.path, "the file is empty")
        require(0 < self.eval_fraction < 1, "eval_fraction", self.eval_fraction, "must be in (0, 1)")
        held_out = size - int(size * (1 - self.eval_fraction))
        require(min(size - held_out, held_out) >= self.seq_len, "path", self.path,
                f"too short ({size} bytes) for task.seq_len={self.seq_len} windows in both the "
                f"training part and the held-out {self.eval_fraction:.0%}")

    def needed_vocab_size(self) -> int:
        return BYTE_VOCAB


@dataclass(frozen=True)
class TextTask(StreamWindows):
    path: str
    seq_len: int
    seed: int
    eval_size: int = 256
    eval_fraction: float = 0.1
    name: str = "text"
    vocab_size: int = BYTE_VOCAB
    data: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        data = torch.frombuffer(bytearray(Path(self.path).read_bytes()), dtype=torch.uint8).long()
        object.__setattr__(self, "data", data)

    @property
    def stream(self) -> torch.Tensor:
        return self.data
