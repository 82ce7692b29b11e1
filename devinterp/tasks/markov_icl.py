"""In-context Markov chains (Edelman et al. 2024).

Every sequence comes from its own random Markov chain over `num_states` tokens: transition rows
are drawn from Dirichlet(concentration), the first token uniformly. Predicting well requires
in-context statistics; models pass through stages (uniform -> unigram -> bigram / statistical
induction).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from devinterp.tasks.base import EVAL_STREAM, NextTokenTask, TRAIN_STREAM, derived_generator, icl_score


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
