"""Repeated random tokens: the classic task on which induction heads form.

Each sequence is a block of uniformly random tokens followed by copies of it, up to `seq_len`.
The block length (the repeat period) is drawn per sequence from [min_period, max_period], so the
copy cannot be found by position alone: predicting it needs an induction circuit (find the
previous occurrence of the current token, copy the token that followed it), which takes two
attention layers. The first block stays unpredictable (loss near log(vocab_size)); the loss on
the repeats drops sharply once the circuit forms (the induction bump).

With `bigram_concentration` set, the block is not uniform but a walk of a fixed random bigram
"language": a Markov chain whose transition rows are drawn once per task seed from
Dirichlet(bigram_concentration) (smaller: more predictable), the first token uniform. The block
then has n-gram structure a model can learn before (and besides) induction, as in natural text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from devinterp.core.errors import require
from devinterp.tasks.base import (EVAL_STREAM, STRUCTURE_STREAM, TRAIN_STREAM, NextTokenTask, TaskConfig,
                                  derived_generator, icl_score)


@dataclass
class InductionTaskConfig(TaskConfig):
    """Schema of configs/task/induction.yaml."""

    _target_: str = "devinterp.tasks.induction.InductionTask"
    name: str = "induction"
    vocab_size: int = 64
    # Repeat period (length of the random block) drawn per sequence from [min_period, max_period];
    # defaults seq_len // 4 and seq_len // 2.
    min_period: Optional[int] = None
    max_period: Optional[int] = None
    # None: the block is uniform random tokens; a number: a walk of a fixed random bigram language,
    # transition rows ~ Dirichlet(bigram_concentration)
    bigram_concentration: Optional[float] = None

    def validate(self) -> None:
        super().validate()
        require(self.vocab_size >= 2, "vocab_size", self.vocab_size, "must be at least 2")
        for key in ("min_period", "max_period"):
            value = getattr(self, key)
            require(value is None or 1 <= value < self.seq_len, key, value,
                    f"must be in [1, task.seq_len={self.seq_len})")
        require(self.bigram_concentration is None or self.bigram_concentration > 0, "bigram_concentration",
                self.bigram_concentration, "must be positive (or null: uniform tokens)")
        if self.min_period is not None and self.max_period is not None:
            require(self.min_period <= self.max_period, "min_period", self.min_period,
                    f"must not exceed task.max_period={self.max_period}")

    def needed_vocab_size(self) -> int:
        return self.vocab_size


@dataclass(frozen=True)
class InductionTask(NextTokenTask):
    vocab_size: int
    seq_len: int
    seed: int
    eval_size: int = 512
    min_period: int | None = None  # default seq_len // 4
    max_period: int | None = None  # default seq_len // 2
    bigram_concentration: float | None = None  # None: uniform block; else a fixed bigram language
    name: str = "induction"
    transitions: torch.Tensor | None = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        transitions = None
        if self.bigram_concentration is not None:
            if self.bigram_concentration <= 0:
                raise ValueError(f"bigram_concentration={self.bigram_concentration} must be positive")
            concentration = torch.full((self.vocab_size, self.vocab_size), float(self.bigram_concentration))
            gamma = torch._standard_gamma(concentration, generator=derived_generator(self.seed, STRUCTURE_STREAM))
            transitions = gamma / gamma.sum(-1, keepdim=True)  # row i: P(next token | token i)
        object.__setattr__(self, "transitions", transitions)

    @property
    def periods(self) -> tuple[int, int]:
        low = self.min_period if self.min_period is not None else max(1, self.seq_len // 4)
        high = self.max_period if self.max_period is not None else max(low, self.seq_len // 2)
        return low, high

    def sample_with_periods(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (batch, seq_len), period of each sequence (batch,))."""
        low, high = self.periods
        periods = torch.randint(low, high + 1, (batch_size,), generator=generator)
        block = torch.randint(0, self.vocab_size, (batch_size, high), generator=generator)
        if self.transitions is not None:
            for t in range(1, high):
                block[:, t] = torch.multinomial(self.transitions[block[:, t - 1]], 1, generator=generator).squeeze(1)
        positions = torch.arange(self.seq_len)
        source = positions[None, :] % periods[:, None]  # position t copies position t mod period
        return block.gather(1, source), periods

    def train_batch(self, step: int, batch_size: int) -> torch.Tensor:
        return self.sample_with_periods(batch_size, derived_generator(self.seed, TRAIN_STREAM, step))[0]

    def _eval_sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sample_with_periods(self.eval_size, derived_generator(self.seed, EVAL_STREAM))

    def eval_tokens(self) -> torch.Tensor:
        return self._eval_sample()[0]

    def repeated_mask(self, periods: torch.Tensor) -> torch.Tensor:
        """(batch, seq_len - 1) mask of loss columns predicting a repeated token (t + 1 >= period)."""
        targets = torch.arange(1, self.seq_len)
        return targets[None, :] >= periods[:, None]

    def eval_metrics(self, token_losses: torch.Tensor) -> dict[str, float]:
        """On the eval set (nats): `eval/loss_repeated`, the mean loss of predicting repeated
        tokens; `eval/loss_random`, of the first random block; `eval/icl_score`, loss at the last
        position minus loss at the first position."""
        mask = self.repeated_mask(self._eval_sample()[1])
        return {
            "eval/loss_random": float(token_losses[~mask].mean()),
            "eval/loss_repeated": float(token_losses[mask].mean()),
            "eval/icl_score": icl_score(token_losses, early=0, late=token_losses.shape[1] - 1),
        }
