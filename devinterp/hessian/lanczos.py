"""Lanczos tridiagonalisation with full reorthogonalisation, and extreme eigenpairs from it.

After m steps from a unit start vector v_1, Lanczos has an orthonormal basis V = [v_1 .. v_m] of the
Krylov space span{v_1, H v_1, ..., H^(m-1) v_1} and the tridiagonal T = V^T H V (diagonal `alphas`,
off-diagonal `betas[:-1]`), with

    H V = V T + betas[-1] * v_(m+1) e_m^T.

An eigenpair (theta_i, s_i) of T gives the Ritz pair (theta_i, y_i = V s_i) with residual norm
||H y_i - theta_i y_i|| = |betas[-1] * s_i[-1]|, and some eigenvalue of H lies within that residual of
theta_i. Every new vector is orthogonalised twice against the whole basis ("full
reorthogonalisation"), which keeps V orthonormal to working precision and prevents the spurious
copies of converged eigenvalues that plain Lanczos produces. Memory: (m + 1) vectors of length dim.

If the Krylov space becomes invariant (a tiny beta: "breakdown"), `lanczos` either stops (what
quadrature needs: the start vector's spectral measure is then exact) or, with `restart_on_breakdown`,
continues from a fresh random vector orthogonal to the basis (T becomes block-diagonal); the latter
lets it find every copy of a repeated eigenvalue once the basis is large enough.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from devinterp.hessian.linear_operator import SymmetricOperator


@dataclass(frozen=True)
class LanczosRun:
    """The output of `lanczos`: T's coefficients and (optionally) the orthonormal basis.

    alphas: (m,) diagonal of T.  betas: (m,) where betas[:-1] is T's off-diagonal and betas[-1] the
    norm of the last residual (tiny if the run stopped at a breakdown). basis: (m, dim) rows, or None.
    """

    alphas: np.ndarray
    betas: np.ndarray
    basis: torch.Tensor | None
    # Largest residual norm dropped at a restart after breakdown (T's off-diagonal set to 0 there);
    # it bounds the perturbation this makes, so it is added to every Ritz residual.
    truncation: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.alphas)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and T's eigenvectors as columns."""
        return tridiagonal_eigh(self.alphas, self.betas[:-1])

    def ritz_residuals(self, eigvecs: np.ndarray) -> np.ndarray:
        """Residual norms ||H y_i - theta_i y_i|| of the Ritz pairs given T's eigenvectors."""
        return np.abs(self.betas[-1] * eigvecs[-1, :]) + self.truncation


def tridiagonal_eigh(alphas: np.ndarray, off_diagonal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal matrix."""
    if len(alphas) == 1:
        return np.asarray(alphas, dtype=np.float64), np.ones((1, 1))
    return scipy.linalg.eigh_tridiagonal(alphas, off_diagonal)


def _orthogonalise(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Remove from w its components along the (orthonormal) rows of basis, twice (CGS2)."""
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


def _fresh_direction(basis: torch.Tensor, op: SymmetricOperator, generator: torch.Generator) -> torch.Tensor | None:
    """A random unit vector orthogonal to `basis`, or None when none is found in a few draws (the basis
    spans, or nearly spans, the space: in small dimensions a Rademacher draw can repeat a basis vector)."""
    for _ in range(8):
        w = _orthogonalise(random_unit_vector(op.dim, generator, op.dtype, op.device), basis)
        norm = float(w.norm())
        if norm > 1e-3:
            return w / norm
    return None


def random_unit_vector(dim: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A Rademacher vector scaled to unit norm, drawn on the CPU from `generator` (so the same seed
    gives the same vector on any device)."""
    signs = torch.randint(0, 2, (dim,), generator=generator).to(torch.float64) * 2 - 1
    return (signs / dim**0.5).to(device=device, dtype=dtype)


def lanczos(
    op: SymmetricOperator,
    v0: torch.Tensor,
    steps: int,
    *,
    keep_basis: bool = True,
    restart_on_breakdown: bool = False,
    generator: torch.Generator | None = None,
    should_stop: Callable[[LanczosRun], bool] | None = None,
) -> LanczosRun:
    """Run at most `steps` Lanczos steps on `op` from `v0` (normalised internally; not modified).

    Args:
        keep_basis: return the basis (it is always kept internally for the reorthogonalisation).
        restart_on_breakdown: after an invariant subspace is found, continue from a random vector
            orthogonal to the basis (drawn from `generator`, required then) instead of stopping.
        should_stop: called after every step with the run so far (`basis` None); stop when it
            returns True.
    Each step costs one `op.matvec`. The run also stops when the basis spans all of R^dim.
    """
    steps = min(steps, op.dim)
    if restart_on_breakdown and generator is None:
        raise ValueError("restart_on_breakdown needs a generator")
    basis = torch.zeros(steps + 1, op.dim, dtype=op.dtype, device=op.device)
    basis[0] = v0.to(device=op.device, dtype=op.dtype) / v0.norm()
    alphas: list[float] = []
    betas: list[float] = []
    truncation = 0.0
    # Breakdown threshold: relative to the largest coefficient seen (an estimate of ||H||).
    eps = torch.finfo(op.dtype).eps
    scale = 0.0
    for j in range(steps):
        w = op.matvec(basis[j])
        alpha = float(basis[j] @ w)
        w = _orthogonalise(w, basis[: j + 1])
        beta = float(w.norm())
        alphas.append(alpha)
        scale = max(scale, abs(alpha), beta)
        breakdown = beta <= 10 * eps * max(scale, np.finfo(np.float64).tiny)
        last = j + 1 == steps
        fresh = None
        if breakdown and restart_on_breakdown and not last:
            truncation = max(truncation, beta)
            beta = 0.0
            fresh = _fresh_direction(basis[: j + 1], op, generator)
            if fresh is not None:
                basis[j + 1] = fresh
        if not breakdown and not last:
            basis[j + 1] = w / beta
        betas.append(beta)
        stop = last or (breakdown and fresh is None)
        if not stop and should_stop is not None:
            stop = should_stop(LanczosRun(np.array(alphas), np.array(betas), None, truncation))
        if stop:
            break
    m = len(alphas)
    return LanczosRun(np.array(alphas), np.array(betas), basis[:m] if keep_basis else None, truncation)


@dataclass(frozen=True)
class ExtremeEigenpairs:
    """Extreme Ritz values of one Lanczos run, with their residual norms ||H y - theta y||.

    top: descending (largest first), bottom: ascending (smallest first). `converged[i]` is
    `residual[i] <= tol * scale`, with scale = the largest |Ritz value| (an estimate of ||H||).
    """

    top: np.ndarray
    top_residuals: np.ndarray
    bottom: np.ndarray
    bottom_residuals: np.ndarray
    scale: float
    tol: float
    run: LanczosRun

    @property
    def converged(self) -> bool:
        return bool(
            np.all(self.top_residuals <= self.tol * self.scale)
            and np.all(self.bottom_residuals <= self.tol * self.scale)
        )


def _extremes(run: LanczosRun, top_k: int, bottom_k: int, tol: float) -> ExtremeEigenpairs:
    values, vectors = run.ritz()
    residuals = run.ritz_residuals(vectors)
    scale = float(np.max(np.abs(values)))
    top_k, bottom_k = min(top_k, len(values)), min(bottom_k, len(values))
    top_idx = np.arange(len(values) - 1, len(values) - 1 - top_k, -1)
    bottom_idx = np.arange(bottom_k)
    return ExtremeEigenpairs(
        top=values[top_idx], top_residuals=residuals[top_idx],
        bottom=values[bottom_idx], bottom_residuals=residuals[bottom_idx],
        scale=scale, tol=tol, run=run,
    )


def extreme_eigenpairs(
    op: SymmetricOperator,
    top_k: int,
    bottom_k: int,
    *,
    max_steps: int,
    tol: float,
    generator: torch.Generator,
    warn: bool = True,
) -> ExtremeEigenpairs:
    """The `top_k` largest and `bottom_k` smallest eigenvalues of `op` from one Lanczos run.

    Both ends come from the same Krylov space. The run starts from a random vector drawn from
    `generator` and stops as soon as every wanted Ritz pair has residual <= tol * ||H|| (||H|| estimated
    by the largest |Ritz value|), or after `max_steps` steps (capped at dim), when a RuntimeWarning
    is issued if some pair has not converged. Each step costs one H v product.
    """
    if top_k < 0 or bottom_k < 0 or top_k + bottom_k == 0:
        raise ValueError(f"need top_k, bottom_k >= 0 and not both 0, got {top_k}, {bottom_k}")
    if max(top_k, bottom_k) > op.dim:
        raise ValueError(f"top_k={top_k} / bottom_k={bottom_k} exceed the operator's dimension {op.dim}")
    # Never stop before the Krylov space could hold the wanted pairs with some room to spare (ARPACK's
    # default ncv = 2k + 1): a tiny space can show converged Ritz pairs that are not the extreme ones.
    min_steps = min(op.dim, 2 * (top_k + bottom_k) + 1)

    def converged(run: LanczosRun) -> bool:
        return run.steps >= min_steps and _extremes(run, top_k, bottom_k, tol).converged

    v0 = random_unit_vector(op.dim, generator, op.dtype, op.device)
    run = lanczos(op, v0, max_steps, restart_on_breakdown=True, generator=generator, should_stop=converged)
    result = _extremes(run, top_k, bottom_k, tol)
    if warn and not result.converged:
        worst = max(np.max(result.top_residuals, initial=0.0), np.max(result.bottom_residuals, initial=0.0))
        warnings.warn(
            f"Lanczos did not converge in {run.steps} steps: largest Ritz residual {worst:.3g} > "
            f"tol * |lambda|_max = {tol * result.scale:.3g}. The eigenvalues are less accurate than "
            f"requested (each is within its residual of a true eigenvalue); increase lanczos_steps or tol.",
            RuntimeWarning,
            stacklevel=2,
        )
    return result
