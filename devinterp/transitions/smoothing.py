"""Gaussian-process smoothing of a metric against log training step.

Convention used throughout `devinterp.transitions`: the abscissa is
``x = log(step + 1)`` with the **natural** logarithm, so step 0 maps to x = 0 and a distance of
0.1 in x is a ~10.5% change in step. Derivatives are per unit of x ("per e-fold of steps").

The model is ``y_i = m + f(x_i) + eps_i`` with a constant mean ``m`` (the noise-weighted mean of
y), ``f ~ GP(0, s_f^2 exp(-(x - x')^2 / (2 l^2)))`` (squared-exponential kernel) and independent
Gaussian noise ``eps_i ~ N(0, known_i + s_n^2 / count_i)``:

- ``known_i`` is the squared noise std the caller supplies (e.g. the LLC chain-to-chain spread);
- ``s_n^2`` is a fitted noise variance: the whole noise when no std is given, otherwise an
  *excess* noise on top of the given one (set ``fit_excess_noise=False`` to trust the given std
  exactly);
- ``count_i`` is the number of raw points averaged into point i (see binning below).

Hyperparameters (s_f, l, s_n) maximise the log marginal likelihood (bounded truncated-Newton,
scipy's TNC, with analytic gradients, from a fixed set of starting points: deterministic; TNC
rather than L-BFGS-B because on a loaded machine the latter's multithreaded BLAS calls made it
~30x slower for this 3-parameter problem). The lengthscale is bounded below by ``min_lengthscale`` so the fit
cannot chase single noisy points.

Checkpoint schedules that are a union of log-spaced and linearly spaced steps crowd the late part
of training in x. When there are more than ``max_points`` points, they are averaged in equal-width
bins of x (each bin's noise variance shrinks with its count), which keeps the fit O(max_points^3)
and gives each region of log-time a comparable say.

Posterior means, derivative means and standard deviations, and the posterior of differences
f(b) - f(a) are closed-form (`GPFit`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

# Linear algebra goes through numpy only and avoids large matrix-matrix products: the matrices are
# small (<= max_points), and on a loaded machine multithreaded BLAS-3 calls (scipy's triangular
# solves, numpy's matmul) were measured 10-100x slower than the plain numpy routines used here.


def _chol_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve (L L^T) a = b for a lower-triangular Cholesky factor L."""
    return np.linalg.solve(L.T, np.linalg.solve(L, b))


def log_step(steps) -> np.ndarray:
    """x = ln(step + 1), the abscissa of every fit in this package."""
    return np.log(np.asarray(steps, dtype=float) + 1.0)


def step_from_log(x) -> np.ndarray:
    """Inverse of `log_step` (float steps; round where integer steps are needed)."""
    return np.expm1(np.asarray(x, dtype=float))


@dataclass(frozen=True)
class GPFit:
    """A fitted GP in x = ln(step + 1). Arrays are the (possibly binned) training points."""

    x: np.ndarray
    y: np.ndarray
    noise_var: np.ndarray  # per training point, total (given + fitted excess, after binning)
    mean: float  # constant prior mean m
    signal_var: float  # s_f^2
    lengthscale: float  # l, in units of x
    fitted_noise_var: float  # s_n^2 (per raw point)
    n_raw: int  # number of raw points before binning
    chol: np.ndarray  # lower Cholesky factor of K + diag(noise_var)
    alpha: np.ndarray  # (K + diag(noise_var))^{-1} (y - mean)

    # -- kernel pieces -------------------------------------------------------------------------
    def _k(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = a[:, None] - b[None, :]
        return self.signal_var * np.exp(-0.5 * (d / self.lengthscale) ** 2)

    def _dk(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """d k(a, b) / d a."""
        d = a[:, None] - b[None, :]
        return -d / self.lengthscale**2 * self.signal_var * np.exp(-0.5 * (d / self.lengthscale) ** 2)

    def _whiten(self, kxs: np.ndarray) -> np.ndarray:
        """L^{-1} k for columns of k (shape n_train x m)."""
        return np.linalg.solve(self.chol, kxs)

    # -- posterior ------------------------------------------------------------------------------
    def predict(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of m + f(x) (the noise-free curve) at x = ln(step + 1)."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        ks = self._k(self.x, x)
        mu = self.mean + ks.T @ self.alpha
        v = self._whiten(ks)
        var = np.maximum(self.signal_var - np.sum(v * v, axis=0), 0.0)
        return mu, np.sqrt(var)

    def derivative(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of df/dx (change per unit of ln(step + 1))."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        dks = self._dk(x, self.x).T  # n_train x m: d k(x*, x_i) / d x*
        mu = dks.T @ self.alpha
        v = self._whiten(dks)
        var = np.maximum(self.signal_var / self.lengthscale**2 - np.sum(v * v, axis=0), 0.0)
        return mu, np.sqrt(var)

    def sample(self, x, size: int, rng: np.random.Generator) -> np.ndarray:
        """`size` joint posterior draws of m + f at x (shape size x len(x)): curves the data allow."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        ks = self._k(self.x, x)
        v = self._whiten(ks)
        cov = self._k(x, x) - v.T @ v
        eigenvalues, vectors = np.linalg.eigh((cov + cov.T) / 2)  # positive semi-definite up to round-off
        root = vectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
        return self.mean + ks.T @ self.alpha + rng.standard_normal((size, len(x))) @ root.T

    def difference(self, a, b) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and std of f(b) - f(a), elementwise over paired arrays a, b (in x)."""
        a = np.atleast_1d(np.asarray(a, dtype=float))
        b = np.atleast_1d(np.asarray(b, dtype=float))
        kd = self._k(self.x, b) - self._k(self.x, a)
        mu = kd.T @ self.alpha
        v = self._whiten(kd)
        prior = 2.0 * self.signal_var * (1.0 - np.exp(-0.5 * ((b - a) / self.lengthscale) ** 2))
        var = np.maximum(prior - np.sum(v * v, axis=0), 0.0)
        return mu, np.sqrt(var)


def _bin(x, y, known_var, max_points):
    """Average points in equal-width x bins when there are more than max_points of them."""
    order = np.argsort(x, kind="stable")
    x, y, known_var = x[order], y[order], known_var[order]
    counts = np.ones_like(x)
    if len(x) <= max_points:
        return x, y, known_var, counts
    edges = np.linspace(x[0], x[-1], max_points + 1)
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, max_points - 1)
    used = np.unique(idx)
    counts = np.bincount(idx, minlength=max_points)[used].astype(float)
    xs = np.bincount(idx, weights=x, minlength=max_points)[used] / counts
    ys = np.bincount(idx, weights=y, minlength=max_points)[used] / counts
    # variance of a mean of `count` independent points with the given variances
    kv = np.bincount(idx, weights=known_var, minlength=max_points)[used] / counts**2
    return xs, ys, kv, counts


def _nlml(theta, r, known_var, inv_counts, d2, fit_noise):
    """Negative log marginal likelihood and its gradient, theta = log(s_f^2), log(l), log(s_n^2)."""
    sf2, ell, sn2 = np.exp(theta)
    Kf = sf2 * np.exp(-0.5 * d2 / ell**2)
    K = Kf.copy()
    K[np.diag_indices_from(K)] += known_var + sn2 * inv_counts + 1e-10 * sf2
    try:
        L = np.linalg.cholesky(K)
    except np.linalg.LinAlgError:
        return 1e25, np.zeros(3)
    a = _chol_solve(L, r)
    value = 0.5 * r @ a + np.sum(np.log(np.diag(L))) + 0.5 * len(r) * np.log(2 * np.pi)
    # d/dtheta = 0.5 tr((K^-1 - a a^T) dK/dtheta)
    W = np.linalg.inv(K) - np.outer(a, a)  # (a plain inverse: no large BLAS-3 products)
    grad = np.array([
        0.5 * np.sum(W * Kf),
        0.5 * np.sum(W * Kf * d2) / ell**2,
        0.5 * np.sum(np.diag(W) * sn2 * inv_counts) if fit_noise else 0.0,
    ])
    return value, grad


def fit_gp(
    steps,
    values,
    noise_std=None,
    *,
    fit_excess_noise: bool = True,
    min_lengthscale: float = 0.15,
    max_points: int = 150,
) -> GPFit:
    """Fit the GP described in the module docstring to one metric series.

    steps: training steps (>= 0); values: the metric; noise_std: optional per-point noise std
    (same length, >= 0; e.g. the LLC chain spread); min_lengthscale: lower bound on the kernel
    lengthscale in units of ln(step + 1); max_points: bin above this many points.
    """
    steps, y, known, fit_noise = _checked_series(steps, values, noise_std, fit_excess_noise, min_lengthscale,
                                                 max_points)
    x, yb, known_b, counts = _bin(log_step(steps), y, known, max_points)
    inv_counts = 1.0 / counts
    wts = 1.0 / (known_b + inv_counts * max(np.var(yb), 1e-300))
    mean = float(np.sum(wts * yb) / np.sum(wts))
    r = yb - mean
    d2 = (x[:, None] - x[None, :]) ** 2
    sf2, ell, sn2 = _hyperparameters(x, yb, r, known_b, inv_counts, d2, min_lengthscale, fit_noise)
    noise_var = known_b + sn2 * inv_counts
    K = sf2 * np.exp(-0.5 * d2 / ell**2)
    K[np.diag_indices_from(K)] += noise_var + 1e-10 * sf2
    L = np.linalg.cholesky(K)
    alpha = _chol_solve(L, r)
    return GPFit(
        x=x, y=yb, noise_var=noise_var, mean=mean, signal_var=float(sf2), lengthscale=float(ell),
        fitted_noise_var=float(sn2), n_raw=len(y), chol=L, alpha=alpha,
    )


def _checked_series(steps, values, noise_std, fit_excess_noise: bool, min_lengthscale: float, max_points: int):
    """(steps, values, known noise variance per point, whether to fit an excess noise term), checked."""
    steps = np.asarray(steps, dtype=float)
    y = np.asarray(values, dtype=float)
    if steps.shape != y.shape or steps.ndim != 1:
        raise ValueError(f"steps and values must be 1-D of equal length, got {steps.shape} and {y.shape}")
    if len(y) < 3:
        raise ValueError(f"need at least 3 points to fit a smoother, got {len(y)}")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(steps))):
        raise ValueError("steps and values must be finite")
    if min_lengthscale <= 0:
        raise ValueError(f"min_lengthscale must be > 0, got {min_lengthscale}")
    if max_points < 3:
        raise ValueError(f"max_points must be >= 3, got {max_points}")
    if noise_std is None:
        return steps, y, np.zeros_like(y), True
    noise_std = np.asarray(noise_std, dtype=float)
    if noise_std.shape != y.shape or np.any(~np.isfinite(noise_std)) or np.any(noise_std < 0):
        raise ValueError("noise_std must be finite, >= 0 and have the same length as values")
    return steps, y, noise_std**2, fit_excess_noise


def _hyperparameters(x, yb, r, known_b, inv_counts, d2, min_lengthscale: float, fit_noise: bool):
    """(signal variance, lengthscale, excess noise variance) maximising the marginal likelihood, from
    three starting lengthscales; the excess noise is 0 unless `fit_noise`."""
    scale = float(np.var(yb))
    if not scale > 0:  # constant data: any positive scale keeps the optimisation well posed
        scale = max(float(np.mean(known_b)), 1e-12)
    span = max(float(x[-1] - x[0]), min_lengthscale)
    bounds = [
        (np.log(scale * 1e-6), np.log(scale * 1e3)),
        (np.log(min_lengthscale), np.log(max(5.0 * span, 2 * min_lengthscale))),
        (np.log(scale * 1e-8), np.log(scale * 10.0)) if fit_noise else (np.log(1e-300), np.log(1e-300)),
    ]
    best = None
    for ell0 in (0.1 * span, 0.3 * span, 1.0 * span):
        for noise_frac in (0.1,):
            theta0 = np.array([np.log(scale), np.log(ell0), np.log(scale * noise_frac) if fit_noise else np.log(1e-300)])
            theta0 = np.clip(theta0, [b[0] for b in bounds], [b[1] for b in bounds])
            res = minimize(
                _nlml, theta0, args=(r, known_b, inv_counts, d2, fit_noise), jac=True, method="TNC", bounds=bounds
            )
            if best is None or res.fun < best.fun - 1e-9:
                best = res
    sf2, ell, sn2 = np.exp(best.x)
    return sf2, ell, (sn2 if fit_noise else 0.0)
