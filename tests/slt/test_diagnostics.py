import numpy as np

from devinterp.slt.diagnostics import effective_sample_size, split_rhat


def _ar1(rng, chains, draws, phi, means=None):
    x = np.zeros((chains, draws))
    noise = rng.standard_normal((chains, draws))
    for t in range(1, draws):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x + (0 if means is None else np.asarray(means)[:, None])


def test_rhat_near_one_for_agreeing_chains_and_large_for_disagreeing():
    rng = np.random.default_rng(0)
    agreeing = rng.standard_normal((4, 1000))
    assert abs(split_rhat(agreeing) - 1) < 0.01
    shifted = agreeing + np.array([0, 0, 0, 3.0])[:, None]
    assert split_rhat(shifted) > 1.3
    trending = agreeing + np.linspace(0, 5, 1000)  # a chain still drifting is caught by the split
    assert split_rhat(trending) > 1.3


def test_ess_of_independent_draws_is_about_the_number_of_draws():
    rng = np.random.default_rng(1)
    ess = effective_sample_size(rng.standard_normal((4, 1000)))
    assert 3400 < ess < 4600


def test_ess_of_ar1_matches_theory():
    # AR(1) with coefficient φ: integrated autocorrelation time (1 + φ) / (1 - φ) = 19 for φ = 0.9
    rng = np.random.default_rng(2)
    ess = effective_sample_size(_ar1(rng, 4, 20000, 0.9))
    assert 80000 / 19 * 0.75 < ess < 80000 / 19 * 1.25


def test_degenerate_inputs_give_nan_not_errors():
    assert np.isnan(split_rhat(np.ones((2, 3))))
    assert np.isnan(effective_sample_size(np.ones((2, 3))))
    assert np.isnan(split_rhat(np.ones((2, 10))))
