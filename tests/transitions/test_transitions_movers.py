"""stage_movers: the metrics that move most over a stage, relative to their range over the run."""
import numpy as np
import pandas as pd
import pytest

from devinterp.transitions import detect_transitions, describe_movers, stage_movers
from devinterp.transitions.synthetic import eased_curve, make_scenario


def with_model_metrics(run) -> pd.DataFrame:
    """The A-B-A scenario (B over steps 150-600) plus what the model does: the LayerNorm gain
    collapses in the B stage, the Hessian trace falls a little there, the weight norm grows all along."""
    wide = run.wide()
    wide["weights/ln_gain"] = eased_curve(run.steps, (0, 150, 600, 2000), (1.0, 1.0, 0.2, 0.2))
    wide["hessian/trace"] = eased_curve(run.steps, (0, 150, 600, 2000), (10.0, 50.0, 45.0, 60.0))
    wide["weights/norm"] = 5.0 + np.log1p(run.steps)
    wide["weights/constant"] = 1.0
    return wide


def test_movers_rank_by_change_relative_to_range():
    run = make_scenario("A-B-A", llc_noise=0.5, seed=0)
    wide = with_model_metrics(run)
    names = ["weights/ln_gain", "hessian/trace", "weights/norm", "weights/constant", "eval/icl_score"]
    rise, fall, late = stage_movers(wide, [(0, 150), (150, 600), (600, 2000)], names)
    assert [m.name for m in fall][:1] == ["weights/ln_gain"]
    assert fall[0].fraction == pytest.approx(-1.0) and fall[0].change == pytest.approx(-0.8)
    trace = next(m for m in fall if m.name == "hessian/trace")
    assert trace.fraction == pytest.approx(-5 / 50, rel=0.02)  # the running median trims the peak at 150 a little
    assert rise[0].name == "hessian/trace" and rise[0].fraction == pytest.approx(0.8, rel=1e-3)
    assert "weights/ln_gain" not in [m.name for m in rise] + [m.name for m in late]  # flat there
    assert all(m.name != "weights/constant" for stage in (rise, fall, late) for m in stage)  # no range, no mover
    assert len(fall) <= 3


def test_no_extrapolation_and_bad_arguments():
    wide = pd.DataFrame({"weights/norm": [1.0, 2.0, 3.0]}, index=pd.Index([100, 200, 300], name="step"))
    assert stage_movers(wide, [(0, 200), (100, 300)], ["weights/norm"]) == [(), stage_movers(
        wide, [(100, 300)], ["weights/norm"])[0]]
    with pytest.raises(ValueError, match="top"):
        stage_movers(wide, [(0, 1)], top=0)


def test_describe_movers():
    run = make_scenario("A-B-A", llc_noise=0.5, seed=0)
    (fall,) = stage_movers(with_model_metrics(run), [(150, 600)], ["weights/ln_gain", "hessian/trace"])
    assert describe_movers(fall) == "movers: weights/ln_gain −100 % of range, hessian/trace −10 %"
    assert describe_movers(()) == ""


def test_detect_transitions_names_the_movers_of_the_b_stage():
    run = make_scenario("A-B-A", llc_noise=0.5, seed=0)
    stages = detect_transitions(with_model_metrics(run), llc_std="llc/std",
                                movers=["weights/*", "hessian/trace", "induction/icl_score"])
    assert list(stages["type"]) == ["A", "B", "A"]
    b = stages[stages["type"] == "B"].iloc[0]
    assert "movers: weights/ln_gain −" in b["evidence"]
    without = detect_transitions(run.wide(), llc_std="llc/std")
    assert not without["evidence"].str.contains("movers").any()


def test_a_one_checkpoint_spike_does_not_set_the_range():
    # the trace halves over the second stage; one spike (a loss spike's Hessian) is 10x everything else
    trace = [10.0, 10.0, 10.0, 10.0, 8.0, 6.0, 5.0, 100.0, 5.0, 5.0]
    wide = pd.DataFrame({"hessian/trace": trace}, index=pd.Index([0, 1, 2, 4, 8, 16, 32, 64, 128, 256], name="step"))
    (first,), (second,) = stage_movers(wide, [(0, 4), (4, 256)], ["hessian/trace"], min_fraction=0.0)
    assert first.fraction == pytest.approx(0.0) and second.fraction == pytest.approx(-1.0)
