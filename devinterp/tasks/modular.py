"""Modular addition a + b (mod p): the classic grokking task (Power et al. 2022; Nanda et al. 2023).

Every sequence is `[a, b, =, c]` with a, b in [0, p), `=` the token p and c = (a + b) mod p, so the
vocabulary has p + 1 tokens and seq_len is 4. Only the answer c is scored (`labels` puts -100 at
a, b and =): the loss is the cross-entropy of predicting c from `a b =`, in nats.

The p² pairs are split once, by the task seed, into a fixed training set (`train_fraction` of the
pairs) and a held-out test set (the rest). A network first memorises the training pairs (training
loss falls, test loss stays high), then, under weight decay, generalises (test loss falls while the
training loss stays flat): grokking.

- `train_batch(step, batch_size)`: the whole training set, in a fixed order, when
  `batch_size >= num_train` (full batch, the same every step); otherwise `batch_size` training pairs
  drawn without replacement, a pure function of (seed, step). It therefore returns
  min(batch_size, num_train) rows, so `train_batch(0, n)` with n >= num_train, the run's fixed
  training sample, is exactly the training set.
- `eval_tokens()`: the first `eval_size` held-out pairs (all of them when eval_size is larger).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from devinterp.core.errors import require
from devinterp.tasks.base import IGNORE_INDEX, STRUCTURE_STREAM, TRAIN_STREAM, TaskConfig, derived_generator

ANSWER_POSITION = 3  # index of c in [a, b, =, c]


@dataclass
class ModularTaskConfig(TaskConfig):
    """Schema of configs/task/modular.yaml: a + b (mod modulus) as `[a, b, =, c]`, only c scored."""

    _target_: str = "devinterp.tasks.modular.ModularAdditionTask"
    name: str = "modular"
    modulus: int = 53
    train_fraction: float = 0.3  # of the modulus² pairs; the rest is the held-out test set
    seq_len: int = 4  # fixed by the format [a, b, =, c]
    eval_size: int = 1_000_000  # at most this many held-out pairs (default: all of them)

    def validate(self) -> None:
        super().validate()
        require(self.seq_len == 4, "seq_len", self.seq_len, "must be 4 for task=modular ([a, b, =, c])")
        require(self.modulus >= 2, "modulus", self.modulus, "must be at least 2")
        require(0 < self.train_fraction < 1, "train_fraction", self.train_fraction, "must be in (0, 1)")
        num_train = round(self.train_fraction * self.modulus**2)
        require(0 < num_train < self.modulus**2, "train_fraction", self.train_fraction,
                f"leaves no training or no held-out pair of the {self.modulus ** 2}")

    def needed_vocab_size(self) -> int:
        return self.modulus + 1  # residues 0..p-1 and the `=` token p


@dataclass(frozen=True)
class ModularAdditionTask:
    modulus: int
    seed: int
    train_fraction: float = 0.3
    eval_size: int = 1_000_000
    name: str = "modular"
    seq_len: int = 4
    train_pairs: torch.Tensor = field(init=False, repr=False, compare=False)
    test_pairs: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        p = self.modulus
        if p < 2:
            raise ValueError(f"modulus={p} must be at least 2")
        if not 0 < self.train_fraction < 1:
            raise ValueError(f"train_fraction={self.train_fraction} must be in (0, 1)")
        num_train = round(self.train_fraction * p * p)
        if not 0 < num_train < p * p:
            raise ValueError(f"train_fraction={self.train_fraction} leaves no training or no test pair for p={p}")
        order = torch.randperm(p * p, generator=derived_generator(self.seed, STRUCTURE_STREAM, p))
        pairs = torch.stack([order // p, order % p], dim=1)  # (p², 2): (a, b)
        object.__setattr__(self, "train_pairs", pairs[:num_train])
        object.__setattr__(self, "test_pairs", pairs[num_train:])

    @property
    def vocab_size(self) -> int:
        return self.modulus + 1  # residues 0..p-1 and the `=` token p

    @property
    def num_train(self) -> int:
        return len(self.train_pairs)

    def sequences(self, pairs: torch.Tensor) -> torch.Tensor:
        """(n, 4) tokens [a, b, =, (a + b) mod p] for (n, 2) pairs (a, b)."""
        a, b = pairs[:, 0], pairs[:, 1]
        equals = torch.full_like(a, self.modulus)
        return torch.stack([a, b, equals, (a + b) % self.modulus], dim=1)

    def train_batch(self, step: int, batch_size: int) -> torch.Tensor:
        if batch_size >= self.num_train:
            return self.sequences(self.train_pairs)
        chosen = torch.randperm(self.num_train, generator=derived_generator(self.seed, TRAIN_STREAM, step))
        return self.sequences(self.train_pairs[chosen[:batch_size]])

    def eval_tokens(self) -> torch.Tensor:
        return self.sequences(self.test_pairs[: self.eval_size])

    def labels(self, tokens: torch.Tensor) -> torch.Tensor:
        """Only the answer is scored: -100 at a, b and `=`."""
        labels = torch.full_like(tokens, IGNORE_INDEX)
        labels[:, ANSWER_POSITION] = tokens[:, ANSWER_POSITION]
        return labels

    def eval_metrics(self, token_losses: torch.Tensor) -> dict[str, float]:
        return {}
