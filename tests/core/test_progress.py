"""Time left from measured costs, and the bar's labels."""
import pytest

from devinterp.core.progress import CostModel, format_time_left, measuring_label


def test_cost_model_estimates_from_mean_costs_and_flags_unknown_ones():
    costs = CostModel()
    assert costs.mean("llc") is None
    costs.record("llc", 4.0)
    costs.record("llc", 2.0)
    costs.record("loss", 0.5)
    assert costs.mean("llc") == pytest.approx(3.0)
    assert costs.estimate({"llc": 10, "loss": 4}) == (pytest.approx(32.0), True)
    assert costs.estimate({"llc": 1, "hessian": 3}) == (pytest.approx(3.0), False)  # hessian not measured yet
    assert costs.estimate({"hessian": 0}) == (0.0, True)
    assert format_time_left(3725.0) == "eta 1:02:05"
    assert format_time_left(65.0, known=False) == "eta ≥ 01:05"
    assert format_time_left(None) == "eta ?"
    assert measuring_label("llc", 290) == "llc @ step 290"
