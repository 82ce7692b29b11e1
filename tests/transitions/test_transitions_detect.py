"""detect_transitions on synthetic runs with known boundaries (see devinterp.transitions.synthetic).

Tolerance semantics: a detected boundary matches a true one when |ln(found+1) - ln(true+1)| <=
TOL_LOG (0.3, i.e. within a factor 1.35 in steps), and the detected and true boundaries must
correspond one-to-one (same count). Noise std 0.5 in LLC units; stage amplitudes 3-10.
"""
import numpy as np
import pandas as pd
import pytest

from devinterp.transitions import detect_transitions
from devinterp.transitions.detect import moderated_spread
from devinterp.transitions.smoothing import log_step
from devinterp.transitions.synthetic import checkpoint_steps, make_run, make_scenario

TOL_LOG = 0.3
NOISE = 0.5


def boundaries(stages: pd.DataFrame) -> np.ndarray:
    return stages["end_step"].to_numpy()[:-1]


def matches(found, true) -> bool:
    return len(found) == len(true) and bool(np.all(np.abs(log_step(found) - log_step(true)) <= TOL_LOG))


def test_schedule_is_a_union_of_log_and_linear_steps():
    steps = checkpoint_steps(total=2000, n_log=60, n_linear=40)
    assert steps[0] == 0 and steps[-1] == 2000
    assert np.all(np.diff(steps) > 0)
    assert set(range(50, 2001, 50)) <= set(steps.tolist())
    assert 80 <= len(steps) <= 100  # some early log steps coincide after rounding


@pytest.mark.parametrize("scenario", ["A-B-A", "A-B-A-flat"])
def test_boundaries_and_types_on_synthetic_runs(scenario):
    n_seeds, ok_bounds, ok_types = 8, 0, 0
    for seed in range(n_seeds):
        run = make_scenario(scenario, llc_noise=NOISE, seed=seed)
        stages = detect_transitions(run.long(), llc_std="llc/std")
        ok_bounds += matches(boundaries(stages), run.boundaries)
        ok_types += tuple(stages["type"]) == run.types
    # measured 30/30 (A-B-A) and 29/30 (A-B-A-flat) over seeds 0..29; allow one miss in 8
    assert ok_bounds >= n_seeds - 1, f"{scenario}: boundaries matched in {ok_bounds}/{n_seeds}"
    assert ok_types >= n_seeds - 1, f"{scenario}: types right in {ok_types}/{n_seeds}"


def test_output_columns_and_invariants():
    run = make_scenario("A-B-A", llc_noise=NOISE, seed=0)
    stages = detect_transitions(run.wide(), llc_std="llc/std")
    for col in ["start_step", "end_step", "type", "llc_start", "llc_end", "loss_start", "loss_end",
                "evidence", "confidence"]:
        assert col in stages.columns
    assert stages["start_step"].iloc[0] == run.steps[0] and stages["end_step"].iloc[-1] == run.steps[-1]
    assert np.array_equal(stages["end_step"].to_numpy()[:-1], stages["start_step"].to_numpy()[1:])
    assert np.all(stages["end_step"] > stages["start_step"])
    assert set(stages["end_step"]) <= set(run.steps.tolist())  # snapped to logged steps
    assert stages["confidence"].between(0, 1).all()
    ab = stages[stages["type"].isin(["A", "B"])]
    assert (ab["confidence"] >= 0.99).all()
    assert (np.sign(ab["llc_end"] - ab["llc_start"]) == ab["type"].map({"A": 1, "B": -1})).all()
    # smoothed LLC at the boundaries is close to the truth (noise 0.5, many points)
    true_at = np.interp(stages["end_step"], run.steps, run.llc_true)
    assert np.max(np.abs(stages["llc_end"] - true_at)) < 1.5


def test_no_boundary_on_flat_noise_across_seeds():
    false = 0
    for seed in range(50):
        run = make_scenario("flat", llc_noise=NOISE, seed=1000 + seed)
        stages = detect_transitions(run.wide(), llc_std="llc/std", loss=None)
        false += len(stages) > 1 or stages["type"].iloc[0] != "other"
    assert false <= 1, f"{false}/50 flat-noise runs produced a stage boundary"


def test_no_boundary_on_flat_noise_with_estimated_noise_level():
    false = 0
    for seed in range(15):
        run = make_scenario("flat", llc_noise=NOISE, seed=2000 + seed)
        false += len(detect_transitions(run.wide(), loss=None)) > 1
    assert false <= 1


def test_wide_and_long_give_the_same_result_and_long_keeps_the_last_duplicate():
    run = make_scenario("A-B-A", llc_noise=NOISE, seed=3)
    wide = detect_transitions(run.wide(), llc_std="llc/std")
    long = run.long()
    long["run_id"] = "x"  # extra columns are ignored
    garbage = long.copy()
    garbage["value"] = 1e6
    with_dupes = pd.concat([garbage, long], ignore_index=True)  # last occurrence is the real value
    a = detect_transitions(long, llc_std="llc/std")
    b = detect_transitions(with_dupes, llc_std="llc/std")
    pd.testing.assert_frame_equal(wide, a)
    pd.testing.assert_frame_equal(a, b)


def test_same_input_same_output_and_input_not_mutated():
    run = make_scenario("A-B-A-flat", llc_noise=NOISE, seed=5)
    df = run.long()
    before = df.copy()
    a = detect_transitions(df, llc_std="llc/std")
    b = detect_transitions(df, llc_std="llc/std")
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs
    pd.testing.assert_frame_equal(df, before)


def test_type_comes_from_the_llc_and_the_loss_is_evidence():
    """A falling LLC is B whatever the loss does (Hoogland et al. 2024); a moving loss is flagged."""
    knots, llc = (0, 100, 2000), (2.0, 10.0, 4.0)
    flat_loss = make_run(knots, llc, (6.0, 3.0, 2.95), ("A", "B"), llc_noise=NOISE, seed=1)
    moving_loss = make_run(knots, llc, (6.0, 3.0, 1.0), ("A", "B"), llc_noise=NOISE, seed=1)
    flat = detect_transitions(flat_loss.wide(), llc_std="llc/std")
    moving = detect_transitions(moving_loss.wide(), llc_std="llc/std")
    assert tuple(flat["type"]) == ("A", "B") and tuple(moving["type"]) == ("A", "B")
    assert "a B with a moving loss" not in flat["evidence"].iloc[1]
    assert "a B with a moving loss" in moving["evidence"].iloc[1]
    assert "of the loss range; the LLC moved" in moving["evidence"].iloc[1]
    # without a loss column the type comes from the LLC alone, and the evidence says so
    no_loss = detect_transitions(moving_loss.wide(), llc_std="llc/std", loss=None)
    assert tuple(no_loss["type"]) == ("A", "B")
    assert no_loss["loss_start"].isna().all()
    assert all("no loss column" in e for e in no_loss["evidence"])


def test_n_chains_shrinks_the_noise_and_raises_confidence():
    run = make_scenario("A-B-A", llc_noise=NOISE, seed=2)
    base = detect_transitions(run.wide(), llc_std="llc/std", loss=None)
    wide = run.wide()
    wide["llc/std"] = wide["llc/std"] * 2.0  # spread of single chains, 4 chains -> same noise on the mean
    four = detect_transitions(wide, llc_std="llc/std", n_chains=4, loss=None)
    pd.testing.assert_frame_equal(base, four)


def test_clear_errors():
    run = make_scenario("A-B-A", llc_noise=NOISE, seed=0)
    with pytest.raises(ValueError, match="llc/nope"):
        detect_transitions(run.long(), llc="llc/nope")
    with pytest.raises(ValueError, match="eval/nope"):
        detect_transitions(run.long(), loss="eval/nope")
    with pytest.raises(ValueError, match="std/nope"):
        detect_transitions(run.long(), llc_std="std/nope")
    with pytest.raises(ValueError, match="at least 5|>= 5"):
        detect_transitions(run.wide().iloc[:4])
    with pytest.raises(ValueError, match="n_chains"):
        detect_transitions(run.wide(), n_chains=4)
    wide = run.wide()
    wide.loc[wide.index[10], "llc/std"] = np.nan
    with pytest.raises(ValueError, match="llc/std"):
        detect_transitions(wide, llc_std="llc/std")
    with pytest.raises(ValueError, match="min_stage_length"):
        detect_transitions(run.wide(), min_stage_length=0)
    with pytest.raises(TypeError):
        detect_transitions(run.wide().to_numpy())


def test_llc_and_loss_logged_at_different_steps():
    run = make_scenario("A-B-A", llc_noise=NOISE, seed=4)
    wide = run.wide()
    wide.loc[wide.index[::3], ["llc/mean", "llc/std"]] = np.nan  # LLC skipped at every 3rd checkpoint
    stages = detect_transitions(wide, llc_std="llc/std")
    assert matches(boundaries(stages), run.boundaries)
    assert stages["loss_start"].notna().all()


def test_smoothed_curve_for_plotting():
    from devinterp.transitions import smoothed_curve

    run = make_scenario("A-B-A", llc_noise=NOISE, seed=0)
    curve = smoothed_curve(run.long(), "llc/mean", std="llc/std", n_grid=64)
    assert list(curve.columns) == ["step", "mean", "std"] and len(curve) == 64
    assert np.all(np.diff(curve["step"]) > 0) and (curve["std"] > 0).all()
    truth = np.interp(log_step(curve["step"]), log_step(run.steps), run.llc_true)
    assert np.max(np.abs(curve["mean"] - truth)) < 1.5


def test_chain_spreads_are_moderated_toward_their_neighbours():
    """4-chain spreads around a true spread that grows 10x along the run (as the LLC's does): the
    moderated spread is nearer the truth than the raw one, and one that reads low by chance no longer
    pins the curve. A constant spread is unchanged; the order of the steps does not matter."""
    rng = np.random.default_rng(3)
    steps = np.arange(0, 900, 10)
    truth = np.linspace(0.3, 3.0, len(steps))
    spread = (truth[:, None] * rng.standard_normal((len(steps), 4))).std(axis=1, ddof=1)
    moderated = moderated_spread(steps, spread)
    raw_error, moderated_error = (np.median(np.abs(np.log(s / truth))) for s in (spread, moderated))
    assert moderated_error < 0.8 * raw_error  # seeds 0-9: 0.52-0.78
    assert np.mean(spread < 0.5 * truth) > 0.08 and np.mean(moderated < 0.5 * truth) < 0.05  # seeds 0-9: 9-21 %, 0-4 %
    assert np.allclose(moderated_spread(steps, np.full(len(steps), 1.7)), 1.7)
    shuffled = rng.permutation(len(steps))
    assert np.allclose(moderated_spread(steps[shuffled], spread[shuffled]), moderated[shuffled])
