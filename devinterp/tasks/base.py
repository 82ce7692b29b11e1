"""What every task provides, and deterministic seeding.

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

from typing import Protocol

import numpy as np
import torch


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
# modular train/test split, the bigram language of induction filler).
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
