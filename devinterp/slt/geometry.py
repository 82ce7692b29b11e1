"""Local statistics of the loss that set SGLD's step size and batch: curvature and gradient noise.

Curvature. In a direction of curvature κ (of the drift nβ∇L + γ(w − w*)) an SGLD step contracts by
1 − εκ/2: stable only for εκ < 4, and the stationary variance is inflated by 1/(1 − εκ/4), which
inflates λ̂. `top_curvature` gives the largest eigenvalue h of ∇²L_n (Lanczos on a subsample) at
given weights; with κ_max = nβ·h + γ, `calibrate` keeps ε·κ_max ≤ 1/8. Measure it where the chains
are as well as at w*: at a singular w* the curvature can be far below that a short way off.

Minibatch gradient noise against the injected Langevin noise.

SGLD injects N(0, ε) per coordinate and step. A minibatch of b out of n samples adds the noise of
its gradient estimate, (ε/2)·nβ·ξ with Cov(ξ) = Σ/b·(n − b)/(n − 1), Σ the per-sample gradient
covariance at w*. In a direction of Σ with variance σ² the ratio of the two is ε·nβ²·σ²/(4b) (times
the finite-population factor), and the chain samples that direction at a temperature raised by about
this ratio: λ̂ is inflated by about as much (measured: ratios 6 and 20 inflated λ̂ of a deep linear
network 6.7× and 26×). `noise_ratio` uses the σ²-weighted mean eigenvalue of Σ, tr(Σ²)/tr(Σ) (the
variance of a typical noisy direction; it equals σ² when Σ = σ²I), from a subsample of per-sample
gradients (`gradient_noise_scale`). Measure it where the chains are, not only at w*: at a singular
w* gradients can vanish while they are large a short way off.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from devinterp.slt.sampler import FunctionalProblem, _collate

# Per-sample gradients kept in memory at once: at most this many numbers (num_samples × weights).
MAX_GRADIENT_ENTRIES = 2**25
NOISE_SAMPLES = 256
CURVATURE_SAMPLES = 1024
CURVATURE_LANCZOS_STEPS = 30


def gradient_noise_scale(problem: FunctionalProblem, data: Dataset, seed: int, weights=None,
                         num_samples: int = NOISE_SAMPLES) -> float:
    """tr(Σ²)/tr(Σ) of the per-sample gradient covariance Σ at `weights` (sampled tensors; default w*),
    in (loss units / weight unit)².

    From m ≤ `num_samples` samples drawn without replacement (fewer for very large models, so that
    m × weights ≤ MAX_GRADIENT_ENTRIES): with centred per-sample gradients c_i, tr(Σ) is estimated by
    Σ_i ‖c_i‖²/(m − 1) and tr(Σ²) by the mean of (c_i·c_j)² over pairs i ≠ j, which, unlike the
    diagonal terms, carries no upward bias from high-dimensional noise. 0 when all samples agree.
    """
    n = len(data)
    m = max(2, min(num_samples, n, MAX_GRADIENT_ENTRIES // max(problem.num_sampled, 1)))
    indices = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:m]
    grads = problem.sample_gradients(data, indices, weights)
    centred = grads - grads.mean(dim=0, keepdim=True)
    gram = centred @ centred.T
    trace = float(gram.diagonal().sum()) / (m - 1)
    if trace <= 0:
        return 0.0
    off_diagonal = (gram**2).sum() - (gram.diagonal() ** 2).sum()
    trace_of_square = float(off_diagonal) / (m * (m - 1))
    return max(trace_of_square, 0.0) / trace


def noise_ratio(noise_scale: float, step_size: float, nbeta: float, batch_size: int, n: int) -> float:
    """Minibatch gradient noise ÷ injected noise per step, in a typical noisy direction (0 at full batch)."""
    if batch_size >= n:
        return 0.0
    finite_population = (n - batch_size) / (n - 1)
    return step_size * nbeta**2 * noise_scale * finite_population / (4 * batch_size)


def top_curvature(problem: FunctionalProblem, data: Dataset, seed: int, weights=None,
                  num_samples: int = CURVATURE_SAMPLES) -> float:
    """The largest eigenvalue of the Hessian of the mean loss over the first `num_samples` samples,
    with respect to the sampled entries, at `weights` (sampled tensors; default w*); Lanczos to 1 %."""
    from devinterp.hessian import hessian_spectrum

    batch = _collate(data, torch.arange(min(num_samples, len(data))))
    spectrum = hessian_spectrum(problem.model_at(weights), problem.module.loss_fn, [batch], top_k=1, bottom_k=0,
                                trace_probes=0, density=False, lanczos_steps=CURVATURE_LANCZOS_STEPS, tol=1e-2,
                                params=problem.masks, seed=seed, device=problem.device)
    return float(spectrum.top.values[0])
