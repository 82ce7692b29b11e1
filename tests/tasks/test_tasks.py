import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from devinterp.tasks import IGNORE_INDEX, InductionTask, MarkovICLTask, ModularAdditionTask, TextTask, derived_generator


@settings(max_examples=25, deadline=None)
@given(vocab=st.integers(2, 50), seq_len=st.integers(4, 40), step=st.integers(0, 10**6), seed=st.integers(0, 100))
def test_induction_sequences_repeat_with_their_period(vocab, seq_len, step, seed):
    task = InductionTask(vocab_size=vocab, seq_len=seq_len, seed=seed)
    batch, periods = task.sample_with_periods(5, derived_generator(seed, 0, step))
    assert torch.equal(batch, task.train_batch(step, 5))
    assert batch.shape == (5, seq_len) and batch.dtype == torch.long
    assert batch.min() >= 0 and batch.max() < vocab
    low, high = task.periods
    for tokens, period in zip(batch, periods.tolist()):
        assert low <= period <= high
        assert torch.equal(tokens[period:], tokens[: seq_len - period])


def test_induction_periods_vary_so_position_alone_cannot_predict():
    task = InductionTask(vocab_size=64, seq_len=64, seed=0)
    _, periods = task.sample_with_periods(200, derived_generator(0, 0, 0))
    assert periods.unique().numel() > 10


def test_tasks_are_deterministic_per_step_and_seed():
    task = InductionTask(vocab_size=64, seq_len=64, seed=3)
    assert torch.equal(task.train_batch(7, 4), InductionTask(vocab_size=64, seq_len=64, seed=3).train_batch(7, 4))
    assert not torch.equal(task.train_batch(7, 4), task.train_batch(8, 4))
    assert not torch.equal(task.train_batch(7, 4), InductionTask(vocab_size=64, seq_len=64, seed=4).train_batch(7, 4))
    assert torch.equal(task.eval_tokens(), task.eval_tokens())
    assert not torch.equal(task.eval_tokens()[:4], task.train_batch(0, 4))


def test_derived_generator_does_not_touch_global_rng():
    before = torch.get_rng_state()
    torch.rand(3, generator=derived_generator(1, 2, 3))
    assert torch.equal(before, torch.get_rng_state())


def test_induction_metrics_split_random_and_repeated_tokens():
    task = InductionTask(vocab_size=8, seq_len=12, seed=0, eval_size=6)
    _, periods = task._eval_sample()
    mask = task.repeated_mask(periods)
    losses = torch.where(mask, 0.0, 2.0)  # a perfect induction model
    metrics = task.eval_metrics(losses)
    assert metrics["eval/loss_random"] == 2.0 and metrics["eval/loss_repeated"] == 0.0
    assert metrics["eval/icl_score"] == -2.0
    assert mask[:, 0].logical_not().all() and mask[:, -1].all()


def test_markov_sequences_follow_a_chain():
    task = MarkovICLTask(num_states=3, seq_len=400, seed=0, concentration=0.1)
    tokens = task.train_batch(0, 2)
    assert tokens.min() >= 0 and tokens.max() < 3
    # sparse Dirichlet rows: each sequence uses few of the 9 possible transitions
    for seq in tokens:
        pairs = set(zip(seq[:-1].tolist(), seq[1:].tolist()))
        assert len(pairs) < 9


def test_text_task_windows_come_from_the_right_split(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(bytes(range(256)) * 4)
    task = TextTask(path=str(path), seq_len=16, seed=0, eval_size=8, eval_fraction=0.25)
    assert task.vocab_size == 256
    train, held_out = task.train_batch(0, 32), task.eval_tokens()
    assert train.shape == (32, 16) and held_out.shape == (8, 16)
    data = task.data
    for window in train:
        start = window[0].item()
        assert any(torch.equal(data[s : s + 16], window) for s in range(start, task.split - 15, 256))
    # consecutive bytes: each window is a contiguous slice
    assert torch.all((held_out[:, 1:] - held_out[:, :-1]) % 256 == 1)


def test_modular_split_partitions_all_pairs():
    task = ModularAdditionTask(modulus=7, seed=0, train_fraction=0.3)
    train, test = task.train_batch(0, 10**6), task.eval_tokens()
    assert task.vocab_size == 8 and train.shape == (15, 4) and test.shape == (34, 4)  # round(0.3 * 49) = 15
    pairs = {tuple(row[:2]) for row in torch.cat([train, test]).tolist()}
    assert len(pairs) == 49  # every pair exactly once: disjoint, and nothing missing
    for a, b, equals, c in torch.cat([train, test]).tolist():
        assert equals == 7 and c == (a + b) % 7
    other_seed = ModularAdditionTask(modulus=7, seed=1, train_fraction=0.3).train_batch(0, 10**6)
    assert not torch.equal(train, other_seed)
    assert torch.equal(ModularAdditionTask(modulus=7, seed=0, train_fraction=0.3, eval_size=5).eval_tokens(), test[:5])


def test_modular_batches_are_the_training_set_or_a_subset_of_it():
    task = ModularAdditionTask(modulus=11, seed=0, train_fraction=0.5)
    full = task.train_batch(0, 10**6)
    assert torch.equal(task.train_batch(123, len(full)), full)  # full batch: the same every step
    training_pairs = {tuple(row) for row in full.tolist()}
    batch = task.train_batch(5, 20)
    assert batch.shape == (20, 4) and {tuple(row) for row in batch.tolist()} <= training_pairs
    assert len({tuple(row) for row in batch.tolist()}) == 20  # without replacement
    assert torch.equal(batch, task.train_batch(5, 20)) and not torch.equal(batch, task.train_batch(6, 20))


def test_labels_score_only_the_answer_of_modular_and_every_token_elsewhere():
    task = ModularAdditionTask(modulus=5, seed=0)
    tokens = task.train_batch(0, 4)
    labels = task.labels(tokens)
    assert (labels[:, :3] == IGNORE_INDEX).all() and torch.equal(labels[:, 3], tokens[:, 3])
    induction = InductionTask(vocab_size=8, seq_len=8, seed=0)
    tokens = induction.train_batch(0, 3)
    assert torch.equal(induction.labels(tokens), tokens)


@pytest.mark.parametrize("kwargs", [dict(modulus=1), dict(modulus=5, train_fraction=1.0),
                                    dict(modulus=3, train_fraction=0.01)])
def test_modular_rejects_empty_splits(kwargs):
    with pytest.raises(ValueError):
        ModularAdditionTask(seed=0, **kwargs)


def test_bigram_filler_walks_a_fixed_sparse_language():
    task = InductionTask(vocab_size=6, seq_len=40, seed=0, min_period=20, max_period=20, bigram_concentration=0.05)
    assert torch.allclose(task.transitions.sum(1), torch.ones(6))
    assert torch.equal(task.transitions, InductionTask(vocab_size=6, seq_len=40, seed=0,
                                                       bigram_concentration=0.05).transitions)
    blocks = task.train_batch(0, 200)[:, :20]
    seen = torch.zeros(6, 6)
    seen.index_put_((blocks[:, :-1].reshape(-1), blocks[:, 1:].reshape(-1)), torch.ones(1), accumulate=True)
    # the walk only uses likely transitions: sparse rows, most of the 36 bigrams never occur
    assert (seen > 0).sum() < 0.6 * 36
    assert ((seen > 0) <= (task.transitions > 1e-4)).all()
    uniform = InductionTask(vocab_size=6, seq_len=40, seed=0, min_period=20, max_period=20)
    assert uniform.transitions is None and not torch.equal(uniform.train_batch(0, 200), task.train_batch(0, 200))


def test_text_icl_score_compares_late_with_early_position_windows(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(bytes(range(256)) * 8)
    task = TextTask(path=str(path), seq_len=33, seed=0, eval_size=4)
    width = task.seq_len - 1  # columns of the per-token losses: token t+1 predicted at column t
    losses = torch.full((4, width), 3.0)
    losses[:, width - width // 8 :] = 1.0  # context helps at the end
    losses[:, 0] = 9.0  # the first positions are outside the early window
    assert task.eval_metrics(losses)["eval/icl_score"] == pytest.approx(-2.0)
