"""Behaviour of `estimate_llc` beyond accuracy: API, determinism, no side effects, diagnostics."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from devinterp.models.attention_only import AttnOnlyConfig, AttnOnlyTransformer, head_parameter_masks
from devinterp.slt import LLCResult, default_nbeta, estimate_llc
from devinterp.slt.llc import END_CURVATURE_SAMPLES, END_CURVATURE_SCREEN_SAMPLES, MAX_NOISE_INFLATION, curvature_at_end
from devinterp.slt.sampler import VMAP_MAX_FLOPS, FunctionalProblem, run_chains, vmap_pays_off

from tests.slt.problems import Potential, half_squared_error


def quadratic_loss(model, batch):
    """K(w) = ½ Σ w_i², a regular potential with λ = d/2 (the batch only sets n)."""
    return 0.5 * (model.w**2).sum()


def potential_data(n: int = 1000) -> TensorDataset:
    return TensorDataset(torch.zeros(n, 1))


def small_mlp_problem(n: int = 256):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=gen)
    y = torch.sin(x.sum(-1, keepdim=True)) + 0.1 * torch.randn(n, 1, generator=gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    return model, TensorDataset(x, y)


def tiny_transformer():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AttnOnlyTransformer(AttnOnlyConfig(vocab_size=16, n_ctx=16, d_model=16, n_heads=2))
    data = TensorDataset(torch.randint(0, 16, (64, 16), generator=torch.Generator().manual_seed(1)))
    return model, data


def lm_loss(model, batch):
    return model(batch[0], labels=batch[0]).loss


def test_result_fields_shapes_and_conventions():
    model = Potential(torch.zeros(4))
    data = potential_data(1000)
    res = estimate_llc(model, quadratic_loss, data, num_chains=3, num_draws=50, num_burnin=10, step_size=1e-3)
    assert isinstance(res, LLCResult)
    assert res.loss_trace.shape == (3, 50) and res.per_chain.shape == (3,)
    assert res.nbeta == pytest.approx(1000 / math.log(1000)) == default_nbeta(1000)
    assert res.init_loss == 0.0
    assert res.mean == pytest.approx(res.per_chain.mean())
    assert res.std == pytest.approx(res.per_chain.std(ddof=1))
    np.testing.assert_allclose(res.per_chain, res.nbeta * (res.loss_trace.mean(axis=1) - res.init_loss))
    np.testing.assert_allclose(res.llc_trace.mean(axis=1), res.per_chain)
    d = res.diagnostics
    for key in ("rhat", "ess", "stderr", "trend", "trend_z", "fraction_below_init", "diverged", "num_diverged",
                "mean_distance", "negative_llc", "noise_init", "noise", "noise_inflation", "control_variate",
                "vectorized", "fallback_reason", "step_halvings", "preconditioner", "sampler"):
        assert key in d
    assert "init_grad_norm" not in d  # an extra pass over the data, only when asked
    assert d["vectorized"] and d["fallback_reason"] is None and d["num_diverged"] == 0
    assert d["num_sampled_params"] == 4 and d["mean_distance"] > 0
    assert d["fraction_below_init"] == 0.0  # K >= 0 = K(w*)


def test_first_draw_is_the_loss_before_any_update():
    model = Potential(torch.zeros(2))
    res = estimate_llc(model, quadratic_loss, potential_data(), num_chains=2, num_draws=5)
    assert (res.loss_trace[:, 0] == 0.0).all() and (res.loss_trace[:, 1:] > 0).all()


@pytest.mark.filterwarnings("ignore:estimate_llc. negative LLC")  # the untrained MLP is no minimum
def test_same_seed_same_result_different_seed_different_chains():
    model, data = small_mlp_problem()
    kwargs = dict(num_chains=2, num_draws=30, step_size=1e-4, batch_size=32)
    a = estimate_llc(model, half_squared_error, data, seed=3, **kwargs)
    b = estimate_llc(model, half_squared_error, data, seed=3, **kwargs)
    c = estimate_llc(model, half_squared_error, data, seed=4, **kwargs)
    np.testing.assert_array_equal(a.loss_trace, b.loss_trace)
    assert a.mean == b.mean
    assert not np.allclose(a.loss_trace[:, 1:], c.loss_trace[:, 1:])
    assert not np.allclose(a.loss_trace[0], a.loss_trace[1])  # chains of one run differ too


def test_noise_is_drawn_per_sampled_tensor_in_parameter_order():
    """The noise stream is a convention results depend on: one torch.randn((chains, *shape)) per sampled
    tensor, in named_parameters order, from a generator seeded with `seed` (a flat state must not
    change it). With nβ = 0 the first step from w* is pure noise: w* + √ε · noise on the masked entries."""
    model, data = small_mlp_problem()
    masks = {"0.weight": torch.rand(8, 3, generator=torch.Generator().manual_seed(0)) < 0.5,
             "2.bias": torch.ones(1, dtype=torch.bool)}
    problem = FunctionalProblem(model, half_squared_error, masks, None)
    run = run_chains(problem, data, num_chains=3, num_steps=1, step_size=1e-2, nbeta=0.0, localization=1.0,
                     init_loss=0.0, batch_size=32, sampler="sgld", seed=7)
    gen = torch.Generator().manual_seed(7)
    for name, mask in masks.items():
        w_star = dict(model.named_parameters())[name].detach()
        noise = torch.randn((3, *w_star.shape), generator=gen)
        torch.testing.assert_close(problem.unflatten(run.final_weights)[name], w_star + math.sqrt(1e-2) * noise * mask, rtol=1e-6, atol=0)


@pytest.mark.filterwarnings("ignore:estimate_llc. negative LLC")
def test_model_arguments_and_global_rng_untouched():
    model, data = small_mlp_problem()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    masks = {"0.weight": torch.ones(8, 3, dtype=torch.bool)}
    masks_before = {k: v.clone() for k, v in masks.items()}
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    estimate_llc(model, half_squared_error, data, num_chains=2, num_draws=20, params=masks)
    assert torch.equal(torch.get_rng_state(), rng_before)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert masks.keys() == masks_before.keys() and torch.equal(masks["0.weight"], masks_before["0.weight"])


def test_params_restricts_sampling_to_the_selected_entries():
    # K = ½‖w‖² in 6 dimensions: λ = 3 for all weights, 1 when 2 of them are sampled.
    model = Potential(torch.zeros(6))
    data = potential_data(20000)
    kwargs = dict(num_chains=4, num_draws=400, num_burnin=100, step_size=5e-5, localization=0.0)
    full = estimate_llc(model, quadratic_loss, data, **kwargs)
    mask = {"w": torch.tensor([True, False, False, True, False, False])}
    part = estimate_llc(model, quadratic_loss, data, params=mask, **kwargs)
    assert part.diagnostics["num_sampled_params"] == 2
    assert full.mean == pytest.approx(3.0, rel=0.15)
    assert part.mean == pytest.approx(1.0, rel=0.15)


def test_all_chains_diverging_warns_and_reports_nan_not_silently():
    model = Potential(torch.zeros(3))
    with pytest.warns(RuntimeWarning, match="all 4 chains diverged"):
        res = estimate_llc(model, quadratic_loss, potential_data(), num_chains=4, num_draws=50, step_size=1.0)
    assert math.isnan(res.mean) and res.diagnostics["all_diverged"] and res.diagnostics["num_diverged"] == 4
    assert (res.diagnostics["diverged_at_step"] >= 0).all()


def cliff_loss(model, batch):
    """½w² inside |w| < 2.2, +inf outside: chains that wander out diverge."""
    w = model.w
    return torch.where(w.abs() < 2.2, 0.5 * w**2, torch.full_like(w, float("inf"))).sum()


def test_some_chains_diverging_are_excluded_with_a_warning():
    model = Potential(torch.zeros(1))
    with pytest.warns(RuntimeWarning, match=r"of 8 chains diverged"):
        res = estimate_llc(model, cliff_loss, potential_data(), num_chains=8, num_draws=300,
                           step_size=0.1, nbeta=1.0, localization=0.0, seed=0)
    diverged = res.diagnostics["diverged"]
    assert 0 < diverged.sum() < 8
    assert np.isnan(res.per_chain[diverged]).all() and np.isfinite(res.per_chain[~diverged]).all()
    assert np.isfinite(res.mean) and res.mean == pytest.approx(res.per_chain[~diverged].mean())
    for chain, step in enumerate(res.diagnostics["diverged_at_step"]):
        if step >= 0:
            assert np.isnan(res.loss_trace[chain, step:]).all()


def test_negative_llc_is_reported_with_a_warning():
    # w* = 0 is not a minimum of ½(w - 1)²: chains descend and the loss falls below L_n(w*).
    model = Potential(torch.zeros(1))
    loss = lambda m, b: 0.5 * ((m.w - 1.0) ** 2).sum()  # noqa: E731
    with pytest.warns(RuntimeWarning, match="negative LLC"):
        res = estimate_llc(model, loss, potential_data(), num_chains=2, num_draws=100, step_size=1e-3, grad_norm=True)
    assert not res.healthy and any("negative LLC" in p for p in res.problems)
    assert res.mean < 0 and res.diagnostics["negative_llc"]
    assert res.diagnostics["fraction_below_init"] > 0.9
    assert res.diagnostics["init_grad_norm"] == pytest.approx(1.0)


class _ItemCallingModel(torch.nn.Module):
    """A module vmap cannot run (`.item()` inside forward)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3))

    def forward(self, x):
        scale = 1.0 if self.w.sum().item() < 1e6 else 0.0
        return scale * x * self.w.sum()


class _PlainModel(_ItemCallingModel):
    def forward(self, x):
        return x * self.w.sum()


def test_loop_fallback_for_modules_vmap_cannot_handle_matches_vectorized():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, generator=gen)
    data = TensorDataset(x, torch.randn(200, 1, generator=gen))
    kwargs = dict(num_chains=3, num_draws=40, step_size=1e-3, batch_size=16, seed=1)
    with pytest.warns(RuntimeWarning, match="falling back to a Python loop"):
        looped = estimate_llc(_ItemCallingModel(), half_squared_error, data, **kwargs)
    vectorized = estimate_llc(_PlainModel(), half_squared_error, data, **kwargs)
    assert not looped.diagnostics["vectorized"] and "Error" in looped.diagnostics["fallback_reason"]
    assert vectorized.diagnostics["vectorized"]
    np.testing.assert_allclose(looped.loss_trace, vectorized.loss_trace, rtol=1e-4)


def test_chains_loop_on_the_cpu_when_one_forward_pass_is_large():
    """vmap over chains only while one chain's forward pass is small (VMAP_MAX_FLOPS); above, a loop over
    chains with ordinary autograd, chosen by counted FLOPs (not timing) and not reported as a failure."""
    width, batch = 512, 256  # 2 · 512² · 256 = 134 MFLOP per forward pass
    assert 2 * width**2 * batch > VMAP_MAX_FLOPS > 2 * width**2 * 16
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(1024, width, generator=gen), torch.randn(1024, width, generator=gen))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Linear(width, width, bias=False)
    problem = FunctionalProblem(model, half_squared_error, None, None)
    assert not vmap_pays_off(problem, (data.tensors[0][:batch], data.tensors[1][:batch]))
    assert vmap_pays_off(problem, (data.tensors[0][:16], data.tensors[1][:16]))
    kwargs = dict(num_chains=2, num_draws=3, step_size=1e-6, localization=1e4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 3 draws: too short to be healthy
        looped = estimate_llc(model, half_squared_error, data, batch_size=batch, **kwargs)
        vectorized = estimate_llc(model, half_squared_error, data, batch_size=16, **kwargs)
    assert not looped.diagnostics["vectorized"] and looped.diagnostics["fallback_reason"] is None
    assert vectorized.diagnostics["vectorized"]
    assert np.isfinite(looped.loss_trace).all()


class _ListDataset(Dataset):
    """A plain (non-Tensor) dataset returning dicts, to exercise the default-collate path."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


@pytest.mark.filterwarnings("ignore:estimate_llc. negative LLC")
def test_generic_dataset_with_default_collate_matches_tensor_dataset():
    model, data = small_mlp_problem(128)
    x, y = data.tensors
    dict_loss = lambda m, b: 0.5 * ((b["y"] - m(b["x"])) ** 2).sum(-1).mean()  # noqa: E731
    kwargs = dict(num_chains=2, num_draws=20, step_size=1e-4, batch_size=16, seed=0)
    a = estimate_llc(model, half_squared_error, data, **kwargs)
    b = estimate_llc(model, dict_loss, _ListDataset(x, y), **kwargs)
    np.testing.assert_allclose(a.loss_trace, b.loss_trace, rtol=1e-5)


def test_attention_only_transformer_vectorized_and_per_head():
    model, data = tiny_transformer()
    kwargs = dict(num_chains=2, num_draws=30, step_size=1e-4, batch_size=8, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # 30 draws: too short to be healthy
        full = estimate_llc(model, lm_loss, data, **kwargs)
        head = estimate_llc(model, lm_loss, data, params=head_parameter_masks(model, 1, 0), **kwargs)
        layer = estimate_llc(model, lm_loss, data, params="blocks.1.*", **kwargs)
    for res in (full, head, layer):  # no fallback, no divergence, per-sample read-out on sequences
        assert res.diagnostics["vectorized"] and res.diagnostics["num_diverged"] == 0
        assert res.diagnostics["control_variate"]
    assert head.diagnostics["num_sampled_params"] == 3 * 8 * 16 + 3 * 8 + 16 * 8
    assert head.diagnostics["num_sampled_params"] < layer.diagnostics["num_sampled_params"]
    assert np.isfinite([full.mean, head.mean, layer.mean]).all()
    assert 0 < head.diagnostics["mean_distance"] < full.diagnostics["mean_distance"]


@pytest.mark.parametrize("bad", [dict(num_chains=0), dict(num_draws=0), dict(step_size=0.0),
                                 dict(localization=-1.0), dict(nbeta=-2.0), dict(sampler="hmc")])
def test_invalid_arguments_raise(bad):
    with pytest.raises(ValueError):
        estimate_llc(Potential(torch.zeros(1)), quadratic_loss, potential_data(10), **bad)


def test_rmsprop_sgld_runs_and_is_close_on_a_regular_model():
    model = Potential(torch.zeros(4))
    # λ = 2; RMSprop-SGLD has no Γ correction term, measured bias here is about +10%.
    res = estimate_llc(model, quadratic_loss, potential_data(20000), num_chains=4, num_draws=600,
                       num_burnin=300, step_size=3e-3, localization=0.0, sampler="rmsprop_sgld")
    assert res.diagnostics["sampler"] == "rmsprop_sgld"
    assert res.mean == pytest.approx(2.0, rel=0.2)


def test_the_divergence_rule_raises_no_false_alarm_on_healthy_chains():
    """Healthy chains, at n from 1e3 to 2e4, d from 16 to 290 and batches from 8 to n: none is declared
    diverged. (The rule it replaced, nβ·(minibatch loss − L_n(w*)) > 20·(d + 1), killed every chain
    here at batch 8 for n ≥ 1e4: the minibatch loss alone fluctuates by more than that.)"""
    from tests.slt.ground_truth import GroundTruthCase, build_case

    cases = [GroundTruthCase((2, 3, 2), 1, 1000, seed=1), GroundTruthCase((2, 2, 3, 2), 2, 20000, seed=2),
             GroundTruthCase((6, 11, 8, 2, 10, 10), 2, 5000, seed=3)]
    for case in cases:
        model, data, _ = build_case(case)
        nbeta = default_nbeta(case.n)
        step_size = 1 / (8 * nbeta * 20)  # well inside stability for these curvatures (h < 20)
        for batch_size in (8, 64, case.n):
            res = estimate_llc(model, half_squared_error, data, num_chains=4, num_draws=200, step_size=step_size,
                               localization=nbeta / 100, batch_size=batch_size)
            assert res.diagnostics["num_diverged"] == 0, (case.name, batch_size)


def test_health_verdict_names_each_problem():
    model = Potential(torch.zeros(4))
    data = potential_data(20000)  # nβ = 2019
    good = estimate_llc(model, quadratic_loss, data, num_chains=4, num_draws=600, num_burnin=100, step_size=6e-5,
                        localization=20.0, batch_size=20000)
    assert good.healthy and good.problems == [] and good.mean == pytest.approx(2.0, rel=0.15)
    with pytest.warns(RuntimeWarning, match="traces still rising"):
        # ε·γ = 1e-7: the localization alone needs ~1e7 steps; without burn-in the chains creep up from w*
        slow = estimate_llc(Potential(torch.zeros(200)), lambda m, b: 1e-5 * (m.w**2).sum(), data, num_chains=4,
                            num_draws=400, step_size=1e-7, localization=1.0, batch_size=20000)
    assert not slow.healthy and any("add burn-in" in p for p in slow.problems)


def fitted_regression(exact: bool = False) -> tuple[torch.nn.Module, TensorDataset]:
    """Linear regression on 20 000 samples x ~ N(0, I₂) with targets N(0, 1) (or, `exact`, x·w without
    noise), the model at the least-squares fit: λ = d/2 = 1."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 2, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([[0.5], [-1.0]], dtype=torch.float64) if exact else torch.randn(20000, 1, generator=gen,
                                                                                         dtype=torch.float64)
    model = torch.nn.Linear(2, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.linalg.lstsq(x, y).solution.T)
    return model, TensorDataset(x, y)


def test_minibatch_noise_is_measured_and_flagged():
    model, data = fitted_regression()
    kwargs = dict(num_chains=4, num_draws=400, num_burnin=50, step_size=5e-5, localization=20.0)
    with pytest.warns(RuntimeWarning, match="minibatch gradient noise"):
        noisy = estimate_llc(model, half_squared_error, data, batch_size=8, **kwargs)
    full = estimate_llc(model, half_squared_error, data, batch_size=20000, **kwargs)
    # per-sample gradients r_i x_i have covariance ≈ I: each of the 2 directions is heated by the ratio
    # r = ε·nβ²·1/(4·8) ≈ 6 at batch 8 and its share ½ of λ̂ grows by r/2: λ̂ ≈ 1 + 6; 0 at full batch
    assert full.diagnostics["noise_inflation"] == 0
    assert noisy.mean > 2 * full.mean  # the heated chains inflate λ̂, by about what geometry.noise_inflation says
    predicted = noisy.diagnostics["noise_inflation"] * noisy.mean
    assert predicted == pytest.approx(noisy.mean - full.mean, rel=0.3)
    assert full.healthy and full.mean == pytest.approx(1.0, rel=0.2)


def test_noise_check_measures_again_at_a_larger_batch():
    """Linear regression, λ = 1: at batch 32 the noise heats λ̂ to ~2.5 (r ≈ 1.5, test above); the check
    measures again at batch 128 (r ≈ 0.4: λ̂ ≈ 1.4) and finds what the noise still adds there from the drop
    between the two."""
    model, data = fitted_regression()
    kwargs = dict(num_chains=4, num_draws=2000, num_burnin=50, step_size=5e-5, localization=20.0)
    with pytest.warns(RuntimeWarning, match="minibatch gradient noise"):
        checked = estimate_llc(model, half_squared_error, data, batch_size=32, max_batch_size=256, **kwargs)
        at_128 = estimate_llc(model, half_squared_error, data, batch_size=128, **kwargs)
    full = estimate_llc(model, half_squared_error, data, batch_size=20000, **{**kwargs, "num_draws": 400})
    d = checked.diagnostics
    assert d["noisy_batch_size"] == 32 and d["batch_size"] == 128
    assert checked.mean == at_128.mean  # the same seed, the same chains
    assert d["noisy_llc"] > 1.5 * checked.mean
    assert d["measured_noise_inflation"] * checked.mean == pytest.approx(checked.mean - full.mean, rel=0.35)
    assert d["noise_inflation"] >= d["measured_noise_inflation"] and not checked.healthy
    # no check where the noise is small, nor without max_batch_size
    quiet = estimate_llc(model, half_squared_error, data, batch_size=20000, max_batch_size=256,
                         **{**kwargs, "num_draws": 400})
    assert "noisy_llc" not in quiet.diagnostics and quiet.mean == full.mean
    assert "noisy_llc" not in at_128.diagnostics


def test_noise_check_starts_lower_where_the_noise_grows_away_from_w_star():
    """An exactly fitted regression: the per-sample gradients vanish at w* and grow with the distance from it
    (state-dependent noise), so a predicted inflation between a third of the bound and the bound is checked;
    residual noise (the same everywhere, previous test's data) is checked only above the bound."""
    model, exact = fitted_regression(exact=True)
    kwargs = dict(num_chains=4, num_draws=400, num_burnin=50, step_size=5e-5, localization=20.0, max_batch_size=256)
    checked = estimate_llc(model, half_squared_error, exact, batch_size=4, **kwargs)
    assert checked.diagnostics["noisy_batch_size"] == 4 and checked.diagnostics["batch_size"] == 16
    unchecked = estimate_llc(model, half_squared_error, exact, batch_size=8, **kwargs)
    assert "noisy_llc" not in unchecked.diagnostics and unchecked.diagnostics["noise_inflation"] < MAX_NOISE_INFLATION / 3
    assert checked.healthy and checked.mean == pytest.approx(1.0, rel=0.2)  # λ = d/2; this noise adds little

    model, data = fitted_regression()
    residual = estimate_llc(model, half_squared_error, data, batch_size=2048, **{**kwargs, "max_batch_size": 20000})
    assert MAX_NOISE_INFLATION / 3 < residual.diagnostics["noise_inflation"] < MAX_NOISE_INFLATION
    assert "noisy_llc" not in residual.diagnostics


def test_control_variate_reads_out_with_less_noise_and_no_bias():
    """Same chains (same gradients, same seed), two read-outs: with per-sample losses at w* as control
    variate, and without (a loss whose single-sample value is offset, so the batch loss is not the mean of
    per-sample losses and the control variate is switched off)."""
    from tests.slt.ground_truth import GroundTruthCase, build_case

    model, data, _ = build_case(GroundTruthCase((2, 2, 3, 2), 2, 20000, seed=2))  # nβ = 2019, λ = 2
    kwargs = dict(num_chains=4, num_draws=300, num_burnin=100, step_size=3e-6, localization=20.0, batch_size=64)
    offset = lambda m, b: half_squared_error(m, b) + 1e-3 * (len(b[0]) == 1)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the plain read-out is far too noisy to be healthy
        with_cv = estimate_llc(model, half_squared_error, data, **kwargs)
        without = estimate_llc(model, offset, data, **kwargs)
    assert with_cv.diagnostics["control_variate"] and not without.diagnostics["control_variate"]
    np.testing.assert_allclose(with_cv.diagnostics["mean_distance"], without.diagnostics["mean_distance"])
    assert with_cv.llc_trace.std() < 0.2 * without.llc_trace.std()
    assert with_cv.mean == pytest.approx(without.mean, abs=4 * math.hypot(with_cv.stderr, without.stderr))


def test_to_arviz_exports_the_chains():
    res = estimate_llc(Potential(torch.zeros(2)), quadratic_loss, potential_data(), num_chains=3, num_draws=50)
    idata = res.to_arviz()
    assert idata.posterior["llc"].shape == (3, 50)
    np.testing.assert_allclose(idata.posterior["llc"].values.mean(axis=1), res.per_chain)
    assert idata.attrs["nbeta"] == res.nbeta


CURVATURES = torch.tensor([1e-3, 1e-2, 0.1, 1.0, 100.0, 1000.0], dtype=torch.float64)


def anisotropic_loss(model, batch):
    """K = ½ Σ h_i w_i² with curvatures h_i from 1e-3 to 1000: at n = 2e4 and γ = 20, nβh_i runs from 2 to 2e6,
    so some directions are held mainly by the localization and the posterior is stiff (κ_max/γ ≈ 1e5)."""
    return 0.5 * (CURVATURES * model.w**2).sum()


def test_lm_sgld_is_exact_on_a_gaussian_where_euler_maruyama_inflates():
    # ε·κ = 2 in every direction (κ = nβ·3 + γ): Euler–Maruyama's stationary variance is 1/(1 − εκ/4) = 2× the
    # target's, so its λ̂ doubles; the Leimkuhler–Matthews noise keeps the law exact at any stable step.
    data = potential_data(5000)
    nbeta, gamma = default_nbeta(5000), 5.0
    kwargs = dict(num_chains=4, num_draws=2000, num_burnin=100, step_size=2 / (3 * nbeta + gamma), localization=gamma,
                  batch_size=5000)
    exact = 2 * 3 * nbeta / (3 * nbeta + gamma)  # λ = d/2, shrunk by the localization's share
    lm = estimate_llc(Potential(torch.zeros(4)), quadratic_loss_3, data, sampler="lm_sgld", **kwargs)
    em = estimate_llc(Potential(torch.zeros(4)), quadratic_loss_3, data, sampler="sgld", **kwargs)
    assert lm.mean == pytest.approx(exact, rel=0.05)
    assert em.mean == pytest.approx(2 * exact, rel=0.1)


def quadratic_loss_3(model, batch):
    return 1.5 * (model.w**2).sum()


def test_the_diagonal_preconditioner_keeps_the_target_and_relaxes_stiff_posteriors():
    # At a step size bounded by the stiffest direction, plain chains leave the flat directions far from
    # equilibrium (ε(nβh + γ) ≈ 1e-5 per step for h = 1e-2); with P = γ/(nβh + γ) every direction relaxes at
    # the rate εγ = 0.04, and λ̂ = Σ nβh_i / (2(nβh_i + γ)) is found.
    data = potential_data(20000)
    nbeta, gamma = default_nbeta(20000), 20.0
    exact = float((nbeta * CURVATURES / (2 * (nbeta * CURVATURES + gamma))).sum())
    kwargs = dict(num_chains=4, num_draws=1500, num_burnin=300, localization=gamma, batch_size=20000, seed=1)
    pre = estimate_llc(Potential(torch.zeros(6)), anisotropic_loss, data, step_size=0.04 / gamma,
                       preconditioner="diagonal", **kwargs)
    plain = estimate_llc(Potential(torch.zeros(6)), anisotropic_loss, data, step_size=1 / (nbeta * 1000 + gamma),
                         **kwargs)
    assert pre.mean == pytest.approx(exact, rel=0.05) and pre.healthy
    assert plain.mean < 0.85 * exact  # the flat directions have not relaxed
    assert pre.diagnostics["preconditioner"] == "diagonal" and plain.diagnostics["preconditioner"] == "none"


def test_a_step_too_large_for_the_curvature_is_halved_and_said():
    # ε·κ = 10 > 4: unstable, and so is 5; the second halving brings it to 2.5
    data = potential_data(5000)
    nbeta = default_nbeta(5000)
    step = 10 / (3 * nbeta + 5.0)
    res = estimate_llc(Potential(torch.zeros(4)), quadratic_loss_3, data, num_chains=2, num_draws=300, num_burnin=50,
                       step_size=step, localization=5.0, batch_size=5000, stability_retries=2)
    assert res.diagnostics["step_halvings"] == 2 and res.diagnostics["step_size"] == pytest.approx(step / 4)
    assert res.diagnostics["num_burnin"] == 200 and res.healthy
    with pytest.warns(RuntimeWarning, match="diverged"):
        estimate_llc(Potential(torch.zeros(4)), quadratic_loss_3, data, num_chains=2, num_draws=300, step_size=step,
                     localization=5.0, batch_size=5000)


def test_a_short_run_is_imprecise_not_biased():
    res = estimate_llc(Potential(torch.zeros(4)), quadratic_loss, potential_data(1000), num_chains=2, num_draws=40,
                       num_burnin=200, step_size=1e-2, localization=5.0, batch_size=1000)
    assert res.healthy and not res.precise
    assert any("effective sample size" in note for note in res.imprecision) and res.problems == []


def quartic_loss(model, batch):
    """K = Σ w_i⁴: flat at w* = 0 (κ_P there is γ alone) and stiffer the farther the chains go; λ = d/4."""
    return (model.w**4).sum()


def test_step_check_takes_the_draws_again_at_the_step_the_chains_end_needs():
    # d = 16, n = 5000, γ = 1: the chains spread to w_i² ~ 0.02, where nβ·12w² reaches ~200, so ε = 0.011 has
    # ε·κ_P ≈ 2.2 at a chain's end (discretization: λ̂ +7 %) while ε = 0.005 stays at ~1.1.
    n, d, gamma = 5000, 16, 1.0
    nbeta = default_nbeta(n)
    w = np.linspace(-2, 2, 200_001)
    density = np.exp(-nbeta * w**4 - gamma * w**2 / 2)
    exact = d * float((density * nbeta * w**4).sum() / density.sum())  # λ = d/4, shrunk a little by γ
    kwargs = dict(num_chains=4, num_draws=1000, num_burnin=200, localization=gamma, batch_size=n, stability_retries=2)
    data = potential_data(n)
    plain = estimate_llc(Potential(torch.zeros(d)), quartic_loss, data, step_size=0.011, **kwargs)
    checked = estimate_llc(Potential(torch.zeros(d)), quartic_loss, data, step_size=0.011, step_check=True, **kwargs)
    c = checked.diagnostics
    assert "end_step_curvature" not in plain.diagnostics
    assert c["coarse_llc"] == plain.mean and c["coarse_step_size"] == 0.011  # the same seed, the same first run
    assert c["end_step_curvature"] > 2 and c["step_size"] == pytest.approx(0.011 * 2 / c["end_step_curvature"])
    assert c["num_draws"] == math.ceil(1000 * 0.011 / c["step_size"]) and c["num_burnin"] == 250
    assert abs(checked.mean - exact) < abs(plain.mean - exact) and checked.healthy

    fine = estimate_llc(Potential(torch.zeros(d)), quartic_loss, data, step_size=0.005, step_check=True, **kwargs)
    assert fine.diagnostics["end_step_curvature"] < 2 and "coarse_llc" not in fine.diagnostics
    assert fine.mean == pytest.approx(exact, rel=0.03)


@pytest.mark.parametrize("screened, measured", [(900.0, False), (1100.0, True)])
def test_step_check_measures_the_end_curvature_on_more_samples_only_near_its_threshold(screened, measured):
    # ε = 1e-3: the first look gives ε·κ_P 0.9, below half the threshold of 2 (that value is used), or 1.1
    # (the check could fire: κ_P is measured again on more samples, which here read 2.5)
    asked = []

    def curvature(num_samples):
        asked.append(num_samples)
        return screened if num_samples == END_CURVATURE_SCREEN_SAMPLES else 2500.0

    kappa = curvature_at_end(curvature, 1e-3)
    assert asked == ([END_CURVATURE_SCREEN_SAMPLES, END_CURVATURE_SAMPLES] if measured else [END_CURVATURE_SCREEN_SAMPLES])
    assert kappa == (2500.0 if measured else screened)


def test_no_noise_check_for_a_negative_estimate():
    # off the fit, w* is not a minimum: λ̂ < 0 is biased at any batch, and a quieter batch would read lower still
    model, data = fitted_regression()
    with torch.no_grad():
        model.weight.add_(0.1)
    with pytest.warns(RuntimeWarning, match="negative LLC"):
        res = estimate_llc(model, half_squared_error, data, num_chains=2, num_draws=200, step_size=5e-5,
                           localization=20.0, batch_size=8, max_batch_size=256)
    assert res.mean < 0 and res.diagnostics["noise_inflation"] > MAX_NOISE_INFLATION
    assert res.diagnostics["batch_size"] == 8 and "noisy_llc" not in res.diagnostics


def test_the_settled_burn_in_doubles_while_the_trace_rises_and_stops_where_it_has_settled():
    # K = ½ Σ w_i² in 400 dimensions, sampled exactly (lm_sgld on a Gaussian): a chain started at w* contracts by
    # 1 − εκ/2 per step. At εκ = 0.01 its variance, and with it λ̂'s trace, takes several hundred steps to
    # settle: burned in for 10 steps, 400 draws read ~24 % low; the settled burn-in doubles from 10 and reads
    # right. At εκ = 0.5 the trace settles within a few steps, and a settled burn-in from 50 stays at 50.
    n, d, gamma = 1000, 400, 5.0
    nbeta = default_nbeta(n)
    kappa = nbeta + gamma
    exact = d / 2 * nbeta / kappa  # λ = d/2, shrunk by the localization's share
    kwargs = dict(num_chains=4, num_draws=400, localization=gamma, batch_size=n, seed=1)

    def estimate(step_curvature, **burnin):
        return estimate_llc(Potential(torch.zeros(d)), quadratic_loss, potential_data(n),
                            step_size=step_curvature / kappa, **kwargs, **burnin)

    short = estimate(0.01, num_burnin=10)
    settled = estimate(0.01, num_burnin=400, min_burnin=10)
    assert short.mean < 0.85 * exact
    assert settled.diagnostics["num_burnin"] >= 160 and settled.mean == pytest.approx(exact, rel=0.08)
    fast = estimate(0.5, num_burnin=250, min_burnin=50)
    assert fast.diagnostics["num_burnin"] == 50 and fast.mean == pytest.approx(exact, rel=0.05)


def test_a_run_continued_is_one_run_and_keeps_where_a_chain_diverged():
    problem = FunctionalProblem(Potential(torch.zeros(4)), quadratic_loss, None, None)
    data = potential_data(100)
    kwargs = dict(num_chains=2, step_size=1e-2, nbeta=10.0, localization=1.0, init_loss=0.0, batch_size=100,
                  sampler="lm_sgld")
    first = run_chains(problem, data, num_steps=30, seed=0, **kwargs)
    later = run_chains(problem, data, num_steps=20, seed=1, initial_weights=first.final_weights, **kwargs)
    first.diverged_at, later.diverged_at = torch.tensor([5, -1]), torch.tensor([3, 7])
    both = first.then(later)
    assert both.loss_trace.shape == (2, 50) and torch.equal(both.loss_trace[:, 30:], later.loss_trace)
    assert both.diverged_at.tolist() == [5, 37] and torch.equal(both.final_weights, later.final_weights)
