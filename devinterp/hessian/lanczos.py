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

Accuracy of a Ritz value: besides the residual bound, once theta_i is separated from the rest of the
spectrum by a gap delta_i, |theta_i - lambda| <= r_i^2 / delta_i (Kato-Temple; Parlett, The Symmetric
Eigenvalue Problem, 11.7), usually far smaller than r_i. `ritz_error_bounds` estimates delta_i by the
distance to the nearest other Ritz value, so min(r_i, r_i^2 / delta_i) is an estimate (not a guarantee:
an eigenvalue the Krylov space has not yet seen could lie closer); `extreme_eigenpairs` stops on it.

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


def ritz_error_bounds(values: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """Estimated errors of Ritz values (ascending `values`, their `residuals`): min(r_i, r_i^2 / gap_i)
    with gap_i the distance from theta_i to the nearest other Ritz value (see the module docstring).
    A lone Ritz value, or one with a zero gap (a repeated value), keeps its residual bound."""
    values, residuals = np.asarray(values, dtype=np.float64), np.asarray(residuals, dtype=np.float64)
    if len(values) < 2:
        return residuals.copy()
    diffs = np.diff(values)
    gaps = np.minimum(np.concatenate([[np.inf], diffs]), np.concatenate([diffs, [np.inf]]))
    with np.errstate(divide="ignore", invalid="ignore"):
        quadratic = np.where(gaps > 0, residuals**2 / gaps, np.inf)
    return np.minimum(residuals, quadratic)


@dataclass(frozen=True)
class ExtremeEigenpairs:
    """Extreme Ritz values of one Lanczos run, with their residual norms ||H y - theta y|| and estimated
    errors (`ritz_error_bounds`).

    top: descending (largest first), bottom: ascending (smallest first). A top value has converged
    when its error estimate is <= tol * |theta| (relative accuracy of the sharpness); a bottom value
    when it is <= bottom_tol * scale, with scale = the largest |Ritz value| (an estimate of ||H||: the
    smallest eigenvalues are often ~0, where a relative accuracy would never be reached).
    """

    top: np.ndarray
    top_residuals: np.ndarray
    top_errors: np.ndarray
    bottom: np.ndarray
    bottom_residuals: np.ndarray
    bottom_errors: np.ndarray
    scale: float
    tol: float
    bottom_tol: float
    run: LanczosRun

    @property
    def top_converged(self) -> np.ndarray:
        return self.top_errors <= self.tol * np.abs(self.top)

    @property
    def bottom_converged(self) -> np.ndarray:
        return self.bottom_errors <= self.bottom_tol * self.scale

    @property
    def converged(self) -> bool:
        return bool(np.all(self.top_converged) and np.all(self.bottom_converged))


def _extremes(run: LanczosRun, top_k: int, bottom_k: int, tol: float, bottom_tol: float) -> ExtremeEigenpairs:
    values, vectors = run.ritz()
    residuals = run.ritz_residuals(vectors)
    errors = ritz_error_bounds(values, residuals)
    scale = float(np.max(np.abs(values)))
    top_k, bottom_k = min(top_k, len(values)), min(bottom_k, len(values))
    top_idx = np.arange(len(values) - 1, len(values) - 1 - top_k, -1)
    bottom_idx = np.arange(bottom_k)
    return ExtremeEigenpairs(
        top=values[top_idx], top_residuals=residuals[top_idx], top_errors=errors[top_idx],
        bottom=values[bottom_idx], bottom_residuals=residuals[bottom_idx], bottom_errors=errors[bottom_idx],
        scale=scale, tol=tol, bottom_tol=bottom_tol, run=run,
    )


def _guard_converged(run: LanczosRun, top_k: int, guard: int, tol: float) -> bool:
    """Whether the `guard` Ritz values below the top `top_k` have error estimates <= tol * |theta_k|
    (False while the run has fewer Ritz values than that)."""
    values, vectors = run.ritz()
    if len(values) < top_k + guard:
        return False
    errors = ritz_error_bounds(values, run.ritz_residuals(vectors))[::-1]
    return bool(np.all(errors[top_k : top_k + guard] <= tol * abs(values[::-1][top_k - 1])))


def extreme_eigenpairs(
    op: SymmetricOperator,
    top_k: int,
    bottom_k: int,
    *,
    max_steps: int,
    tol: float,
    generator: torch.Generator,
    bottom_tol: float | None = None,
    guard: int = 1,
    warn: bool = True,
) -> ExtremeEigenpairs:
    """The `top_k` largest and `bottom_k` smallest eigenvalues of `op` from one Lanczos run.

    Both ends come from the same Krylov space. The run starts from a random unit Rademacher vector
    drawn from `generator` (`run.basis[0]`) and stops as soon as every wanted Ritz value has converged
    (error estimate <= tol * |theta| for the top ones, <= bottom_tol * ||H|| for the bottom ones,
    bottom_tol defaulting to tol; see `ExtremeEigenpairs`) and so have the `guard` next values below the
    top ones (error estimate <= tol * |theta_top_k|), or after `max_steps` steps (capped at dim), when a
    RuntimeWarning is issued if some wanted value has not converged. Each step costs one H v product.

    The guard is against a missed eigenvalue: a single Krylov space can show the top_k converged while
    an eigenvalue above the k-th has not appeared yet (its start-vector component is small). Such a
    space rarely also shows the next value converged. On the default induction run (44 checkpoints x 2
    seeds) guard=0 missed one top-3 eigenvalue by 20% (checkpoint 769), guard=1 none, for 2.6 more
    steps on average (scripts/bench_hessian.py).
    """
    if top_k < 0 or bottom_k < 0 or top_k + bottom_k == 0:
        raise ValueError(f"need top_k, bottom_k >= 0 and not both 0, got {top_k}, {bottom_k}")
    bottom_tol = tol if bottom_tol is None else bottom_tol
    if max(top_k, bottom_k) > op.dim:
        raise ValueError(f"top_k={top_k} / bottom_k={bottom_k} exceed the operator's dimension {op.dim}")
    # Never stop before the Krylov space could hold the wanted pairs with some room to spare (ARPACK's
    # default ncv = 2k + 1): a tiny space can show converged Ritz pairs that are not the extreme ones.
    min_steps = min(op.dim, 2 * (top_k + bottom_k) + 1)

    def converged(run: LanczosRun) -> bool:
        if run.steps < min_steps or not _extremes(run, top_k, bottom_k, tol, bottom_tol).converged:
            return False
        return not (top_k and guard) or _guard_converged(run, top_k, guard, tol)

    v0 = random_unit_vector(op.dim, generator, op.dtype, op.device)
    run = lanczos(op, v0, max_steps, restart_on_breakdown=True, generator=generator, should_stop=converged)
    result = _extremes(run, top_k, bottom_k, tol, bottom_tol)
    if warn and not result.converged:
        warnings.warn(
            f"Lanczos did not converge in {run.steps} steps: {convergence_shortfall(result)}. The eigenvalues "
            f"are less accurate than requested (each is within its residual of a true eigenvalue); increase "
            f"lanczos_steps or tol.",
            RuntimeWarning,
            stacklevel=2,
        )
    return result


def convergence_shortfall(result: ExtremeEigenpairs) -> str:
    """Which wanted Ritz value is furthest from converged, in words (for warnings)."""
    candidates = [(e, result.tol * abs(v), f"top value {v:.6g}", "tol * |value|")
                  for v, e in zip(result.top, result.top_errors)]
    candidates += [(e, result.bottom_tol * result.scale, f"bottom value {v:.6g}", "bottom_tol * |lambda|_max")
                   for v, e in zip(result.bottom, result.bottom_errors)]
    if not candidates:
        return "nothing wanted"
    error, bound, what, rule = max(candidates, key=lambda c: c[0] / c[1] if c[1] > 0 else np.inf)
    return f"{what} has error estimate {error:.3g} > {rule} = {bound:.3g}"
