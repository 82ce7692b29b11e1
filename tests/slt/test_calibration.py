"""`calibrate` follows its stated rule (devinterp.slt.calibration) and respects its budget."""
import math

import pytest
import torch
from torch.utils.data import TensorDataset

from devinterp.slt import CalibrationResult, calibrate, calibration, default_nbeta
from devinterp.slt.calibration import (BURNIN_RELAXATIONS, FLAT_STEPS, MIN_BURNIN_RELAXATIONS, MIN_LOCALIZATION,
                                       NOISE_TARGET, PROBE_DRAWS, SLOW_MODE_RELAXATIONS, _Budget, _choose,
                                       _first_flat_step, _Geometry)
from devinterp.slt.geometry import noise_inflation

from tests.slt.ground_truth import GroundTruthCase, build_case
from tests.slt.problems import Potential, half_squared_error

KEYS = {"step_size", "nbeta", "localization", "batch_size", "num_chains", "num_draws", "num_burnin", "min_burnin",
        "sampler", "preconditioner", "stability_retries"}


def quadratic_loss(model, batch):
    """K = ½ h ‖w‖² with h = 3 in 4 dimensions: λ = 2, top curvature 3 everywhere."""
    return 1.5 * (model.w**2).sum()


def test_rule_on_a_quadratic_with_known_curvature():
    data = TensorDataset(torch.zeros(5000, 1))
    result = calibrate(Potential(torch.zeros(4)), quadratic_loss, data)
    assert isinstance(result, CalibrationResult) and set(result.recommended) == KEYS
    rec, nbeta = result.recommended, default_nbeta(5000)
    assert rec["nbeta"] == pytest.approx(nbeta) and rec["localization"] == pytest.approx(nbeta / 100)
    # the diagonal preconditioner makes every direction relax like a flat one (κ_P = γ): the budget's first
    # flat step (0.005 at the default 20 000 steps) holds, since λ̂ does not move when ε halves (lm_sgld is
    # exact on a Gaussian)
    assert rec["preconditioner"] == "diagonal" and rec["sampler"] == "lm_sgld"
    assert result.table.curvature.iloc[0] == pytest.approx(rec["localization"], rel=0.02)
    assert rec["step_size"] * rec["localization"] == pytest.approx(FLAT_STEPS[_first_flat_step(20_000)])
    assert rec["num_burnin"] >= math.ceil(BURNIN_RELAXATIONS / (rec["step_size"] * rec["localization"]))
    # the settled burn-in starts at 2 relaxations of the flat step (400 steps at s = 0.005), or as long as the
    # draws up to 32 relaxations, and at most at the rule's burn-in
    flat_step = rec["step_size"] * rec["localization"]
    slow = min(rec["num_draws"], math.ceil(SLOW_MODE_RELAXATIONS / flat_step))
    assert rec["min_burnin"] == min(max(math.ceil(MIN_BURNIN_RELAXATIONS / flat_step), slow), rec["num_burnin"])
    assert rec["batch_size"] == 256  # no data noise: the smallest allowed batch
    # (the check's probes are 200 draws, one relaxation at s = 0.005: it cannot see a few percent here, and
    # only halves s for a fall beyond twice its standard error)
    assert (result.table.kind == "half step").sum() == 1
    assert result.problems == [] and len(result.table) >= 1
    assert abs(result.localization_change) < 0.2  # a quadratic's λ̂ barely feels γ: no localization problem
    # its probes mix slowly (ESS ~10 of 800 draws): the check at γ is a probe of its own, with more draws
    check = result.table[result.table.kind == "localization γ"]
    assert len(check) == 1 and check.num_draws.iloc[0] > PROBE_DRAWS


def test_the_last_probe_is_the_localization_check_at_gamma_where_its_draws_suffice(monkeypatch):
    """The check at γ needs the recommended settings and draws for its standard error. Where a probe's draws
    suffice (as on the presets' checkpoints, ESS 290-505), the last probe is the check and is not run again.
    (A quadratic's probes mix slowly, so without the patch the check runs with more draws: the test above.)"""
    monkeypatch.setattr(calibration, "_size_draws", lambda *args: PROBE_DRAWS)  # as if the probe's ESS sufficed
    reused = calibrate(Potential(torch.zeros(4)), quadratic_loss, TensorDataset(torch.zeros(5000, 1)), max_steps=400)
    table = reused.table
    assert table.kind.tolist() == ["probe", "half step", "localization 3γ"]
    assert reused.localization_change == pytest.approx(table.llc.iloc[-1] / table.llc.iloc[0] - 1)


def test_batch_is_chosen_for_the_gradient_noise():
    model, data, _ = build_case(GroundTruthCase((3, 2, 3), 1, 20000, seed=5))
    result = calibrate(model, half_squared_error, data, max_steps=4000)
    rec = result.recommended
    probes = result.table[result.table.kind == "probe"]
    noise, llc = probes.noise.max(), probes.llc.iloc[-1]  # the largest noise seen, the last probe's λ̂
    assert noise > 0
    assert noise_inflation(noise, rec["step_size"], rec["nbeta"], rec["batch_size"], 20000) <= NOISE_TARGET * llc
    if rec["batch_size"] < 20000:  # the smallest power of two that does it
        half = rec["batch_size"] // 2
        assert half < 256 or noise_inflation(noise, rec["step_size"], rec["nbeta"], half, 20000) > NOISE_TARGET * llc


def test_too_small_a_budget_is_stated_not_hidden():
    data = TensorDataset(torch.zeros(5000, 1))
    with pytest.warns(RuntimeWarning, match="step size raised"):
        result = calibrate(Potential(torch.zeros(4)), quadratic_loss, data, max_steps=200)
    rec = result.recommended
    assert rec["num_burnin"] + rec["num_draws"] <= 200
    assert any("max_steps=200" in p for p in result.problems)


def test_a_step_raised_for_the_budget_gets_a_batch_for_its_noise():
    # a sharp minimum (κ_P = 300 γ): the rule's ε needs 1 200 burn-in steps, more than max_steps holds
    geometry = _Geometry(curvature=3e5, noise=20_000.0, llc=600.0)
    rule = _choose(geometry, _Budget(160.0, 1000.0, 1123, min_batch=16, max_batch=16, max_steps=400), FLAT_STEPS[0],
                   math.inf)
    assert any("step size raised" in p for p in rule.problems) and any("largest batch 16" in p for p in rule.problems)
    raised = _choose(geometry, _Budget(160.0, 1000.0, 1123, min_batch=16, max_batch=1024, max_steps=400),
                     FLAT_STEPS[0], math.inf)
    assert raised.step_size == rule.step_size and 16 < raised.batch_size < 1024
    assert noise_inflation(20_000.0, raised.step_size, 160.0, raised.batch_size, 1123) <= NOISE_TARGET * 600.0
    assert not any("minibatch noise" in p for p in raised.problems)


def test_a_probe_below_the_anchor_lowers_the_step_by_its_magnitude():
    # a probe of an untrained model can read λ̂ < 0; where the batch cannot hold the noise, ε is lowered by
    # |λ̂| (it once took λ̂'s sign, and a negative ε made a negative burn-in)
    budget = _Budget(160.0, 1000.0, 1123, min_batch=16, max_batch=16, max_steps=400)
    above = _choose(_Geometry(curvature=1e3, noise=20_000.0, llc=5.0), budget, FLAT_STEPS[0], math.inf)
    below = _choose(_Geometry(curvature=1e3, noise=20_000.0, llc=-5.0), budget, FLAT_STEPS[0], math.inf)
    assert below == above and below.step_size > 0 and below.num_burnin > 0


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
    # and tripling γ moves it by 42 % (0.74 → 0.43; the check flags 30 %), while the chains themselves are healthy.
    data = TensorDataset(torch.zeros(100_000, 1))
    with pytest.warns(RuntimeWarning, match="localization triples"):
        result = calibrate(Potential(torch.zeros(4)), quartic_loss, data)
    assert result.localization_change < -0.3
    assert result.table.localization.iloc[-1] == pytest.approx(3 * result.recommended["localization"])

