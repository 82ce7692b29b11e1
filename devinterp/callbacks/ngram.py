"""`ngram`: how far the model's next-token predictions are from the data's n-gram statistics.

The n-gram statistics are counted on the run's fixed training sample (`ctx.train_tokens`): for each
context of n − 1 tokens seen at least `min_count` times, the empirical distribution q(· | context) of
the next token. On the first `num_sequences` eval sequences, at every position whose context has
such statistics, the score is KL(q ‖ p_model) in nats, averaged over those positions:
`ngram/kl_<n>` for each n of `orders` (2: the bigram score). It falls as the model learns the n-gram
statistics (the early language-model stages of Hoogland et al. 2024) and can rise again once
the model uses more context than n − 1 tokens (induction), where the n-gram distribution is no longer
what it predicts. `ngram/coverage_<n>`: the fraction of eval positions scored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

import torch
import torch.nn.functional as F

from devinterp.callbacks.base import (Callback, CallbackContext, CallbackOutput, not_a_language_model, positive,
                                     require)


@dataclass
class NgramSettings:
    orders: List[int] = field(default_factory=lambda: [2, 3])
    num_sequences: int = 32
    min_count: int = 5

    def validate(self) -> None:
        require(self.orders and all(isinstance(n, int) and n >= 2 for n in self.orders), "orders", self.orders,
                "must be a list of integers >= 2")
        require(positive(self.num_sequences), "num_sequences", self.num_sequences, "must be a positive integer")
        require(positive(self.min_count), "min_count", self.min_count, "must be a positive integer")


@dataclass(frozen=True)
class NgramTable:
    """Counts of (context, next token) pairs, sorted by context key. A context of n − 1 tokens is the key
    sum_i token_i · vocab^i."""

    context_keys: torch.Tensor  # (contexts,) ascending
    context_totals: torch.Tensor  # (contexts,) occurrences of each context
    context_starts: torch.Tensor  # (contexts,) first pair of each context
    context_sizes: torch.Tensor  # (contexts,) pairs of each context
    next_tokens: torch.Tensor  # (pairs,)
    counts: torch.Tensor  # (pairs,)


def context_keys(tokens: torch.Tensor, n: int, vocab: int) -> torch.Tensor:
    """(rows, seq_len − n + 1): the key of the n − 1 tokens ending at each position from n − 2 on."""
    keys = torch.zeros(tokens.shape[0], tokens.shape[1] - n + 2, dtype=torch.int64)
    for i in range(n - 1):
        keys += tokens[:, i : tokens.shape[1] - n + 2 + i].long() * vocab**i
    return keys


def count_ngrams(tokens: torch.Tensor, n: int, vocab: int) -> NgramTable:
    """The n-gram counts of `tokens` (rows of token ids; n-grams do not cross rows)."""
    keys = context_keys(tokens, n, vocab)[:, :-1].reshape(-1)
    following = tokens[:, n - 1 :].reshape(-1).long()
    pairs, counts = torch.unique(keys * vocab + following, return_counts=True)  # sorted by key, then token
    pair_keys = pairs // vocab
    contexts, per_context = torch.unique_consecutive(pair_keys, return_counts=True)
    starts = torch.cumsum(per_context, 0) - per_context
    totals = torch.zeros(len(contexts), dtype=torch.int64).index_add_(
        0, torch.repeat_interleave(torch.arange(len(contexts)), per_context), counts)
    return NgramTable(contexts, totals, starts, per_context, pairs % vocab, counts)


def ngram_kl(log_probs: torch.Tensor, tokens: torch.Tensor, table: NgramTable, n: int, min_count: int
             ) -> tuple[float, float]:
    """(mean KL(q ‖ p) in nats over the positions whose context has >= min_count occurrences, the fraction
    of positions scored). `log_probs`: (rows, seq_len, vocab), the model's next-token log-probabilities."""
    vocab = log_probs.shape[-1]
    keys = context_keys(tokens, n, vocab)  # position t = n − 2 + j predicts token t + 1
    rows, columns = keys.shape
    flat_keys = keys.reshape(-1)
    found = torch.searchsorted(table.context_keys, flat_keys).clamp(max=len(table.context_keys) - 1)
    usable = (table.context_keys[found] == flat_keys) & (table.context_totals[found] >= min_count)
    positions = torch.nonzero(usable).squeeze(1)
    if len(positions) == 0:
        return float("nan"), 0.0
    contexts = found[positions]
    lengths = table.context_sizes[contexts]
    owner = torch.repeat_interleave(torch.arange(len(positions)), lengths)
    offset = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    pair = table.context_starts[contexts][owner] + offset  # every continuation of each scored position's context
    q = table.counts[pair].double() / table.context_totals[contexts][owner].double()
    row, column = positions[owner] // columns, positions[owner] % columns + n - 2
    log_p = log_probs[row, column, table.next_tokens[pair]].double()
    kl = torch.zeros(len(positions), dtype=torch.float64).index_add_(0, owner, q * (q.log() - log_p))
    return float(kl.mean()), len(positions) / (rows * columns)


class NgramCallback(Callback):
    """Scalars `ngram/kl_<n>` and `ngram/coverage_<n>` for each n of `orders` (module docstring)."""

    name = "ngram"
    Settings = NgramSettings

    def unsupported(self, model: torch.nn.Module, eval_tokens: torch.Tensor) -> str | None:
        return not_a_language_model(model, eval_tokens, "a transformers language model")

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        c = self.config
        vocab = ctx.model.config.vocab_size
        tokens = ctx.eval_tokens[: c.num_sequences]
        with torch.no_grad():
            log_probs = F.log_softmax(ctx.model(tokens.to(ctx.device)).logits.float(), dim=-1).cpu()
        scalars = {}
        for n in c.orders:
            kl, coverage = ngram_kl(log_probs, tokens, count_ngrams(ctx.train_tokens.cpu(), n, vocab), n, c.min_count)
            scalars[f"ngram/kl_{n}"] = kl
            scalars[f"ngram/coverage_{n}"] = coverage
        return CallbackOutput(scalars)
