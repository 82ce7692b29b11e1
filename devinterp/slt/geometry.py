"""Local statistics of the loss that set SGLD's step size and batch: curvature and gradient noise.

Curvature. In a direction of curvature κ (of the drift nβ∇L + γ(w − w*), in the metric of the
preconditioner P when there is one) an SGLD step contracts by 1 − εκ/2: stable only for εκ < 4;
Euler–Maruyama's stationary variance is inflated by 1/(1 − εκ/4), which inflates λ̂ (`lm_sgld`'s is
exact on a Gaussian). `top_curvature` gives the largest eigenvalue h of ∇²L_n (of √P ∇²L_n √P with P)
from Lanczos on a subsample, at given weights; κ_max = nβ·h + γ·max P bounds ε (`calibrate`). Measure
it where the chains are as well as at w*: at a singular w* the curvature can be far below that a
short way off.

Minibatch gradient noise, in λ̂ units.

SGLD injects N(0, εP) per step. A minibatch of b out of n samples adds the noise of its gradient
estimate, (ε/2)·nβ·P ξ with Cov(ξ) = Σ/b·(n − b)/(n − 1), Σ the per-sample gradient covariance. In a
direction i of √P Σ √P with variance σ_i² the ratio of the two is r_i = ε·nβ²·σ_i²/(4b) (times the
finite-population factor), and the chain samples that direction at a temperature raised by that
ratio: its variance, and its share of λ̂, nβh_i/(2(nβh_i + γ)) ≤ ½, grow by the factor 1 + r_i. So the
noise adds at most Σ_i r_i/2 = ε·nβ²·tr(√P Σ √P)/(8b) to λ̂ (`noise_inflation`), whichever directions
carry it; `calibrate` keeps it to a few percent of λ̂, and an estimate above MAX_NOISE_INFLATION of λ̂
is flagged as biased. Measured on the grokking checkpoint 745 (plain SGLD, batch 64): predicted +9,
found +12 against full batch (λ̂ 652). Measure the noise where the chains are, not only at w*: at a
singular w* gradients can vanish while they are large a short way off (there: tr Σ 0.48 at w*, 4730
at a chain's end).
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from devinterp.hessian.hvp import hvp_operator
from devinterp.hessian.lanczos import extreme_eigenpairs
from devinterp.slt.sampler import FunctionalProblem, _collate

# Per-sample gradients kept in memory at once: at most this many numbers (num_samples × weights).
MAX_GRADIENT_ENTRIES = 2**25
NOISE_SAMPLES = 256
CURVATURE_SAMPLES = 1024
CURVATURE_LANCZOS_STEPS = 30


def gradient_noise(problem: FunctionalProblem, data: Dataset, seed: int, weights=None,
                   num_samples: int = NOISE_SAMPLES, preconditioner: torch.Tensor | None = None) -> float:
    """tr(√P Σ √P): the total variance of the per-sample gradients at `weights` (sampled tensors; default
    w*), each scaled by √P of the diagonal `preconditioner` (flat, `devinterp.slt.preconditioning`; 1
    without one), in (loss units / weight unit)². From m ≤ `num_samples` samples drawn without
    replacement (fewer for very large models, so that m × weights ≤ MAX_GRADIENT_ENTRIES): Σ_i ‖c_i‖²/(m − 1)
    over the centred per-sample gradients c_i."""
    n = len(data)
    m = max(2, min(num_samples, n, MAX_GRADIENT_ENTRIES // max(problem.num_sampled, 1)))
    indices = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:m]
    grads = problem.sample_gradients(data, indices, weights)
    if preconditioner is not None:
        grads = grads * preconditioner[problem.flat_mask].sqrt().to(grads)
    centred = grads - grads.mean(dim=0, keepdim=True)
    return float((centred**2).sum()) / (m - 1)


def noise_inflation(noise: float, step_size: float, nbeta: float, batch_size: int, n: int) -> float:
    """The most minibatch noise of total variance `noise` (`gradient_noise`) can add to λ̂, in λ̂ units
    (module docstring): ε·nβ²·noise·(n − b)/((n − 1)·8b); 0 at full batch."""
    if batch_size >= n:
        return 0.0
    finite_population = (n - batch_size) / (n - 1)
    return step_size * nbeta**2 * noise * finite_population / (8 * batch_size)


def batch_for_noise(noise: float, step_size: float, nbeta: float, n: int, limit: float, min_batch: int,
                    max_batch: int) -> int | None:
    """The smallest of `min_batch` and the powers of two above it (and n) at which `noise_inflation` is at most
    `limit` (λ̂ units); None when even `max_batch` is not enough."""
    sizes = [2**k for k in range(int(math.log2(n)) + 1) if min_batch < 2**k < n] + [n]
    for batch in [min_batch, *sizes]:
        if batch > max_batch:
            return None
        if noise_inflation(noise, step_size, nbeta, batch, n) <= limit:
            return batch
    return None


def measured_noise_inflation(noisy_llc: float, noisy_batch: int, quiet_llc: float, quiet_batch: int, n: int) -> float:
    """What minibatch noise adds to λ̂ at `quiet_batch`, in λ̂ units, measured from two estimates at the same
    ε: the inflation is proportional to (n − b)/b (module docstring; on grokking checkpoints λ̂(b) fits
    λ̂_∞ + c/b within the chain spread for b = 32 … 512), so the drop between the batches scales to it."""
    def share(b):
        return (n - b) / (b * (n - 1))
    return (noisy_llc - quiet_llc) * share(quiet_batch) / (share(noisy_batch) - share(quiet_batch))


class _PreconditionedHessian:
    """v ↦ √P ⊙ ∇²L (√P ⊙ v) on the sampled entries, as a `SymmetricOperator` for Lanczos."""

    def __init__(self, op, scale: torch.Tensor):
        self.op, self.scale = op, scale.to(device=op.device, dtype=op.dtype)
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.scale * self.op.matvec(self.scale * v)


def top_curvature(problem: FunctionalProblem, data: Dataset, seed: int, weights=None,
                  num_samples: int = CURVATURE_SAMPLES, preconditioner: torch.Tensor | None = None,
                  tol: float = 1e-2) -> float:
    """The largest eigenvalue h of ∇²L, the Hessian of the mean loss over the first `num_samples` samples,
    with respect to the sampled entries, at `weights` (sampled tensors; default w*); with a diagonal
    `preconditioner` P (flat, `devinterp.slt.preconditioning`), of √P ∇²L √P. Lanczos to `tol` (relative;
    at most CURVATURE_LANCZOS_STEPS Hessian-vector products)."""
    batch = _collate(data, torch.arange(min(num_samples, len(data))))
    op = hvp_operator(problem.model_at(weights), problem.module.loss_fn, [batch], params=problem.masks,
                      device=problem.device)
    if preconditioner is not None:
        op = _PreconditionedHessian(op, preconditioner[problem.flat_mask].sqrt())
    top = extreme_eigenpairs(op, 1, 0, max_steps=CURVATURE_LANCZOS_STEPS, tol=tol,
                             generator=torch.Generator().manual_seed(seed), warn=False)
    return float(top.top[0])


def drift_curvature(problem: FunctionalProblem, data: Dataset, seed: int, nbeta: float, localization: float,
                    weights=None, num_samples: int = CURVATURE_SAMPLES, preconditioner: torch.Tensor | None = None,
                    tol: float = 1e-2) -> float:
    """κ_P = nβ·h + γ·max P: the largest curvature of SGLD's drift nβ∇L + γ(w − w*) at `weights` (default
    w*), in the metric of the diagonal `preconditioner` P (1 without one); h from `top_curvature`. A step ε
    is stable for ε·κ_P < 4 (module docstring)."""
    h = top_curvature(problem, data, seed, weights=weights, num_samples=num_samples, preconditioner=preconditioner,
                      tol=tol)
    return nbeta * max(h, 0.0) + localization * (1.0 if preconditioner is None else float(preconditioner.max()))
