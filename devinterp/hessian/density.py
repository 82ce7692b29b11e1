"""Eigenvalue density by stochastic Lanczos quadrature (SLQ; Ghorbani, Krishnan, Xiao 2019).

The spectral density is phi(t) = (1/dim) sum_i delta(t - lambda_i), normalised to integrate to 1: it is
the fraction of eigenvalues per unit eigenvalue (multiply by dim for counts). For a unit probe v,
v^T f(H) v = sum_i (v . u_i)^2 f(lambda_i); m Lanczos steps from v give the Gauss quadrature rule
with nodes theta_j (T's eigenvalues) and weights tau_j = (first component of T's j-th eigenvector)^2,
exact for polynomials f of degree < 2m. With v a normalised Rademacher vector,
E[v^T f(H) v] = tr f(H) / dim, so averaging the rules of several probes estimates phi; each node is
then replaced by a Gaussian of width sigma to draw a smooth density.

Any Lanczos run from a normalised Rademacher vector drawn independently of H is such a probe,
whatever made it stop: its m steps give the Gauss rule of degree 2m - 1 for that vector's spectral
measure (the stopping rule only picks m), and a restart after breakdown appends blocks orthogonal
to the start vector's Krylov space, whose Ritz vectors have zero first component (weight 0). So
`hessian_spectrum` uses its extreme-eigenvalue run as the first probe (`density_from_runs`) instead
of paying for a separate one.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from devinterp.hessian.lanczos import LanczosRun, lanczos, random_unit_vector, tridiagonal_eigh
from devinterp.hessian.linear_operator import SymmetricOperator

# Default Gaussian width, as a fraction of the node range max(theta) - min(theta).
DEFAULT_SIGMA_FRACTION = 0.01
DEFAULT_GRID_POINTS = 1000


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ estimate of the eigenvalue density (integrates to 1; see the module docstring).

    nodes, weights: (probes, steps) quadrature nodes (eigenvalue units) and weights per probe; each
        row of weights sums to 1. A probe whose Lanczos run was shorter than the longest (it stopped
        on convergence, or at an invariant subspace) is padded with nodes 0 of weight 0.
    grid, values: the density smoothed with Gaussians of width `sigma`, on an even grid covering
        the nodes +- 5 sigma.
    zero_band, mass_near_zero: `mass_within(zero_band)`, the estimated fraction of eigenvalues in
        [-zero_band, zero_band] (by default zero_band = sigma).
    """

    nodes: np.ndarray
    weights: np.ndarray
    grid: np.ndarray
    values: np.ndarray
    sigma: float
    zero_band: float
    mass_near_zero: float

    def moment(self, k: int) -> float:
        """The k-th moment of the (unsmoothed) estimate: an estimate of tr(H^k) / dim."""
        return float(np.mean(np.sum(self.weights * self.nodes**k, axis=1)))

    def smoothed(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """The density convolved with a Gaussian of width `sigma`, evaluated at `grid`."""
        z = (np.asarray(grid, dtype=np.float64)[:, None] - self.nodes.reshape(1, -1)) / sigma
        kernel = np.exp(-0.5 * z**2) / (sigma * np.sqrt(2 * np.pi))
        return kernel @ self.weights.reshape(-1) / self.nodes.shape[0]

    def mass_within(self, band: float) -> float:
        """Estimated fraction of eigenvalues in [-band, band]: the quadrature weight of the nodes there
        (unsmoothed, since smoothing would spread a spike at zero beyond a narrow band)."""
        return float(np.sum(self.weights * (np.abs(self.nodes) <= band)) / self.nodes.shape[0])


def quadrature_rule(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss quadrature nodes and weights from the Lanczos coefficients of a unit start vector."""
    nodes, vectors = tridiagonal_eigh(alphas, betas[:-1])
    return nodes, vectors[0, :] ** 2


def slq_density(
    op: SymmetricOperator,
    num_probes: int,
    steps: int,
    generator: torch.Generator,
    *,
    sigma: float | None = None,
    zero_band: float | None = None,
    grid_points: int = DEFAULT_GRID_POINTS,
) -> SpectralDensity:
    """SLQ with `num_probes` Rademacher probes and `steps` Lanczos steps each (full reorthogonalisation).

    sigma: Gaussian width in eigenvalue units (default DEFAULT_SIGMA_FRACTION of the node range).
    zero_band: half-width of the band around zero for `mass_near_zero` (default sigma).
    Costs num_probes * min(steps, dim) products at most.
    """
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    runs = [lanczos(op, random_unit_vector(op.dim, generator, op.dtype, op.device), steps, keep_basis=False)
            for _ in range(num_probes)]
    return density_from_runs(runs, sigma=sigma, zero_band=zero_band, grid_points=grid_points)


def density_from_runs(
    runs: Sequence[LanczosRun],
    *,
    sigma: float | None = None,
    zero_band: float | None = None,
    grid_points: int = DEFAULT_GRID_POINTS,
) -> SpectralDensity:
    """The SLQ density whose probes are the start vectors of `runs` (Lanczos runs from independent
    normalised Rademacher vectors, of any lengths; see the module docstring). sigma, zero_band,
    grid_points: as in `slq_density`. Costs no products."""
    if not runs:
        raise ValueError("need at least one Lanczos run")
    width = max(run.steps for run in runs)
    nodes = np.zeros((len(runs), width))
    weights = np.zeros((len(runs), width))
    for i, run in enumerate(runs):
        theta, tau = quadrature_rule(run.alphas, run.betas)
        nodes[i, : len(theta)] = theta
        weights[i, : len(tau)] = tau / tau.sum()  # sums to 1 up to round-off; make it exact

    live = nodes[weights > 0]
    span = float(live.max() - live.min())
    if sigma is None:
        sigma = DEFAULT_SIGMA_FRACTION * (span if span > 0 else max(float(np.abs(live).max()), 1.0))
    if zero_band is None:
        zero_band = sigma
    grid = np.linspace(live.min() - 5 * sigma, live.max() + 5 * sigma, grid_points)
    partial = SpectralDensity(nodes, weights, grid, np.zeros(0), sigma, zero_band, float("nan"))
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        grid=grid,
        values=partial.smoothed(grid, sigma),
        sigma=sigma,
        zero_band=zero_band,
        mass_near_zero=partial.mass_within(zero_band),
    )
