"""Lanczos, trace and SLQ on explicit matrices with known spectra (cheap, so statistics are checkable)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from devinterp.hessian import MatrixOperator, deflated_hutchinson, extreme_eigenpairs, hutchpp, lanczos, slq_density
from devinterp.hessian.lanczos import random_unit_vector


def matrix_with_spectrum(eigenvalues, seed: int = 0) -> torch.Tensor:
    eigenvalues = torch.as_tensor(eigenvalues, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g, dtype=torch.float64))
    return (q * eigenvalues) @ q.T


def bulk_with_outliers(dim: int = 200, seed: int = 0) -> np.ndarray:
    """A Hessian-like spectrum: a bulk near zero, a few negative values, clustered top outliers."""
    rng = np.random.default_rng(seed)
    bulk = rng.normal(0.0, 0.05, dim - 8)
    return np.concatenate([bulk, [-1.0, -0.7], [5.0, 4.999, 4.998, 3.0, 2.0, 1.5]])


def test_quadrature_is_exact_for_low_degree_polynomials():
    """m steps from v give weights/nodes with sum tau theta^k = v^T H^k v for k < 2m."""
    h = matrix_with_spectrum(np.linspace(-1, 2, 60))
    op = MatrixOperator(h)
    v = random_unit_vector(60, torch.Generator().manual_seed(1), torch.float64, torch.device("cpu"))
    run = lanczos(op, v, 8)
    theta, vectors = run.ritz()
    tau = vectors[0] ** 2
    power = v.clone()
    for k in range(16):
        assert np.isclose(np.sum(tau * theta**k), float(v @ power), rtol=1e-9, atol=1e-12), k
        power = h @ power
    basis = run.basis
    assert torch.allclose(basis @ basis.T, torch.eye(8, dtype=torch.float64), atol=1e-12)
    assert op.num_matvecs == 8


def test_clustered_top_eigenvalues_and_residual_bounds():
    spectrum = bulk_with_outliers()
    op = MatrixOperator(matrix_with_spectrum(spectrum))
    result = extreme_eigenpairs(op, 5, 2, max_steps=200, tol=1e-10, generator=torch.Generator().manual_seed(0))
    exact = np.sort(spectrum)
    assert result.converged
    np.testing.assert_allclose(result.top, exact[::-1][:5], rtol=1e-8)
    np.testing.assert_allclose(result.bottom, exact[:2], rtol=1e-8)
    assert result.run.steps < 200  # stopped early, once converged

    # Stopped after a few steps: every Ritz value is within its residual of some eigenvalue.
    with pytest.warns(RuntimeWarning, match="did not converge"):
        short = extreme_eigenpairs(op, 5, 2, max_steps=15, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert not short.converged
    for values, residuals in [(short.top, short.top_residuals), (short.bottom, short.bottom_residuals)]:
        for value, residual in zip(values, residuals):
            assert np.min(np.abs(exact - value)) <= residual * (1 + 1e-8) + 1e-12


def test_repeated_eigenvalues_are_all_found():
    """A start vector sees a repeated eigenvalue once; restarting after breakdown finds every copy."""
    spectrum = np.array([3.0, 3.0, 3.0, 1.0, 0.5, 0.5, -2.0, -2.0] + [0.1] * 12)
    op = MatrixOperator(matrix_with_spectrum(spectrum))
    result = extreme_eigenpairs(op, 4, 3, max_steps=20, tol=1e-10, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(result.top, [3.0, 3.0, 3.0, 1.0], rtol=1e-10)
    np.testing.assert_allclose(result.bottom, [-2.0, -2.0, 0.1], rtol=1e-10)


def test_trace_estimators_are_unbiased_with_calibrated_stderr():
    """Over many seeds: mean error ~ 0 and standardized errors have spread ~ 1."""
    spectrum = bulk_with_outliers(dim=120)
    op = MatrixOperator(matrix_with_spectrum(spectrum))
    exact = spectrum.sum()
    for estimator in (lambda g: hutchpp(op, 30, g), lambda g: deflated_hutchinson(op, 30, g)):
        z = []
        for seed in range(200):
            est = estimator(torch.Generator().manual_seed(seed))
            z.append((est.value - exact) / est.stderr)
        z = np.array(z)
        assert abs(z.mean()) < 4 / np.sqrt(len(z))
        assert 0.75 < z.std() < 1.3
    # Deflating by an invariant subspace of the outliers shrinks the standard error.
    plain = deflated_hutchinson(op, 30, torch.Generator().manual_seed(0))
    q = torch.linalg.eigh(op.matrix).eigenvectors[:, [0, 1, -6, -5, -4, -3, -2, -1]].T
    deflated = deflated_hutchinson(op, 30, torch.Generator().manual_seed(0), q, float(torch.trace(q @ op.matrix @ q.T)))
    assert deflated.stderr < plain.stderr / 3
    assert abs(deflated.value - exact) < 4 * deflated.stderr


def test_slq_moments_and_mass_near_zero():
    """Per probe the quadrature reproduces v^T H^k v; averaged it estimates tr(H^k)/dim; 60% of the
    eigenvalues are exactly 0, the rest far from it."""
    rng = np.random.default_rng(0)
    dim = 150
    spectrum = np.concatenate([np.zeros(90), rng.uniform(1.0, 10.0, 55), [-3.0, -2.0, 20.0, 25.0, 30.0]])
    h = matrix_with_spectrum(spectrum)
    op = MatrixOperator(h)
    density = slq_density(op, num_probes=10, steps=30, generator=torch.Generator().manual_seed(3))

    # Reconstruct the probes from an identically seeded generator.
    g = torch.Generator().manual_seed(3)
    for i in range(10):
        v = random_unit_vector(dim, g, torch.float64, torch.device("cpu"))
        for k in range(4):
            expected = float(v @ torch.linalg.matrix_power(h, k) @ v)
            assert np.isclose(np.sum(density.weights[i] * density.nodes[i] ** k), expected, rtol=1e-8)

    # Statistical agreement with the exact spectrum (Rademacher variance formula).
    for k in (1, 2):
        hk = torch.linalg.matrix_power(h, k)
        per_probe_sd = np.sqrt(2 * (float((hk**2).sum()) - float((hk.diagonal() ** 2).sum()))) / dim
        assert abs(density.moment(k) - np.mean(spectrum**k)) < 4 * per_probe_sd / np.sqrt(10)
    assert density.moment(0) == pytest.approx(1.0)
    assert np.trapezoid(density.values, density.grid) == pytest.approx(1.0, abs=1e-3)
    assert density.mass_near_zero == pytest.approx(0.6, abs=0.12)
    assert density.mass_within(0.5) == pytest.approx(0.6, abs=0.12)
    assert density.mass_within(1e9) == pytest.approx(1.0)


def test_lanczos_restarts_survive_small_dimensions_and_repeated_eigenvalues():
    """In 4 dimensions a Rademacher restart vector often repeats a basis vector (16 choices); 2·I breaks
    down at every step. The run must still end with finite, correct Ritz values."""
    generator = torch.Generator().manual_seed(0)
    for matrix, top in ((2 * torch.eye(4, dtype=torch.float64), 2.0),
                        (torch.diag(torch.tensor([2.0, 2.0, 0.0, 0.0], dtype=torch.float64)), 2.0),
                        (torch.zeros(3, 3, dtype=torch.float64), 0.0)):
        result = extreme_eigenpairs(MatrixOperator(matrix), 1, 1, max_steps=30, tol=1e-2, generator=generator,
                                    warn=False)
        assert result.top[0] == pytest.approx(top) and np.isfinite(result.bottom).all()
