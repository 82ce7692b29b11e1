"""ngram: KL of the model's predictions from the data's n-gram statistics, against hand-counted cases."""
import math
from types import SimpleNamespace

import pytest
import torch

from devinterp.callbacks.ngram import NgramCallback, count_ngrams, ngram_kl
from devinterp.core.errors import ConfigError


def brute_force_kl(log_probs, tokens, train, n, min_count):
    counts = {}
    for row in train.tolist():
        for t in range(n - 1, len(row)):
            counts.setdefault(tuple(row[t - n + 1 : t]), {}).setdefault(row[t], 0)
            counts[tuple(row[t - n + 1 : t])][row[t]] += 1
    total, scored = 0.0, 0
    for r, row in enumerate(tokens.tolist()):
        for t in range(n - 2, len(row)):
            following = counts.get(tuple(row[t - n + 2 : t + 1]), {})
            if sum(following.values()) < min_count:
                continue
            z = sum(following.values())
            total += sum(c / z * (math.log(c / z) - float(log_probs[r, t, b])) for b, c in following.items())
            scored += 1
    return total / scored, scored / (tokens.shape[0] * (tokens.shape[1] - n + 2))


@pytest.mark.parametrize("n", [2, 3])
def test_kl_matches_a_hand_count(n):
    g = torch.Generator().manual_seed(n)
    vocab = 5
    train = torch.randint(0, vocab, (40, 12), generator=g)
    tokens = torch.randint(0, vocab, (3, 12), generator=g)
    log_probs = torch.log_softmax(torch.randn(3, 12, vocab, generator=g), dim=-1)
    kl, coverage = ngram_kl(log_probs, tokens, count_ngrams(train, n, vocab), n, min_count=3)
    expected_kl, expected_coverage = brute_force_kl(log_probs, tokens, train, n, 3)
    assert kl == pytest.approx(expected_kl, rel=1e-9) and coverage == pytest.approx(expected_coverage)


class BigramModel(torch.nn.Module):
    """Predicts from the last token only, with the given (vocab, vocab) log-probabilities."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.config = SimpleNamespace(vocab_size=table.shape[0])

    def forward(self, tokens):
        return SimpleNamespace(logits=self.table[tokens])


def test_a_model_that_predicts_the_bigram_statistics_scores_zero():
    g = torch.Generator().manual_seed(0)
    vocab = 6
    transitions = torch.softmax(3 * torch.randn(vocab, vocab, generator=g), dim=1)  # a peaked bigram language
    train = torch.zeros(200, 16, dtype=torch.long)
    for t in range(1, 16):
        train[:, t] = torch.multinomial(transitions[train[:, t - 1]], 1, generator=g).squeeze(1)
    counts = torch.zeros(vocab, vocab).index_put_((train[:, :-1].reshape(-1), train[:, 1:].reshape(-1)),
                                                 torch.ones(200 * 15), accumulate=True)
    ctx = SimpleNamespace(eval_tokens=train[:8], train_tokens=train, device=torch.device("cpu"))
    exact = NgramCallback(orders=[2])
    ctx.model = BigramModel(counts.log())
    assert exact.on_checkpoint(ctx).scalars["ngram/kl_2"] == pytest.approx(0.0, abs=1e-6)  # float32 logits
    ctx.model = BigramModel(torch.zeros(vocab, vocab))  # uniform: KL = log V − H(q) > 0
    uniform = exact.on_checkpoint(ctx).scalars["ngram/kl_2"]
    expected, _ = brute_force_kl(torch.full((8, 16, vocab), -math.log(vocab)), train[:8], train, 2, 5)
    assert uniform == pytest.approx(expected, rel=1e-5) and uniform > 0.3


def test_bad_orders_are_named():
    with pytest.raises(ConfigError, match="callbacks.ngram.orders=\\[1\\]"):
        NgramCallback(orders=[1])
