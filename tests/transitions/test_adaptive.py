"""Adaptive checkpoint selection against measuring every checkpoint, on curves with known stages."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from devinterp.transitions import detect_transitions
from devinterp.transitions.adaptive import HEALTHY, STD, VALUE, AdaptiveSettings, adaptive_rounds, initial_steps
from devinterp.transitions.smoothing import log_step
from devinterp.transitions.replicates import boundary_ranges, remeasured_tables
from devinterp.transitions.synthetic import checkpoint_steps, make_run, make_scenario

FIXTURES = Path(__file__).parents[1] / "fixtures"


def curve_of(run) -> tuple[list[int], pd.DataFrame]:
    steps = [int(s) for s in run.steps]
    return steps, pd.DataFrame({VALUE: run.llc, STD: run.llc_std}, index=pd.Index(steps, name="step"))


def chosen(rounds) -> list[int]:
    return sorted(set().union(*map(set, rounds)))


def test_the_coarse_round_covers_log_time_and_the_checkpoints_order():
    steps = [int(s) for s in checkpoint_steps()]  # log- and linearly spaced, as runs save them
    first = initial_steps(steps, 10)
    assert len(first) == 10 and first[0] == steps[0] and first[-1] == steps[-1]
    assert np.diff(log_step(first)).max() <= 1.5 * log_step(steps[-1]) / 4  # 5 points evenly in ln(step + 1)
    order = [steps.index(s) for s in first]
    assert np.diff(order).max() <= 1.5 * len(steps) / 6  # 5 points evenly in the checkpoints' order
    assert initial_steps([0, 5, 9], 10) == [0, 5, 9]


@pytest.mark.parametrize("seed", [3, 4, 5])
@pytest.mark.parametrize("scenario", ["A-B-A", "A-B-A-flat"])
def test_same_stages_as_every_checkpoint_within_the_budget(scenario, seed):
    """Same stage types as the dense table; the boundaries where the LLC turns (A to B, B to A) within one
    saved checkpoint of where re-measured dense tables put them; at most 35 % of the estimates."""
    steps, curve = curve_of(make_scenario(scenario, llc_noise=0.3, seed=seed))
    rounds = adaptive_rounds(steps, curve, AdaptiveSettings())
    assert len(rounds) > 1 and len(chosen(rounds)) <= 0.35 * len(steps)
    dense = detect_transitions(curve, llc=VALUE, loss=None, llc_std=STD)
    adaptive = detect_transitions(curve.loc[chosen(rounds)], llc=VALUE, loss=None, llc_std=STD, point_steps=steps)
    assert list(adaptive["type"]) == list(dense["type"])
    remeasured = remeasured_tables(curve, 20, np.random.default_rng(0), llc=VALUE, llc_std=STD)
    for k, (lo, hi) in enumerate(boundary_ranges(dense, remeasured, steps), start=1):
        if {dense["type"][k - 1], dense["type"][k]} == {"A", "B"}:
            position = steps.index(int(adaptive["start_step"][k]))
            assert lo - 1 <= position <= hi + 1, (k, dense["start_step"][k], adaptive["start_step"][k], steps[lo], steps[hi])


def test_a_slow_late_fall_is_found_as_with_every_checkpoint():
    """A rise, then a fall of ~8 % over the last ~2/3 of training (as markov-ICL's type B): seen by the dense
    table through the many linearly spaced late checkpoints, so round 0 must reach them. (Seeds 0-3: the
    log-spaced round 0 of before found it in 2 of them, this one in 3; at 31 of 84 points the fourth's is not
    significant.)"""
    steps = [int(s) for s in checkpoint_steps(total=3000, n_log=50, n_linear=40)]
    found = 0
    for seed in range(4):
        run = make_run((0, 300, 1000, 3000), (10.0, 24.0, 24.0, 22.0), (4.0, 2.0, 1.99, 1.98), ("A", "other", "B"),
                       llc_noise=1.0, seed=seed, steps=steps)
        _, curve = curve_of(run)
        assert list(detect_transitions(curve, llc=VALUE, loss=None, llc_std=STD)["type"]) == ["A", "B"]
        rounds = adaptive_rounds(steps, curve, AdaptiveSettings())
        adaptive = detect_transitions(curve.loc[chosen(rounds)], llc=VALUE, loss=None, llc_std=STD, point_steps=steps)
        found += list(adaptive["type"]) == ["A", "B"]
    assert found >= 3


INDUCTION_COLUMNS = dict(llc=VALUE, llc_std=STD, llc_healthy=HEALTHY)


def induction_curve(seed: int) -> tuple[list[int], pd.DataFrame]:
    """Induction's LLC measured at every checkpoint (88, all healthy; chain spread ~1): a steady rise from
    ~29, a jump of ~100 within two checkpoints (the bump), then a slow approach to ~422."""
    curve = pd.read_csv(FIXTURES / f"induction_seed{seed}_llc.csv", index_col="step")
    return [int(s) for s in curve.index], curve


def starts_with_a(table: pd.DataFrame) -> bool:
    return (table["type"][0], table["start_step"][0]) == ("A", 0)


@pytest.mark.parametrize("seed", [0, 7])
def test_induction_dense_table_starts_with_a_rise_from_initialisation(seed):
    steps, curve = induction_curve(seed)
    assert starts_with_a(detect_transitions(curve, loss=None, **INDUCTION_COLUMNS))
    remeasured = remeasured_tables(curve, 20, np.random.default_rng(0), **INDUCTION_COLUMNS)
    assert np.mean([starts_with_a(t) for t in remeasured]) >= 0.9


def test_induction_rise_from_initialisation_is_found_on_a_third_of_the_points():
    """Fitted to a third of the points, the smoother needs an excess noise ~10x the chain spread, and the
    rounds of before spent the budget bisecting the boundary of a flat "stage" at the start that its fit
    made up ("other 0-134" on seed 7). With the *unresolved* rule the adaptive table starts with an A, as
    the dense one does, and so do 85-90 % of re-measured versions of the sparse curve (without the rule:
    8-10 %). Seed 0's sparse start is a coin flip either way (45-53 % with the rule, 63-68 % without), so
    this asks nothing of it."""
    steps, curve = induction_curve(7)
    points = chosen(adaptive_rounds(steps, curve, AdaptiveSettings()))
    assert len(points) <= 0.35 * len(steps)
    sparse = curve.loc[points]
    adaptive = detect_transitions(sparse, loss=None, **INDUCTION_COLUMNS, point_steps=steps)
    assert starts_with_a(adaptive), adaptive
    remeasured = remeasured_tables(sparse, 20, np.random.default_rng(0), **INDUCTION_COLUMNS)
    assert np.mean([starts_with_a(t) for t in remeasured]) >= 0.6


def test_a_flat_curve_needs_only_the_coarse_round():
    steps, curve = curve_of(make_scenario("flat", llc_noise=0.3, seed=1))
    assert len(adaptive_rounds(steps, curve, AdaptiveSettings())) == 1


def test_rounds_depend_only_on_the_values_at_the_chosen_steps():
    steps, curve = curve_of(make_scenario("A-B-A", llc_noise=0.3, seed=0))
    settings = AdaptiveSettings()
    rounds = adaptive_rounds(steps, curve, settings)
    assert adaptive_rounds(steps, curve.loc[chosen(rounds)], settings) == rounds  # other steps' values unused
    # Measured up to round 1: rounds 0-2 are known, round 2 waits for its measurements.
    assert adaptive_rounds(steps, curve.loc[chosen(rounds[:2])], settings) == rounds[:3]
    # A measurement that failed counts as done, without a value.
    lost = rounds[1][0]
    partial = curve.loc[[s for s in chosen(rounds[:2]) if s != lost]]
    assert adaptive_rounds(steps, partial, settings)[:2] == rounds[:2]
    assert len(adaptive_rounds(steps, partial, settings, failed=[lost])) >= 3


@pytest.mark.parametrize("settings, named", [({"initial": 3}, "initial=3"), ({"budget": 0.0}, "budget=0.0"),
                                             ({"budget": 1.5}, "budget=1.5"), ({"min_gap": -1}, "min_gap=-1")])
def test_bad_settings_are_named(settings, named):
    with pytest.raises(ValueError, match=named):
        AdaptiveSettings(**settings)
