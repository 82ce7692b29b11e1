import pytest
from hypothesis import given
from hypothesis import strategies as st

from devinterp.training.schedule import checkpoint_schedule


@given(total=st.integers(1, 10**6), n_log=st.integers(0, 300), n_linear=st.integers(0, 300))
def test_schedule_properties(total, n_log, n_linear):
    steps = checkpoint_schedule(total, n_log, n_linear)
    assert steps[0] == 0 and steps[-1] == total
    assert all(a < b for a, b in zip(steps, steps[1:]))  # sorted and unique
    assert all(isinstance(s, int) and 0 <= s <= total for s in steps)
    assert len(steps) <= n_log + n_linear + 2


def test_schedule_is_dense_early_and_spans_linearly():
    steps = checkpoint_schedule(2000, 60, 40)
    assert {0, 1, 2, 3, 2000}.issubset(steps)
    assert sum(s <= 20 for s in steps) >= 10  # log-spaced part is dense early
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert max(gaps) <= 2000 / 39 + 1  # linear part bounds the gaps late


@pytest.mark.parametrize("args", [(0, 1, 1), (10, -1, 0), (10, 0, -2)])
def test_schedule_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        checkpoint_schedule(*args)


def test_open_ended_schedule_is_log_spaced_and_only_grows():
    from devinterp.training.schedule import open_ended_schedule, run_schedule

    steps = open_ended_schedule(1000)
    assert steps[:4] == [0, 1, 2, 3] and steps[-1] == 1000 and len(steps) < 80
    assert open_ended_schedule(100) == [s for s in steps if s <= 100]
    assert run_schedule({"steps": 7, "checkpoints": {"log": 0, "linear": 0, "steps": [0, 3, 7, 9]}}) == [0, 3, 7]
