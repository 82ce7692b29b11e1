"""mark_robustness: a stage that does not reappear (same type, overlapping steps) in every other
stage table is fragile."""
import pandas as pd

from devinterp.transitions import detect_transitions, mark_chain_spread, mark_robustness, stage_robustness
from devinterp.transitions.synthetic import make_run, make_scenario


def table(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["start_step", "end_step", "type"]).assign(evidence="e")


def test_overlap_semantics():
    primary = table((0, 100, "A"), (100, 500, "B"), (500, 900, "other"))
    touching = table((0, 500, "A"), (500, 900, "B"))  # its B only shares step 500 with the primary's B
    shifted = table((0, 200, "A"), (200, 900, "B"))
    verdicts = stage_robustness(primary, {"touching": touching, "shifted": shifted})
    assert verdicts[0].found_in == ("touching", "shifted") and not verdicts[0].fragile
    assert verdicts[1].missing_in == ("touching",) and verdicts[1].found_in == ("shifted",) and verdicts[1].fragile
    assert verdicts[2] is None  # plateaus are not judged
    assert stage_robustness(primary, {}) == [None, None, None]


def test_fragile_wins_and_evidence_says_where():
    primary = table((0, 100, "A"), (100, 500, "B"))
    marked = mark_robustness(primary, {"γ=30": table((0, 100, "A"), (100, 500, "B"))}, "LLC settings")
    assert list(marked["robustness"]) == ["robust", "robust"]
    marked = mark_robustness(marked, {"seed1": table((0, 500, "A"))}, "seeds")
    assert list(marked["robustness"]) == ["robust", "fragile"]
    assert marked["evidence"].iloc[1] == ("e; robust across LLC settings: also in γ=30; "
                                          "fragile across seeds: no B overlapping in seed1")
    assert "robustness" not in primary.columns  # not modified


def test_b_stage_of_a_synthetic_run_is_fragile_without_a_b_in_the_other_series():
    primary = detect_transitions(make_scenario("A-B-A", llc_noise=0.5, seed=0).wide(), llc_std="llc/std")
    with_b = detect_transitions(make_scenario("A-B-A", llc_noise=0.5, seed=1).wide(), llc_std="llc/std")
    only_rise = detect_transitions(make_run((0, 150, 2000), (2.0, 12.0, 12.0), (8.0, 4.0, 3.0), ("A", "other"),
                                            llc_noise=0.5, seed=2).wide(), llc_std="llc/std")
    assert list(primary["type"]) == ["A", "B", "A"] and "B" not in set(only_rise["type"])
    robust = mark_robustness(primary, {"seed1": with_b}, "seeds")
    assert list(robust["robustness"]) == ["robust", "robust", "robust"]
    fragile = mark_robustness(primary, {"seed1": with_b, "no-B": only_rise}, "seeds")
    assert fragile["robustness"].iloc[1] == "fragile" and fragile["robustness"].iloc[0] == "robust"
    assert "no B overlapping in no-B" in fragile["evidence"].iloc[1]


def test_a_stage_within_the_chain_spread_is_fragile():
    stages = table((0, 100, "A"), (100, 500, "B"), (500, 900, "other")).assign(
        llc_start=[1.0, 11.0, 10.0], llc_end=[11.0, 10.0, 10.0])
    metrics = pd.DataFrame({"step": [0, 50, 100, 300, 500, 900], "llc/std": [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]})
    marked = mark_chain_spread(stages, metrics, "llc/std")
    assert list(marked["robustness"]) == ["robust", "fragile", ""]  # A moved 5 spreads, B 0.5; plateaus not judged
    assert "0.5× the median std over chains" in marked["evidence"].iloc[1]
    # a stage already fragile across seeds stays fragile
    fragile_a = mark_robustness(stages, {"seed1": table((100, 500, "B"))}, "seeds")
    assert mark_chain_spread(fragile_a, metrics, "llc/std")["robustness"].iloc[0] == "fragile"
