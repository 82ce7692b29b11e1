"""Adaptive checkpoint selection against measuring every checkpoint, on curves with known stages."""
import numpy as np
import pandas as pd
import pytest

from devinterp.transitions import detect_transitions
from devinterp.transitions.adaptive import STD, VALUE, AdaptiveSettings, adaptive_rounds, initial_steps
from devinterp.transitions.smoothing import log_step
from devinterp.transitions.synthetic import make_scenario


def curve_of(run) -> tuple[list[int], pd.DataFrame]:
    steps = [int(s) for s in run.steps]
    return steps, pd.DataFrame({VALUE: run.llc, STD: run.llc_std}, index=pd.Index(steps, name="step"))


def chosen(rounds) -> list[int]:
    return sorted(set().union(*map(set, rounds)))


def test_the_coarse_round_is_log_spaced_and_holds_both_ends():
    first = initial_steps(list(range(0, 2001)), 10)
    assert len(first) == 10 and first[0] == 0 and first[-1] == 2000
    gaps = np.diff(log_step(first))[1:]  # the first gap is ln 2 or more: steps are integers
    assert gaps.max() < 1.2 * gaps.min()
    assert initial_steps([0, 5, 9], 10) == [0, 5, 9]


@pytest.mark.parametrize("seed", [3, 4, 5])
@pytest.mark.parametrize("scenario", ["A-B-A", "A-B-A-flat"])
def test_same_stages_as_every_checkpoint_within_the_budget(scenario, seed):
    """Same stage types as the dense table; the boundaries where the LLC turns (A to B, B to A) within one
    saved checkpoint of the dense table's; at most 35 % of the estimates."""
    steps, curve = curve_of(make_scenario(scenario, llc_noise=0.3, seed=seed))
    rounds = adaptive_rounds(steps, curve, AdaptiveSettings())
    assert len(rounds) > 1 and len(chosen(rounds)) <= 0.35 * len(steps)
    dense = detect_transitions(curve, llc=VALUE, loss=None, llc_std=STD)
    adaptive = detect_transitions(curve.loc[chosen(rounds)], llc=VALUE, loss=None, llc_std=STD, point_steps=steps)
    assert list(adaptive["type"]) == list(dense["type"])
    for k in range(1, len(dense)):
        if {dense["type"][k - 1], dense["type"][k]} == {"A", "B"}:
            distance = abs(steps.index(int(dense["start_step"][k])) - steps.index(int(adaptive["start_step"][k])))
            assert distance <= 1, (k, dense["start_step"][k], adaptive["start_step"][k])


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
