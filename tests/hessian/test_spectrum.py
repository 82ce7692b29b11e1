"""hessian_spectrum end to end: against the exact spectrum of small float64 models, and its contracts
(determinism, RNG isolation, convergence warnings, untouched model)."""
from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from devinterp.hessian import HessianResult, hessian_spectrum
from devinterp.models.attention_only import AttnOnlyConfig, AttnOnlyTransformer

from .conftest import dense_hessian, lm_loss, mse_loss


def relative_errors(estimate: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.abs(estimate - exact) / np.abs(exact)


@pytest.mark.parametrize("name", ["mlp_problem", "attn_problem"])
def test_against_exact_spectrum(name, request):
    problem = request.getfixturevalue(name)
    h = dense_hessian(problem)
    exact = np.sort(torch.linalg.eigvalsh(h).numpy())
    dim = len(exact)
    res = hessian_spectrum(
        problem.model, problem.loss_fn, problem.batches,
        lanczos_steps=60, tol=1e-10, density_probes=6, trace_probes=30,
    )
    assert res.dim == dim and res.converged
    assert relative_errors(res.top.values, exact[::-1][:5]).max() <= 1e-6
    assert relative_errors(res.bottom.values, exact[:2]).max() <= 1e-6
    assert np.all(res.top.errors <= 1e-10 * np.abs(res.top.values)) and np.all(res.top.errors <= res.top.residuals)

    # The Krylov basis deflates the trace; what it leaves is estimated (stderr 0 only if it spans R^dim).
    exact_trace = float(np.sum(exact))
    assert abs(res.trace - exact_trace) <= 3 * res.trace_stderr + 1e-9 * np.abs(exact).sum()
    # Plain Hutchinson (no eigenvalue run to deflate with) has a genuine error bar.
    plain = hessian_spectrum(problem.model, problem.loss_fn, problem.batches, top_k=0, bottom_k=0,
                             trace_probes=30, density=False)
    assert plain.trace_stderr > 0
    assert abs(plain.trace - exact_trace) <= 3 * plain.trace_stderr

    # SLQ moments against the exact spectrum, within 4 standard deviations of the probe average.
    density = res.density
    assert density.moment(0) == pytest.approx(1.0)
    for k in (1, 2):
        hk = torch.linalg.matrix_power(h, k)
        per_probe_sd = np.sqrt(2 * (float((hk**2).sum()) - float((hk.diagonal() ** 2).sum()))) / dim
        assert abs(density.moment(k) - np.mean(exact**k)) <= 4 * per_probe_sd / np.sqrt(6)
    assert np.trapezoid(density.values, density.grid) == pytest.approx(1.0, abs=1e-3)
    exact_fraction = np.mean(np.abs(exact) <= density.zero_band)
    assert abs(density.mass_near_zero - exact_fraction) <= 0.1
    assert res.num_hvps <= 60 + 30 + 6 * 60


def test_unconverged_run_warns_and_residuals_bound_the_error(attn_problem):
    exact = np.sort(torch.linalg.eigvalsh(dense_hessian(attn_problem)).numpy())
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = hessian_spectrum(attn_problem.model, lm_loss, attn_problem.batches, lanczos_steps=12,
                               tol=1e-10, trace_probes=0, density=False)
    assert not res.converged
    assert not (res.top.converged.all() and res.bottom.converged.all())
    assert res.lanczos_steps == 12 and res.num_hvps == 12 and res.trace is None and res.density is None
    for value, residual in zip(np.concatenate([res.top.values, res.bottom.values]),
                               np.concatenate([res.top.residuals, res.bottom.residuals])):
        assert np.min(np.abs(exact - value)) <= residual * (1 + 1e-8) + 1e-12


def test_seeded_determinism_and_rng_isolation(attn_problem):
    model = attn_problem.model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def noisy_loss(m, batch):
        torch.rand(1)  # a loss_fn that draws from the global RNG must not leak that to the caller
        return lm_loss(m, batch)

    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    kwargs = dict(lanczos_steps=20, trace_probes=10, density_probes=2, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = hessian_spectrum(model, noisy_loss, attn_problem.batches, **kwargs)
        second = hessian_spectrum(model, noisy_loss, attn_problem.batches, **kwargs)
        other = hessian_spectrum(model, noisy_loss, attn_problem.batches, **{**kwargs, "seed": 8})
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]

    summary = {k: v for k, v in first.summary().items() if k != "seconds"}
    assert summary == {k: v for k, v in second.summary().items() if k != "seconds"}
    assert np.array_equal(first.density.nodes, second.density.nodes)
    assert first.trace != other.trace

    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("arch", ["attn_only", "gpt2"])
def test_default_settings_on_small_float32_models(arch):
    """The API at its defaults on float32 attention-only and GPT-2 models (eager attention)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if arch == "attn_only":
            model = AttnOnlyTransformer(AttnOnlyConfig(vocab_size=16, n_ctx=16, d_model=16, n_heads=2, n_layers=2))
        else:
            model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                               attn_implementation="eager"))
    x = torch.randint(0, 16, (12, 8), generator=torch.Generator().manual_seed(0))
    batches = [(c,) for c in x.split(5)]  # 5, 5, 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # convergence at tol=1e-4 is model-dependent
        res = hessian_spectrum(model, lm_loss, batches)
    assert isinstance(res, HessianResult)
    assert len(res.top) == 5 and len(res.bottom) == 2
    assert np.all(np.diff(res.top.values) <= 0) and np.all(np.diff(res.bottom.values) >= 0)
    assert res.top.values[0] > 0 and res.bottom.values[0] <= res.top.values[-1]
    # The top eigenvalue (an isolated outlier) converges within the default 80 steps.
    assert res.top.converged[0]
    assert np.isfinite(res.trace) and res.trace_stderr >= 0
    assert res.density.nodes.shape == (4, 80)
    assert res.num_hvps <= 80 + 50 + 4 * 80
    assert res.top.values[0] >= res.density.nodes.max() - res.top.residuals[0] - 1e-3 * abs(res.top.values[0])


def test_products_are_shared_and_the_trace_stays_unbiased(mlp_problem):
    """The density's first probe is the eigenvalue run, the next ones start from trace probes (one
    product for both), and the trace estimate stays unbiased with a calibrated standard error."""
    exact = float(torch.linalg.eigvalsh(dense_hessian(mlp_problem)).sum())
    batches = [tuple(torch.cat(parts) for parts in zip(*mlp_problem.batches))]  # the same H, one pass
    kwargs = dict(top_k=3, bottom_k=1, lanczos_steps=12, tol=1e-3)
    z = []
    for seed in range(30):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 12 steps do not converge: not the point here
            res = hessian_spectrum(mlp_problem.model, mse_loss, batches, trace_probes=6, density_probes=3,
                                   seed=seed, **kwargs)
        # steps of the eigenvalue run + 6 trace probes + 2 further density runs of 12 steps, 2 of whose
        # products are trace probes' products
        assert res.num_hvps == res.lanczos_steps + 6 + 2 * 12 - 2
        assert res.density.nodes.shape[0] == 3
        z.append((res.trace - exact) / res.trace_stderr)
    z = np.array(z)
    assert abs(z.mean()) < 4 / np.sqrt(len(z))
    assert 0.6 < z.std() < 1.5

    alone = hessian_spectrum(mlp_problem.model, mse_loss, batches, trace_probes=5, density_probes=1,
                             **{**kwargs, "lanczos_steps": 60})
    assert alone.converged and alone.lanczos_steps < 60
    assert alone.num_hvps == alone.lanczos_steps + 5  # the density costs nothing more
    assert alone.density.nodes.shape == (1, alone.lanczos_steps)
    no_run = hessian_spectrum(mlp_problem.model, mse_loss, batches, top_k=0, bottom_k=0,
                              trace_probes=3, density_probes=2, lanczos_steps=12)
    assert no_run.num_hvps == 3 + 2 * 12 - 2 and no_run.density.nodes.shape == (2, 12)
