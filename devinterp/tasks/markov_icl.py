"""In-context Markov chains (Edelman et al. 2024).

Every sequence comes from its own random Markov chain over `num_states` tokens: transition rows
are drawn from Dirichlet(concentration), the first token uniformly. Predicting well requires
in-context statistics; models pass through stages (uniform -> unigram -> bigram / statistical
induction).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from devinterp.core.errors import require
from devinterp.tasks.base import EVAL_STREAM, TRAIN_STREAM, NextTokenTask, TaskConfig, derived_generator, icl_score


@dataclass
class MarkovICLTaskConfig(TaskConfig):
    """Schema of configs/task/markov_icl.yaml."""

    _target_: str = "devinterp.tasks.markov_icl.MarkovICLTask"
    name: str = "markov_icl"
    num_states: int = 8
    concentration: float = 1.0  # Dirichlet parameter of each transition row

    def validate(self) -> None:
        super().validate()
        require(self.num_states >= 2, "num_states", self.num_states, "must be at least 2")
        require(self.concentration > 0, "concentration", self.concentration, "must be positive")

    def needed_vocab_size(self) -> int:
        return self.num_states


@dataclass(frozen=True)
class MarkovICLTask(NextTokenTask):
    num_states: int
    seq_len: int
    seed: int
    eval_size: int = 512
    concentration: float = 1.0
    name: str = "markov_icl"

    @property
    def vocab_size(self) -> int:
        return self.num_states

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        k = self.num_states
        gamma = torch._standard_gamma(torch.full((batch_size, k, k), self.concentration), generator=generator)
        transitions = gamma / gamma.sum(-1, keepdim=True)  # (batch, k, k), rows ~ Dirichlet
        tokens = torch.empty(batch_size, self.seq_len, dtype=torch.long)
        tokens[:, 0] = torch.randint(0, k, (batch_size,), generator=generator)
        rows = torch.arange(batch_size)
        for t in range(1, self.seq_len):
            probs = transitions[rows, tokens[:, t - 1]]
            tokens[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return tokens

    def train_batch(self, step: int, batch_size: int) -> torch.Tensor:
        return self.sample(batch_size, derived_generator(self.seed, TRAIN_STREAM, step))

    def eval_tokens(self) -> torch.Tensor:
        return self.sample(self.eval_size, derived_generator(self.seed, EVAL_STREAM))

    def eval_metrics(self, token_losses: torch.Tensor) -> dict[str, float]:
        return {"eval/icl_score": icl_score(token_losses, early=1, late=token_losses.shape[1] - 1)}
