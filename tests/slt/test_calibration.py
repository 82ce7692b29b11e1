"""`calibrate` follows its stated rule (devinterp.slt.calibration) and respects its budget."""
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from devinterp.slt import CalibrationResult, calibrate, default_nbeta
from devinterp.slt.calibration import (BURNIN_RELAXATIONS, MIN_LOCALIZATION, NOISE_TARGET, STEP_CURVATURE_PRODUCT,
                                       _choose)
from devinterp.slt.geometry import noise_ratio

from tests.slt.ground_truth import GroundTruthCase, build_case
from tests.slt.problems import Potential, half_squared_error

KEYS = {"step_size", "nbeta", "localization", "batch_size", "num_chains", "num_draws", "num_burnin", "sampler"}


def quadratic_loss(model, batch):
    """K = ½ h ‖w‖² with h = 3 in 4 dimensions: λ = 2, top curvature 3 everywhere."""
    return 1.5 * (model.w**2).sum()


def test_rule_on_a_quadratic_with_known_curvature():
    data = TensorDataset(torch.zeros(5000, 1))
    result = calibrate(Potential(torch.zeros(4)), quadratic_loss, data)
    assert isinstance(result, CalibrationResult) and set(result.recommended) == KEYS
    rec, nbeta = result.recommended, default_nbeta(5000)
    assert rec["nbeta"] == pytest.approx(nbeta) and rec["localization"] == pytest.approx(nbeta / 100)
    kappa = nbeta * 3.0 + rec["localization"]
    assert rec["step_size"] * kappa == pytest.approx(STEP_CURVATURE_PRODUCT, rel=0.02)
    assert rec["num_burnin"] == math.ceil(BURNIN_RELAXATIONS / (rec["step_size"] * rec["localization"]))
    assert rec["batch_size"] == 256  # no data noise: the smallest allowed batch
    assert result.problems == [] and len(result.table) >= 1
    assert abs(result.localization_change) < 0.2  # a quadratic's λ̂ barely feels γ: no localization problem


def test_batch_is_chosen_for_the_gradient_noise():
    model, data, _ = build_case(GroundTruthCase((3, 2, 3), 1, 20000, seed=5))
    result = calibrate(model, half_squared_error, data, max_steps=4000)
    rec = result.recommended
    noise = result.table.noise_scale.iloc[-1]
    assert noise > 0
    assert noise_ratio(noise, rec["step_size"], rec["nbeta"], rec["batch_size"], 20000) <= NOISE_TARGET
    if rec["batch_size"] < 20000:  # the smallest power of two that does it
        half = rec["batch_size"] // 2
        assert half < 256 or noise_ratio(noise, rec["step_size"], rec["nbeta"], half, 20000) > NOISE_TARGET


def test_too_small_a_budget_is_stated_not_hidden():
    data = TensorDataset(torch.zeros(5000, 1))
    with pytest.warns(RuntimeWarning, match="step size raised"):
        result = calibrate(Potential(torch.zeros(4)), quadratic_loss, data, max_steps=200)
    rec = result.recommended
    assert rec["num_burnin"] + rec["num_draws"] <= 200
    assert any("max_steps=200" in p for p in result.problems)


def test_a_step_raised_for_the_budget_gets_a_batch_for_its_noise():
    # a sharp minimum (h nβ ≈ 5e5): the rule's ε needs ~1 900 burn-in steps, more than max_steps holds
    common = dict(curvature=3000.0, noise_scale=150.0, nbeta=160.0, gamma=1000.0, n=1123, max_steps=400,
                  max_step=math.inf)
    rule = _choose(**common, min_batch=16, max_batch=16)
    assert any("step size raised" in p for p in rule.problems) and any("largest batch 16" in p for p in rule.problems)
    raised = _choose(**common, min_batch=16, max_batch=1024)
    assert raised.step_size == rule.step_size and 16 < raised.batch_size < 1024
    assert noise_ratio(150.0, raised.step_size, 160.0, raised.batch_size, 1123) <= NOISE_TARGET
    assert not any("minibatch noise" in p for p in raised.problems)


def test_calibrate_passes_params_through_and_validates():
    model = Potential(torch.zeros(4))
    mask = {"w": torch.tensor([True, True, False, False])}
    data = TensorDataset(torch.zeros(1000, 1))
    result = calibrate(model, quadratic_loss, data, params=mask, max_steps=2000)
    assert result.recommended["params"] is mask
    # n = 1000: nβ / 100 = 1.45, below the floor
    assert result.recommended["localization"] == MIN_LOCALIZATION > default_nbeta(1000) / 100
    with pytest.raises(ValueError, match="localization"):
        calibrate(model, quadratic_loss, data, localization=-1.0)
    with pytest.raises(ValueError, match="max_steps"):
        calibrate(model, quadratic_loss, data, max_steps=10)


def quartic_loss(model, batch):
    """K = Σ w_i⁴ in 4 dimensions: λ = 4 · 1/4 = 1."""
    return (model.w**4).sum()


@pytest.mark.slow(seconds=25)
def test_a_localization_dominated_estimate_is_flagged():
    # Under γ = nβ/100 the localization's width shrinks like (nβ)^(-1/2), the quartic posterior's only
    # like (nβ)^(-1/4): at n = 1e5 the localized mean is ~25 % low (numerical integral: 0.74 for λ = 1)
    # and tripling γ moves it by ~45 %, while the chains themselves are healthy.
    data = TensorDataset(torch.zeros(100_000, 1))
    with pytest.warns(RuntimeWarning, match="localization triples"):
        result = calibrate(Potential(torch.zeros(4)), quartic_loss, data)
    assert result.localization_change < -0.3
    assert result.table.localization.iloc[-1] == pytest.approx(3 * result.recommended["localization"])

