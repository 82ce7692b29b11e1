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

from devinterp.hessian.density import SpectralDensity, density_from_runs
from devinterp.hessian.hvp import DEFAULT_HVP_METHOD, LossFn, hvp_operator
from devinterp.hessian.lanczos import LanczosRun, convergence_shortfall, extreme_eigenpairs, lanczos, random_unit_vector
from devinterp.hessian.trace import (
    TraceEstimate,
    deflated_samples,
    lanczos_relation_sample,
    rademacher_probes,
    trace_from_samples,
)
from devinterp.core.params import ParamSelector


@dataclass(frozen=True)
class Eigenvalues:
    """Ritz values with their residual norms ||H y - theta y|| (a true eigenvalue lies within the
    residual of each value) and estimated errors min(r, r^2 / gap) (`devinterp.hessian.lanczos.
    ritz_error_bounds`); `converged[i]`: the error estimate met the tolerance (see `hessian_spectrum`)."""

    values: np.ndarray
    residuals: np.ndarray
    errors: np.ndarray
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
    converged: whether every top/bottom Ritz value met the tolerance.
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
    return Eigenvalues(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool))


class _FirstProduct:
    """`op` that remembers the result of its first `matvec` (the first Lanczos step of a run)."""

    def __init__(self, op):
        self.op, self.dim, self.dtype, self.device = op, op.dim, op.dtype, op.device
        self.first: torch.Tensor | None = None

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        out = self.op.matvec(v)
        if self.first is None:
            self.first = out
        return out


# Longer than ~60 lines only for its signature and the documentation of its many settings: the
# body is short and delegates to the helpers below.
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
    bottom_tol: float | None = None,
    guard: int = 1,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> HessianResult:
    """Extreme eigenvalues, trace and eigenvalue density of the loss Hessian at the model's weights.

    Args:
        model, loss_fn, batches, params, device, dtype: define the operator H, as in `hvp_operator`
            (batch-size-weighted mean loss over the fixed batches, eval mode, model unmodified).
        top_k, bottom_k: how many largest / smallest eigenvalues, both from one Lanczos run with full
            reorthogonalisation of at most `lanczos_steps` steps, stopped early once every wanted
            Ritz value has converged: estimated error <= tol * |value| for the top ones, <= bottom_tol *
            ||H|| for the bottom ones (default bottom_tol = tol; `devinterp.hessian.lanczos.
            ExtremeEigenpairs`), and `guard` more top values as well (against a missed eigenvalue; see
            `extreme_eigenpairs`). A RuntimeWarning says when they did not.
        trace_probes: Hutchinson probes for tr(H), deflated by that run's Krylov basis (Hutch++
            with the Krylov space as sketch; see `devinterp.hessian.trace`). 0 skips the trace.
        density, density_probes: SLQ density with `density_probes` probes. The first probe is the start
            vector of the extreme-eigenvalue run (its quadrature costs nothing more; see
            `devinterp.hessian.density`); every further probe runs `lanczos_steps` steps, and the first
            `trace_probes` of those start from the trace probes, so that one product serves both the
            trace term and the first Lanczos step (`devinterp.hessian.trace.lanczos_relation_sample`).
        seed: seeds every random vector; the same inputs and seed give the same result. The global
            torch/numpy RNG states are left as they were.
    Cost, in products (one pass over all batches each, about 3 gradient evaluations): the run's
    steps (<= lanczos_steps) + trace_probes + (extra density probes) * lanczos_steps - (shared ones).
    The trace products not shared with the density are taken in one batched call.
    """
    start = time.perf_counter()
    op = hvp_operator(model, loss_fn, batches, params=params, method=DEFAULT_HVP_METHOD, device=device, dtype=dtype)
    eig_gen, trace_gen, density_gen = _generators(seed, 3)
    fork_devices = [op.device] if op.device.type == "cuda" else []
    # Our random draws use private generators; fork_rng also shields the caller's RNG from anything
    # the model or loss_fn might draw.
    with torch.random.fork_rng(devices=fork_devices):
        top, bottom, run, steps, converged = _empty(), _empty(), None, 0, True
        if top_k or bottom_k:
            eig = extreme_eigenpairs(op, top_k, bottom_k, max_steps=lanczos_steps, tol=tol, bottom_tol=bottom_tol,
                                     guard=guard, generator=eig_gen, warn=False)
            top = Eigenvalues(eig.top, eig.top_residuals, eig.top_errors, eig.top_converged)
            bottom = Eigenvalues(eig.bottom, eig.bottom_residuals, eig.bottom_errors, eig.bottom_converged)
            run, steps, converged = eig.run, eig.run.steps, eig.converged
            if not converged:
                warnings.warn(
                    f"hessian_spectrum: Lanczos did not converge in {steps} steps ({convergence_shortfall(eig)}); "
                    f"the reported eigenvalues are each within their residual of a true eigenvalue. Increase "
                    f"lanczos_steps for more accuracy.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        trace, trace_stderr, spectral_density = _trace_and_density(
            op, run, trace_probes, density_probes if density else 0, lanczos_steps, trace_gen, density_gen
        )
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


def _trace_and_density(
    op, run: LanczosRun | None, trace_probes: int, density_probes: int, steps: int,
    trace_gen: torch.Generator, density_gen: torch.Generator,
) -> tuple[float | None, float | None, SpectralDensity | None]:
    """Deflated trace and SLQ density around the extreme-eigenvalue run `run` (None if there was
    none), sharing products as described in `hessian_spectrum`."""
    basis = None if run is None else run.basis
    rank = 0 if basis is None else basis.shape[0]
    probes = rademacher_probes(trace_probes, trace_gen, op) if trace_probes and rank < op.dim else None
    density_runs = [run] if (run is not None and density_probes) else []
    extra = max(density_probes - len(density_runs), 0)
    shared = 0 if probes is None else min(extra, len(probes))

    samples: list[float] = []
    for g in probes[:shared] if shared else ():
        recorder = _FirstProduct(op)
        density_runs.append(lanczos(recorder, g, steps, keep_basis=False))
        hg = recorder.first * g.norm()  # the run started from g / ||g||
        samples.append(lanczos_relation_sample(g, hg, run))
    for _ in range(extra - shared):
        v0 = random_unit_vector(op.dim, density_gen, op.dtype, op.device)
        density_runs.append(lanczos(op, v0, steps, keep_basis=False))
    if probes is not None and len(probes) > shared:
        samples += deflated_samples(op, probes[shared:], basis)

    trace = trace_stderr = None
    if trace_probes:
        basis_trace = 0.0 if run is None else float(run.alphas.sum())
        estimate = (trace_from_samples(samples, basis_trace, rank) if probes is not None
                    else TraceEstimate(basis_trace, 0.0, 0, rank))  # the basis spans R^dim: exact
        trace, trace_stderr = estimate.value, estimate.stderr
    spectral_density = density_from_runs(density_runs) if density_runs else None
    return trace, trace_stderr, spectral_density
