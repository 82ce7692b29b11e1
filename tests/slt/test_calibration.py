import math

import pytest
import torch
from torch.utils.data import TensorDataset

from devinterp.slt import CalibrationResult, calibrate, estimate_llc

from tests.slt.problems import Potential


def quadratic_loss(model, batch):
    """K = ½‖w‖² in 4 dimensions: λ = 2."""
    return 0.5 * (model.w**2).sum()


DATA = TensorDataset(torch.zeros(1000, 1))  # nβ = 144.8


def test_calibrate_table_recommendation_and_round_trip():
    model = Potential(torch.zeros(4))
    step_sizes = [1e-4, 3e-4, 6e-4, 1e-3, 2e-3, 1e-2, 1e-1]
    result = calibrate(model, quadratic_loss, DATA, step_sizes=step_sizes, localizations=[1.0, 100.0],
                       num_chains=4, num_draws=400, num_burnin=100, batch_size=1)
    assert isinstance(result, CalibrationResult)
    table = result.table
    assert len(table) == len(step_sizes) * 2
    for column in ("step_size", "nbeta", "localization", "llc", "std", "rhat", "ess", "num_diverged",
                   "fraction_below_init", "mean_distance", "stable", "on_plateau", "recommended"):
        assert column in table
    assert table.recommended.sum() == 1
    # ε·nβ·h = 0.1 · 144.8 > 4: the Euler scheme is unstable, those chains must diverge and be flagged
    big = table[table.step_size == 1e-1]
    assert (big.num_diverged > 0).all() and not big.stable.any()
    # the rule prefers the smaller localization (γ = 100 biases a regular model's λ̂ down by 1/(1 + γ/nβ))
    rec = result.recommended
    assert rec["localization"] == 1.0 and rec["nbeta"] == pytest.approx(1000 / math.log(1000))
    assert table.loc[table.recommended, "on_plateau"].item()
    assert set(rec) >= {"step_size", "nbeta", "localization", "batch_size", "sampler"}
    assert rec["step_size"] < 1e-1
    res = estimate_llc(model, quadratic_loss, DATA, num_chains=4, num_draws=1000, num_burnin=100, **rec)
    assert res.mean == pytest.approx(2.0, rel=0.15)


def test_calibrate_warns_when_nothing_is_stable():
    model = Potential(torch.zeros(2))
    with pytest.warns(RuntimeWarning, match="no stable cell"):
        result = calibrate(model, quadratic_loss, DATA, step_sizes=[0.5, 1.0], num_chains=2, num_draws=20,
                           batch_size=1)
    assert result.recommended["step_size"] == 0.5
    assert not result.table.stable.any()


def test_calibrate_passes_params_through():
    model = Potential(torch.zeros(4))
    mask = {"w": torch.tensor([True, True, False, False])}
    result = calibrate(model, quadratic_loss, DATA, step_sizes=[1e-4, 1e-3, 3e-3], localizations=[1.0],
                       params=mask, num_chains=2, num_draws=100, batch_size=1)
    assert result.recommended["params"] is mask
