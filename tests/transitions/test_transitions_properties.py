"""Property tests: detect_transitions returns a well-formed stage table, and its stages' directions match their
significance, for arbitrary eased curves."""
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devinterp.transitions import detect_transitions
from devinterp.transitions.detect import fit_llc_curve
from devinterp.transitions.segments import segment_curve
from devinterp.transitions.synthetic import checkpoint_steps, make_run

STEPS = checkpoint_steps(total=1000, n_log=30, n_linear=20)
FIXTURES = Path(__file__).parents[1] / "fixtures"


EXAMPLES = settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
EASED_CURVES = given(  # the arguments of eased_run
    values=st.lists(st.floats(-5, 5, allow_nan=False), min_size=2, max_size=4),
    noise=st.floats(0.01, 2.0),
    seed=st.integers(0, 2**16),
)


def eased_run(values, noise, seed):
    """A generated run whose LLC eases between `values` at log-spaced knots (the first at step 0)."""
    knots = np.unique(np.round(np.geomspace(1, 1000, len(values))).astype(int))
    knots[0] = 0
    return make_run(knots, values[: len(knots)], np.linspace(3, 2, len(knots)), ["other"] * (len(knots) - 1),
                    llc_noise=noise, seed=seed, steps=STEPS)


@EXAMPLES
@EASED_CURVES
def test_stage_table_is_well_formed(values, noise, seed):
    stages = detect_transitions(eased_run(values, noise, seed).wide(), llc_std="llc/std", loss=None)
    assert len(stages) >= 1
    assert stages["start_step"].iloc[0] == STEPS[0] and stages["end_step"].iloc[-1] == STEPS[-1]
    assert np.array_equal(stages["end_step"].to_numpy()[:-1], stages["start_step"].to_numpy()[1:])
    assert set(stages["type"]) <= {"A", "B", "other"}
    assert stages["confidence"].between(0.5, 1.0).all()
    assert np.isfinite(stages[["llc_start", "llc_end", "llc_z"]].to_numpy()).all()
    assert stages[["loss_start", "loss_end"]].isna().all().all()


@EXAMPLES
@EASED_CURVES
def test_segment_directions_match_their_significance(values, noise, seed):
    assert_directions_match_significance(fit_llc_curve(eased_run(values, noise, seed).wide(), "llc/mean", "llc/std").fit)


def test_segment_directions_match_their_significance_on_a_real_sparse_curve():
    """Markov-ICL seed 3's LLC at the adaptive schedule's 31 points: a rise over steps 2-5 is significant
    on its own but not from step 0, and dropping it once left a plateau "stage" 0-143 with z 4.0."""
    curve = pd.read_csv(FIXTURES / "markov_seed3_adaptive_llc.csv", index_col="step")
    assert_directions_match_significance(fit_llc_curve(curve, "value", "std", llc_healthy="healthy").fit)
    stages = detect_transitions(curve, llc="value", llc_std="std", llc_healthy="healthy", loss=None)
    assert list(stages["type"]) == ["A", "B"]  # the dense table's types


def assert_directions_match_significance(fit, min_confidence=0.999):
    segments = segment_curve(fit, float(fit.x.min()), float(fit.x.max()), min_confidence=min_confidence)
    for seg in segments:
        significant = seg.confidence >= min_confidence
        assert (seg.direction != 0) == significant, seg
        assert seg.direction in (0, np.sign(seg.delta)), seg
