"""Property test: detect_transitions returns a well-formed stage table for arbitrary eased curves."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devinterp.transitions import detect_transitions
from devinterp.transitions.synthetic import checkpoint_steps, make_run

STEPS = checkpoint_steps(total=1000, n_log=30, n_linear=20)


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=4),
    noise=st.floats(0.01, 2.0),
    seed=st.integers(0, 2**16),
)
def test_stage_table_is_well_formed(values, noise, seed):
    knots = np.unique(np.round(np.geomspace(1, 1000, len(values))).astype(int))
    knots[0] = 0
    values = values[: len(knots)]
    run = make_run(knots, values, np.linspace(3, 2, len(knots)), ["other"] * (len(knots) - 1),
                   llc_noise=noise, seed=seed, steps=STEPS)
    stages = detect_transitions(run.wide(), llc_std="llc/std", loss=None)
    assert len(stages) >= 1
    assert stages["start_step"].iloc[0] == STEPS[0] and stages["end_step"].iloc[-1] == STEPS[-1]
    assert np.array_equal(stages["end_step"].to_numpy()[:-1], stages["start_step"].to_numpy()[1:])
    assert set(stages["type"]) <= {"A", "B", "other"}
    assert stages["confidence"].between(0.5, 1.0).all()
    assert np.isfinite(stages[["llc_start", "llc_end", "llc_z"]].to_numpy()).all()
    assert stages[["loss_start", "loss_end"]].isna().all().all()
