"""MCMC convergence diagnostics for loss traces of shape (chains, draws).

Both follow Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization, folding, and
localization: an improved R-hat" (without rank normalisation, which matters little for loss traces):

- `split_rhat`: each chain is split in half and the potential scale reduction factor is computed over
  the 2 * chains half-chains. Values near 1 mean the chains agree; > 1.1 is the usual alarm threshold.
- `effective_sample_size`: the multi-chain ESS with Geyer's initial monotone sequence estimator of the
  autocorrelation sum.
"""
from __future__ import annotations

import numpy as np


def split_rhat(traces: np.ndarray) -> float:
    """Split-R-hat of `traces` (chains, draws). NaN if fewer than 4 draws or no variance."""
    traces = np.asarray(traces, dtype=np.float64)
    if traces.ndim != 2 or traces.shape[1] < 4:
        return float("nan")
    half = traces.shape[1] // 2
    halves = np.concatenate([traces[:, :half], traces[:, -half:]], axis=0)
    n = halves.shape[1]
    within = halves.var(axis=1, ddof=1).mean()
    between = n * halves.mean(axis=1).var(ddof=1)
    if within <= 0:
        return float("nan")
    pooled = (n - 1) / n * within + between / n
    return float(np.sqrt(pooled / within))


def _autocovariance(x: np.ndarray) -> np.ndarray:
    """Autocovariance of each row of `x` at all lags (biased estimator, via FFT)."""
    n = x.shape[-1]
    centered = x - x.mean(axis=-1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    spectrum = np.fft.rfft(centered, n=size, axis=-1)
    return np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=-1)[..., :n] / n


def effective_sample_size(traces: np.ndarray) -> float:
    """Multi-chain effective sample size of `traces` (chains, draws). NaN if fewer than 4 draws."""
    traces = np.asarray(traces, dtype=np.float64)
    if traces.ndim != 2 or traces.shape[1] < 4:
        return float("nan")
    chains, draws = traces.shape
    acov = _autocovariance(traces)
    chain_var = acov[:, 0] * draws / (draws - 1)
    within = chain_var.mean()
    var_plus = within * (draws - 1) / draws
    if chains > 1:
        var_plus += traces.mean(axis=1).var(ddof=1)
    if var_plus <= 0:
        return float("nan")
    rho = 1.0 - (within - acov.mean(axis=0)) / var_plus
    rho[0] = 1.0
    # Geyer: sum consecutive pairs while positive, forcing the pair sums to be non-increasing.
    pair_sums = []
    for t in range(0, draws - 1, 2):
        pair = rho[t] + rho[t + 1]
        if pair <= 0:
            break
        pair_sums.append(min(pair, pair_sums[-1]) if pair_sums else pair)
    tau = -1.0 + 2.0 * sum(pair_sums) if pair_sums else 1.0
    tau = max(tau, 1.0 / np.log10(chains * draws + 10))  # Stan's cap on antithetic chains
    return float(chains * draws / tau)
