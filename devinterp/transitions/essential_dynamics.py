"""Essential dynamics: the trajectory of a model's outputs across checkpoints, in a few PCs.

Following Hoogland et al. (arXiv 2402.02364): stack the model's outputs on a fixed evaluation set
(e.g. flattened per-token log-probabilities) at each checkpoint into a matrix of shape
(n_checkpoints, n_features), project onto the top principal components, smooth the trajectory
along training time, and read candidate stage boundaries off its geometry:

- **turning points**: extrema of a smoothed PC score against log-step (the trajectory reverses
  along that PC), kept when their prominence is at least ``min_prominence`` times the largest
  range among the smoothed top PCs (so noise in a minor PC does not count);
- **cusps**: sharp changes of direction, where the angle between the chord of the smoothed
  trajectory arriving at a point (from 2 x ``bandwidth`` earlier in x) and the chord leaving it
  peaks above ``min_angle`` degrees, at points where the trajectory is actually moving (both
  chords >= 5% of the longest).

Time axis: x = ln(step + 1) (natural log), as in the rest of `devinterp.transitions`. Smoothing is
local-linear Gaussian-kernel regression in x, which copes with non-uniform checkpoint schedules
(log-spaced early, linear late): each point's kernel width is ``bandwidth`` or, where checkpoints
are sparse, the distance to its ``k_min``-th nearest checkpoint, whichever is larger.
Candidate steps are snapped to the nearest checkpoint; candidates closer than 2 x ``bandwidth`` in x
are merged (their median) into `boundary_steps`.

This module is pure: it never touches disk. Loading outputs from a run directory belongs in a
thin wrapper (``essential_dynamics_from_run``) that builds the (steps, outputs) arrays and calls
`essential_dynamics`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks

from devinterp.transitions.smoothing import log_step


@dataclass(frozen=True)
class EssentialDynamics:
    steps: np.ndarray  # (n,) checkpoint steps, sorted ascending
    log_steps: np.ndarray  # (n,) x = ln(step + 1)
    projections: np.ndarray  # (n, k) PC scores of the (mean-centred) outputs
    explained_variance_ratio: np.ndarray  # (k,) fraction of total variance per PC
    components: np.ndarray  # (k, n_features) unit PC directions
    grid_log_steps: np.ndarray  # (m,) uniform grid in x on which the trajectory is smoothed
    smoothed: np.ndarray  # (m, k) smoothed PC scores on the grid
    velocity: np.ndarray  # (m, k) d smoothed / dx on the grid
    turning_points: tuple[tuple[int, int], ...]  # (PC index from 0, checkpoint step)
    cusps: np.ndarray  # checkpoint steps of cusps
    boundary_steps: np.ndarray  # merged candidate boundaries (checkpoint steps), ascending
    bandwidth: float  # kernel width used, in units of x

    def smoothed_at_checkpoints(self) -> np.ndarray:
        """(n, k) smoothed scores interpolated at the checkpoints (for plotting)."""
        return np.column_stack([
            np.interp(self.log_steps, self.grid_log_steps, self.smoothed[:, j]) for j in range(self.smoothed.shape[1])
        ])


def local_linear(x: np.ndarray, y: np.ndarray, x_eval: np.ndarray, bandwidth: float, k_min: int = 4):
    """Gaussian-kernel local-linear fit of y (n, k) at x_eval (m,): returns (level, slope), each
    (m, k). The kernel width at each evaluation point is max(bandwidth, distance to the k_min-th
    nearest x) so that sparse stretches are bridged rather than extrapolated."""
    d = x[None, :] - x_eval[:, None]  # (m, n)
    kth = np.sort(np.abs(d), axis=1)[:, min(k_min, len(x)) - 1]
    h = np.maximum(bandwidth, kth)[:, None]
    w = np.exp(-0.5 * (d / h) ** 2)
    s0, s1, s2 = w.sum(1), (w * d).sum(1), (w * d * d).sum(1)
    t0, t1 = w @ y, (w * d) @ y
    det = s0 * s2 - s1**2
    det = np.where(det > 1e-12 * s0 * s2, det, np.nan)
    level = (s2[:, None] * t0 - s1[:, None] * t1) / det[:, None]
    slope = (s0[:, None] * t1 - s1[:, None] * t0) / det[:, None]
    # Degenerate neighbourhoods (all weight on one x): fall back to the weighted mean, slope 0.
    bad = ~np.isfinite(det)
    if np.any(bad):
        level[bad] = t0[bad] / s0[bad, None]
        slope[bad] = 0.0
    return level, slope


def _merge(xs: np.ndarray, within: float) -> list[float]:
    xs = np.sort(xs)
    groups: list[list[float]] = []
    for x in xs:
        if groups and x - groups[-1][-1] <= within:
            groups[-1].append(float(x))
        else:
            groups.append([float(x)])
    return [float(np.median(g)) for g in groups]


def essential_dynamics(
    outputs,
    steps,
    *,
    n_components: int = 3,
    bandwidth: float | None = None,
    min_prominence: float = 0.1,
    min_angle: float = 45.0,
    k_min: int = 4,
    grid_size: int = 512,
) -> EssentialDynamics:
    """PCA + smoothed trajectory + candidate boundaries; see the module docstring.

    outputs: (n_checkpoints, n_features) array, one row per checkpoint (any consistent output
        representation, e.g. flattened per-token log-probs on a fixed eval set).
    steps: (n_checkpoints,) training steps, distinct, >= 0 (any order; rows are sorted by step).
    n_components: number of PCs kept (capped at n_checkpoints - 1).
    bandwidth: Gaussian kernel std in x = ln(step + 1); default 1/50 of the x range.
    min_prominence: turning-point prominence, as a fraction of the largest smoothed-PC range.
    min_angle: cusp threshold in degrees.
    """
    X, steps = _checked_inputs(outputs, steps, n_components, min_angle)
    order = np.argsort(steps, kind="stable")
    steps = steps[order].astype(np.int64)
    X = X[order]
    x = log_step(steps)
    span = float(x[-1] - x[0])
    h = span / 50.0 if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be > 0 (units of ln(step+1)), got {bandwidth}")
    proj, comps, evr, total = _principal_components(X, n_components)
    grid = np.linspace(x[0], x[-1], grid_size)
    smooth, vel = local_linear(x, proj, grid, h, k_min)

    def snap(xq: float) -> int:
        return int(steps[np.argmin(np.abs(x - xq))])

    scale = float(np.max(np.ptp(smooth, axis=0))) if total > 0 else 0.0
    turning = [(j, snap(xt), xt) for j, xt in _turning_points(smooth, grid, min_prominence * scale)
               ] if scale > 0 else []
    turning.sort(key=lambda t: (t[2], t[0]))
    cusp_x = _cusps(smooth, grid, h, min_angle) if scale > 0 else []
    candidates = np.array([t[2] for t in turning] + cusp_x)
    merged = _merge(candidates, 2 * h) if len(candidates) else []
    boundary_steps = np.unique(np.array([snap(xb) for xb in merged], dtype=np.int64))
    return EssentialDynamics(
        steps=steps, log_steps=x, projections=proj, explained_variance_ratio=evr, components=comps,
        grid_log_steps=grid, smoothed=smooth, velocity=vel,
        turning_points=tuple((j, s) for j, s, _ in turning),
        cusps=np.array([snap(c) for c in cusp_x], dtype=np.int64),
        boundary_steps=boundary_steps, bandwidth=h,
    )


def _checked_inputs(outputs, steps, n_components: int, min_angle: float) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(outputs, dtype=float)
    steps = np.asarray(steps)
    if X.ndim != 2:
        raise ValueError(f"outputs must be 2-D (n_checkpoints, n_features), got shape {X.shape}")
    if steps.ndim != 1 or len(steps) != X.shape[0]:
        raise ValueError(f"steps must be 1-D with one entry per row of outputs ({X.shape[0]}), got shape {steps.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("outputs contain NaN or inf")
    if np.any(steps < 0) or np.any(steps != np.round(steps)) or len(np.unique(steps)) != len(steps):
        raise ValueError("steps must be distinct non-negative integers")
    if X.shape[0] < 5:
        raise ValueError(f"need at least 5 checkpoints, got {X.shape[0]}")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if not 0 < min_angle < 180:
        raise ValueError(f"min_angle must be in (0, 180) degrees, got {min_angle}")
    return X, steps


def _principal_components(X: np.ndarray, n_components: int):
    """(projections, components, explained variance ratios, total variance) of the rows of X: PCA by
    SVD of the centred data (economy size: cost O(n^2 * n_features)). Sign convention: each PC's score
    increases from the first to the last row."""
    Xc = X - X.mean(axis=0)
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    k = min(n_components, len(S) - 1 if len(S) > 1 else 1)
    total = float(np.sum(S**2))
    signs = np.where(U[-1, :k] - U[0, :k] < 0, -1.0, 1.0)
    proj = U[:, :k] * S[:k] * signs
    comps = Vt[:k] * signs[:, None]
    evr = S[:k] ** 2 / total if total > 0 else np.zeros(k)
    return proj, comps, evr, total


def _turning_points(smooth: np.ndarray, grid: np.ndarray, prominence: float) -> list[tuple[int, float]]:
    """(PC index, x) of the prominent extrema of each smoothed PC: maxima first, then minima."""
    found = []
    for j in range(smooth.shape[1]):
        for sign in (1.0, -1.0):
            peaks, _ = find_peaks(sign * smooth[:, j], prominence=prominence)
            found.extend((j, float(grid[p])) for p in peaks)
    return found


def _cusps(smooth: np.ndarray, grid: np.ndarray, h: float, min_angle: float) -> list[float]:
    """x of the peaks of the angle between the chord arriving at a grid point (from 2h before) and
    the chord leaving it (to 2h after). Chords, unlike smoothed velocities, are not pulled towards the
    faster of two legs, so a kink is located without a speed-dependent bias."""
    dx = grid[1] - grid[0]
    lag = max(1, int(round(2 * h / dx)))
    if len(grid) <= 2 * lag + 2:
        return []
    before = smooth[lag:-lag] - smooth[: -2 * lag]
    after = smooth[2 * lag :] - smooth[lag:-lag]
    nb, na = np.linalg.norm(before, axis=1), np.linalg.norm(after, axis=1)
    speed_ok = (nb >= 0.05 * nb.max()) & (na >= 0.05 * na.max())
    cos = np.sum(before * after, axis=1) / np.maximum(nb * na, 1e-300)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) * speed_ok
    peaks, _ = find_peaks(np.concatenate([[0.0], angle, [0.0]]), height=min_angle)
    return [float(grid[p - 1 + lag]) for p in peaks]
