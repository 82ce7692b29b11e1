"""GP smoothing in log-step: fit quality, derivative, binning, noise handling."""
import numpy as np
import pytest

from devinterp.transitions.smoothing import fit_gp, log_step, step_from_log
from devinterp.transitions.synthetic import checkpoint_steps


def test_log_step_convention():
    np.testing.assert_allclose(log_step([0, np.e - 1]), [0.0, 1.0])
    np.testing.assert_allclose(step_from_log(log_step([0, 5, 2000])), [0, 5, 2000])


def test_recovers_smooth_curve_and_its_derivative():
    steps = checkpoint_steps()
    x = log_step(steps)
    truth = 3.0 * np.tanh(x - 4.0)
    rng = np.random.default_rng(0)
    fit = fit_gp(steps, truth + 0.2 * rng.standard_normal(len(x)), np.full(len(x), 0.2))
    grid = np.linspace(x.min() + 0.5, x.max(), 50)
    mean, sd = fit.predict(grid)
    assert np.max(np.abs(mean - 3.0 * np.tanh(grid - 4.0))) < 0.3
    assert np.mean(np.abs(mean - 3.0 * np.tanh(grid - 4.0)) <= 3 * sd) > 0.9  # calibrated-ish
    slope, slope_sd = fit.derivative(grid)
    true_slope = 3.0 / np.cosh(grid - 4.0) ** 2
    assert np.max(np.abs(slope - true_slope)) < 0.6
    d, d_sd = fit.difference(grid[0], grid[-1])
    assert abs(d[0] - (mean[-1] - mean[0])) < 1e-9 and d_sd[0] > 0


def test_posterior_draws_have_the_posterior_mean_and_std():
    steps = checkpoint_steps()
    rng = np.random.default_rng(3)
    fit = fit_gp(steps, np.tanh(log_step(steps) - 4.0) + 0.2 * rng.standard_normal(len(steps)), np.full(len(steps), 0.2))
    x = np.linspace(0.0, log_step(steps[-1]) + 1.0, 25)  # past the last point the posterior widens
    draws = fit.sample(x, 4000, np.random.default_rng(4))
    mean, sd = fit.predict(x)
    assert draws.shape == (4000, 25)
    np.testing.assert_allclose(draws.mean(axis=0), mean, atol=4 * sd.max() / np.sqrt(4000))
    np.testing.assert_allclose(draws.std(axis=0), sd, rtol=0.1)
    same = fit.sample(x, 5, np.random.default_rng(4))
    # seeded: the same draws, to rounding (BLAS blocks 5 rows and 4000 differently)
    np.testing.assert_allclose(same, draws[:5], rtol=1e-12, atol=1e-12)


def test_estimated_noise_is_close_to_the_truth():
    steps = checkpoint_steps()
    rng = np.random.default_rng(1)
    y = np.sin(log_step(steps)) + 0.3 * rng.standard_normal(len(steps))
    fit = fit_gp(steps, y)
    assert 0.2 < np.sqrt(fit.fitted_noise_var) < 0.4


def test_binning_above_max_points_keeps_the_fit():
    steps = checkpoint_steps(total=50_000, n_log=100, n_linear=600)
    rng = np.random.default_rng(2)
    y = 2.0 * np.tanh(log_step(steps) - 6.0) + 0.2 * rng.standard_normal(len(steps))
    fit = fit_gp(steps, y, np.full(len(steps), 0.2), max_points=80)
    assert len(fit.x) <= 80 and fit.n_raw == len(steps)
    grid = np.linspace(3.0, log_step(50_000), 30)
    mean, _ = fit.predict(grid)
    assert np.max(np.abs(mean - 2.0 * np.tanh(grid - 6.0))) < 0.3


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 3"):
        fit_gp([0, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match="noise_std"):
        fit_gp([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0], [-1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="equal length"):
        fit_gp([0, 1, 2], [1.0, 2.0])
