"""Lanczos, trace and SLQ on explicit matrices with known spectra (cheap, so statistics are checkable)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from devinterp.hessian import MatrixOperator, deflated_hutchinson, extreme_eigenpairs, hutchpp, lanczos, slq_density
from devinterp.hessian.density import density_from_runs
from devinterp.hessian.lanczos import random_unit_vector, ritz_error_bounds
from devinterp.hessian.trace import lanczos_relation_sample, project_off, rademacher_probes


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
        short = extreme_eigenpairs(op, 5, 2, max_steps=9, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert not short.converged
    for values, residuals in [(short.top, short.top_residuals), (short.bottom, short.bottom_residuals)]:
        for value, residual in zip(values, residuals):
            assert np.min(np.abs(exact - value)) <= residual * (1 + 1e-8) + 1e-12


def test_error_estimates_and_the_stopping_rule():
    """min(r, r^2/gap) with the Ritz gap is an estimate, not a bound (a cluster the Krylov space has not
    resolved yet, like 5.0, 4.999, 4.998 here, looks like one eigenvalue); it never exceeds the residual
    and is far below it once the values separate. Stopped on it, every reported value is within tol of
    an eigenvalue (relative for the top, of ||H|| for the bottom) up to a factor 2 for such clusters:
    the worst over these 20 spectra x 5 tolerances is 1.3 tol."""
    for seed in range(20):
        spectrum = bulk_with_outliers(seed=seed)
        exact = np.sort(spectrum)
        op = MatrixOperator(matrix_with_spectrum(spectrum, seed=seed))
        for tol in (1e-2, 1e-3, 1e-4, 1e-6, 1e-8):
            for top_k, bottom_k in ((3, 1), (5, 2)):
                result = extreme_eigenpairs(op, top_k, bottom_k, max_steps=200, tol=tol,
                                            generator=torch.Generator().manual_seed(seed))
                assert result.converged
                assert np.all(result.top_errors <= result.top_residuals)
                assert np.all(result.bottom_errors <= result.bottom_residuals)
                top_error = [np.min(np.abs(exact - v)) / abs(v) for v in result.top]
                bottom_error = [np.min(np.abs(exact - v)) / result.scale for v in result.bottom]
                assert max(top_error + bottom_error) <= 2 * tol, (seed, tol, top_k)
    # A looser tolerance for the bottom values alone stops no later, and still bounds their error.
    strict = extreme_eigenpairs(op, 3, 1, max_steps=200, tol=1e-6, generator=torch.Generator().manual_seed(0))
    loose = extreme_eigenpairs(op, 3, 1, max_steps=200, tol=1e-6, bottom_tol=1e-2,
                               generator=torch.Generator().manual_seed(0))
    assert loose.converged and loose.run.steps <= strict.run.steps
    assert np.min(np.abs(exact - loose.bottom[0])) <= 2e-2 * loose.scale
    assert np.max(np.abs(loose.top - exact[::-1][:3]) / exact[::-1][:3]) <= 2e-6
    run = lanczos(op, random_unit_vector(op.dim, torch.Generator().manual_seed(0), torch.float64, op.device), 40)
    values, vectors = run.ritz()
    residuals = run.ritz_residuals(vectors)
    assert ritz_error_bounds(values, residuals)[-1] < 1e-3 * residuals[-1]


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


def test_lanczos_relation_sample_equals_the_projected_quadratic_form():
    """(Pg)^T H (Pg) from H g alone, P off a Lanczos basis: equal to the direct form, also when the run
    restarted after a breakdown (repeated eigenvalues)."""
    for spectrum in (bulk_with_outliers(dim=80), np.array([3.0, 3.0, 1.0, 1.0, 0.5] + [0.1] * 15)):
        op = MatrixOperator(matrix_with_spectrum(spectrum))
        eig = extreme_eigenpairs(op, 3, 1, max_steps=12, tol=1e-12, generator=torch.Generator().manual_seed(0),
                                 warn=False)
        basis = eig.run.basis
        g = rademacher_probes(4, torch.Generator().manual_seed(1), op)
        for row in g:
            direct = project_off(row[None], basis)[0]
            expected = float(direct @ op.matrix @ direct)
            got = lanczos_relation_sample(row, op.matrix @ row, eig.run)
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-9 * float(np.abs(spectrum).sum()))
        assert lanczos_relation_sample(g[0], op.matrix @ g[0], None) == pytest.approx(float(g[0] @ op.matrix @ g[0]))


def test_density_from_runs_of_different_lengths():
    """A shorter run (e.g. the extreme-eigenvalue run, stopped on convergence) is a valid probe: padded
    with zero weights, its moments are its start vector's."""
    spectrum = bulk_with_outliers(dim=120)
    h = matrix_with_spectrum(spectrum)
    op = MatrixOperator(h)
    g = torch.Generator().manual_seed(5)
    starts = [random_unit_vector(op.dim, g, torch.float64, torch.device("cpu")) for _ in range(3)]
    runs = [lanczos(op, v, steps, keep_basis=False) for v, steps in zip(starts, (7, 20, 13))]
    density = density_from_runs(runs)
    assert density.nodes.shape == (3, 20)
    assert np.all(density.weights[0, 7:] == 0)
    for i, v in enumerate(starts):
        for k in range(4):
            expected = float(v @ torch.linalg.matrix_power(h, k) @ v)
            assert np.isclose(np.sum(density.weights[i] * density.nodes[i] ** k), expected, rtol=1e-8)


def test_guard_converges_one_more_top_value():
    """guard=1: the stop also waits for the value below the top_k (error <= tol * |theta_k|)."""
    spectrum = bulk_with_outliers(dim=150, seed=3)
    op = MatrixOperator(matrix_with_spectrum(spectrum, seed=3))
    kwargs = dict(max_steps=150, tol=1e-6, generator=None)
    runs = {g: extreme_eigenpairs(op, 2, 1, guard=g, **{**kwargs, "generator": torch.Generator().manual_seed(1)})
            for g in (0, 1)}
    assert runs[1].run.steps >= runs[0].run.steps and runs[1].converged
    values, vectors = runs[1].run.ritz()
    errors = ritz_error_bounds(values, runs[1].run.ritz_residuals(vectors))[::-1]
    assert errors[2] <= 1e-6 * abs(runs[1].top[1])
    np.testing.assert_allclose(runs[1].top, np.sort(spectrum)[::-1][:2], rtol=1e-6)
