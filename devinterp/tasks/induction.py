"""Repeated random tokens: the classic task on which induction heads form.

Each sequence is `prefix_len` uniformly random tokens followed by a copy of them (truncated to
`seq_len`). The first half is unpredictable (loss stays near log(vocab_size)); the repeated half
can only be predicted by an induction circuit (find the previous occurrence of the current
token, copy the token that followed it), so its loss drops sharply once that circuit forms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from devinterp.tasks.base import EVAL_STREAM, TRAIN_STREAM, derived_generator, icl_score


@dataclass(frozen=True)
class InductionTask:
    vocab_size: int
    seq_len: int
    seed: int
    eval_size: int = 512
    prefix_len: int | None = None  # default: seq_len // 2
    name: str = "induction"

    @property
    def prefix(self) -> int:
        return self.prefix_len if self.prefix_len is not None else self.seq_len // 2

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        prefix = torch.randint(0, self.vocab_size, (batch_size, self.prefix), generator=generator)
        repeats = math.ceil(self.seq_len / self.prefix)
        return prefix.repeat(1, repeats)[:, : self.seq_len]

    def train_batch(self, step: int, batch_size: int) -> torch.Tensor:
        return self.sample(batch_size, derived_generator(self.seed, TRAIN_STREAM, step))

    def eval_tokens(self) -> torch.Tensor:
        return self.sample(self.eval_size, derived_generator(self.seed, EVAL_STREAM))

    def eval_metrics(self, token_losses: torch.Tensor) -> dict[str, float]:
        """`eval/loss_repeated`: mean loss of predicting tokens of the copy (positions >= prefix);
        `eval/loss_random`: of the random prefix; `eval/icl_score`: late minus early position."""
        first_repeated = self.prefix - 1  # column t predicts token t+1
        return {
            "eval/loss_random": float(token_losses[:, :first_repeated].mean()),
            "eval/loss_repeated": float(token_losses[:, first_repeated:].mean()),
            "eval/icl_score": icl_score(token_losses, early=first_repeated // 2, late=token_losses.shape[1] - 1),
        }
