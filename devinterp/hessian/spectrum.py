"""`hessian_spectrum`: sharpness, negative curvature, trace and eigenvalue density of the loss Hessian.

Conventions (see `devinterp.hessian.hvp`): H is the Hessian of the batch-size-weighted mean loss over
the given batches, with respect to the selected parameter entries, with the model in eval mode.
Eigenvalues are in loss units per parameter unit squared; `top` is in descending order, `bottom` in
ascending order (most negative first).
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from devinterp.hessian.density import SpectralDensity, slq_density
from devinterp.hessian.hvp import DEFAULT_HVP_METHOD, LossFn, hvp_operator
from devinterp.hessian.lanczos import extreme_eigenpairs
from devinterp.hessian.trace import deflated_hutchinson
from devinterp.params import ParamSelector


@dataclass(frozen=True)
class Eigenvalues:
    """Ritz values with their residual norms ||H y - theta y|| (a true eigenvalue lies within the
    residual of each value); `converged[i]` is residuals[i] <= tol * max|Ritz value|."""

    values: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class HessianResult:
    """Output of `hessian_spectrum`.

    top: the top_k largest eigenvalues, descending.  bottom: the bottom_k smallest, ascending.
    trace, trace_stderr: tr(H) and its standard error (None when trace_probes=0).
    density: the SLQ eigenvalue density (None when density=False).
    num_hvps: Hessian-vector products spent.  seconds: wall time of the call.
    dim: number of parameter entries H acts on.  lanczos_steps: steps of the extreme-eigenvalue run.
    converged: whether every top/bottom Ritz pair met the tolerance.
    """

    top: Eigenvalues
    bottom: Eigenvalues
    trace: float | None
    trace_stderr: float | None
    density: SpectralDensity | None
    num_hvps: int
    seconds: float
    dim: int
    lanczos_steps: int
    converged: bool
    hvp_method: str

    def summary(self) -> dict[str, float]:
        """Flat scalars for logging: top_1.., bottom_1.., trace, trace_stderr, mass_near_zero, ..."""
        out: dict[str, float] = {f"top_{i + 1}": float(v) for i, v in enumerate(self.top.values)}
        out.update({f"bottom_{i + 1}": float(v) for i, v in enumerate(self.bottom.values)})
        if self.trace is not None:
            out.update(trace=self.trace, trace_stderr=float(self.trace_stderr))
        if self.density is not None:
            out["mass_near_zero"] = self.density.mass_near_zero
        out.update(num_hvps=float(self.num_hvps), seconds=self.seconds, converged=float(self.converged))
        return out


def _generators(seed: int, count: int) -> list[torch.Generator]:
    """Independent CPU generators for the separate random parts of the computation, so that e.g.
    changing trace_probes does not change the Lanczos start vector."""
    seeds = np.random.SeedSequence(seed).generate_state(count, dtype=np.uint64)
    return [torch.Generator().manual_seed(int(s) >> 1) for s in seeds]


def _empty() -> Eigenvalues:
    return Eigenvalues(np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool))


def hessian_spectrum(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    *,
    top_k: int = 5,
    bottom_k: int = 2,
    trace_probes: int = 50,
    density: bool = True,
    density_probes: int = 4,
    lanczos_steps: int = 80,
    params: ParamSelector = None,
    seed: int = 0,
    tol: float = 1e-4,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> HessianResult:
    """Extreme eigenvalues, trace and eigenvalue density of the loss Hessian at the model's weights.

    Args:
        model, loss_fn, batches, params, device, dtype: define the operator H, as in `hvp_operator`
            (batch-size-weighted mean loss over the fixed batches, eval mode, model unmodified).
        top_k, bottom_k: how many largest / smallest eigenvalues, both from one Lanczos run with full
            reorthogonalisation of at most `lanczos_steps` steps, stopped early once every wanted
            Ritz pair has residual <= tol * max|eigenvalue|. A RuntimeWarning says when they did not.
        trace_probes: Hutchinson probes for tr(H), deflated by that run's Krylov basis (Hutch++
            with the Krylov space as sketch; see `devinterp.hessian.trace`). 0 skips the trace.
        density, density_probes: SLQ density with `density_probes` probes of `lanczos_steps` steps.
        seed: seeds every random vector; the same inputs and seed give the same result. The global
            torch/numpy RNG states are left as they were.
    Cost: at most lanczos_steps + trace_probes + density_probes * lanczos_steps products, one pass
    over all batches each (about 3 gradient evaluations per product).
    """
    start = time.perf_counter()
    op = hvp_operator(model, loss_fn, batches, params=params, method=DEFAULT_HVP_METHOD, device=device, dtype=dtype)
    eig_gen, trace_gen, density_gen = _generators(seed, 3)
    fork_devices = [op.device] if op.device.type == "cuda" else []
    # Our random draws use private generators; fork_rng also shields the caller's RNG from anything
    # the model or loss_fn might draw.
    with torch.random.fork_rng(devices=fork_devices):
        top, bottom, basis, basis_trace, steps, converged = _empty(), _empty(), None, 0.0, 0, True
        if top_k or bottom_k:
            eig = extreme_eigenpairs(
                op, top_k, bottom_k, max_steps=lanczos_steps, tol=tol, generator=eig_gen, warn=False
            )
            bound = tol * eig.scale
            top = Eigenvalues(eig.top, eig.top_residuals, eig.top_residuals <= bound)
            bottom = Eigenvalues(eig.bottom, eig.bottom_residuals, eig.bottom_residuals <= bound)
            basis, basis_trace, steps, converged = eig.run.basis, float(eig.run.alphas.sum()), eig.run.steps, eig.converged
            if not converged:
                worst = float(np.max(np.concatenate([top.residuals, bottom.residuals])))
                warnings.warn(
                    f"hessian_spectrum: Lanczos did not converge in {steps} steps (largest Ritz residual "
                    f"{worst:.3g} > tol * max|eigenvalue| = {bound:.3g}); the reported eigenvalues are "
                    f"each within their residual of a true eigenvalue. Increase lanczos_steps for more accuracy.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        trace = trace_stderr = None
        if trace_probes:
            estimate = deflated_hutchinson(op, trace_probes, trace_gen, basis, basis_trace)
            trace, trace_stderr = estimate.value, estimate.stderr
        del basis
        spectral_density = slq_density(op, density_probes, lanczos_steps, density_gen) if density else None
    return HessianResult(
        top=top,
        bottom=bottom,
        trace=trace,
        trace_stderr=trace_stderr,
        density=spectral_density,
        num_hvps=op.num_hvps,
        seconds=time.perf_counter() - start,
        dim=op.dim,
        lanczos_steps=steps,
        converged=converged,
        hvp_method=op.method,
    )
