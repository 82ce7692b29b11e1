"""Supporting transition signals: loss bumps / drops and score jumps."""
import numpy as np
import pytest

from devinterp.transitions import detect_transitions, transition_signals
from devinterp.transitions.signals import signal_events
from devinterp.transitions.smoothing import log_step
from devinterp.transitions.synthetic import checkpoint_steps, eased_curve, make_scenario


def test_loss_bump_is_found_as_rise_then_peak():
    steps = checkpoint_steps()
    rng = np.random.default_rng(0)
    loss = eased_curve(steps, (0, 100, 300, 500, 2000), (7.0, 4.0, 4.4, 3.5, 3.0)) + 0.02 * rng.standard_normal(len(steps))
    ev = signal_events(steps, loss, "eval/loss")
    peaks = ev[ev["kind"] == "peak"]
    assert len(peaks) == 1 and abs(log_step(peaks["step"].iloc[0]) - log_step(300)) < 0.3
    assert (ev["kind"] == "rise").sum() == 1 and (ev["kind"] == "trough").sum() == 1
    assert np.all(np.abs(ev["z"]) >= 3)


def test_no_events_on_flat_noise():
    steps = checkpoint_steps()
    hits = 0
    for seed in range(10):
        y = 1.0 + 0.1 * np.random.default_rng(seed).standard_normal(len(steps))
        hits += len(signal_events(steps, y, "noise")) > 0
    assert hits <= 1


def test_icl_score_drop_appears_in_the_evidence_of_its_stage():
    run = make_scenario("A-B-A", llc_noise=0.5, seed=0)
    wide = run.wide()
    rng = np.random.default_rng(1)
    # ICL score drops sharply around step ~300 (inside the true B stage 150..600)
    wide["icl/score"] = eased_curve(run.steps, (0, 220, 400, 2000), (0.0, 0.0, -1.0, -1.0)) + 0.02 * rng.standard_normal(len(run.steps))
    wide["heads/prefix/L1H0"] = eased_curve(run.steps, (0, 220, 400, 2000), (0.1, 0.1, 0.9, 0.9)) + 0.02 * rng.standard_normal(len(run.steps))
    ev = transition_signals(wide, icl_score="icl/score", prefix_matching="heads/prefix/*")
    icl = ev[(ev["name"] == "icl/score") & (ev["kind"] == "drop")]
    pm = ev[(ev["name"] == "heads/prefix/L1H0") & (ev["kind"] == "rise")]
    assert len(icl) == 1 and 220 <= icl["step"].iloc[0] <= 400
    assert len(pm) == 1 and 220 <= pm["step"].iloc[0] <= 400
    stages = detect_transitions(wide, llc_std="llc/std", icl_score="icl/score", prefix_matching="heads/prefix/*")
    stage = stages[(stages["start_step"] <= 300) & (stages["end_step"] > 300)].iloc[0]
    assert stage["type"] == "B"
    assert "icl/score drop" in stage["evidence"] and "heads/prefix/L1H0 rise" in stage["evidence"]
    assert any(e["name"] == "icl/score" for e in stages.attrs["signals"])


def test_missing_optional_signal_is_skipped_with_a_warning():
    run = make_scenario("A-B-A", llc_noise=0.5, seed=0)
    with pytest.warns(UserWarning, match="icl/absent"):
        ev = transition_signals(run.long(), icl_score="icl/absent")
    assert set(ev.columns) == {"step", "name", "kind", "magnitude", "z"}
    assert set(ev["name"]) <= {"eval/loss"}
    empty = transition_signals(run.long(), loss=None, prefix_matching="heads/*")  # glob matching nothing
    assert len(empty) == 0 and list(empty.columns) == ["step", "name", "kind", "magnitude", "z"]
    with pytest.raises(ValueError, match="extra"):
        transition_signals(run.long(), extra="eval/loss")
