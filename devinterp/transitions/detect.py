"""Developmental stages from the LLC and loss curves (Hoogland et al. 2024, arXiv 2402.02364).

Pipeline of `detect_transitions`:

1. Read the LLC (and optional chain spread), the loss and the supporting signals out of the
   metrics table (long or wide layout; see `metrics`).
2. Smooth the LLC with a GP in x = ln(step + 1) (natural log; see `smoothing`). The noise std of
   each LLC value is ``llc_std`` (divided by sqrt(n_chains) when ``n_chains`` is given, i.e. when
   `llc_std` is the spread of single chains and `llc` their mean), moderated (`moderated_spread`):
   a spread of a few chains is itself a noisy estimate, and one that reads low by chance would pin
   the curve to its point. An excess noise term is fitted on top. Without ``llc_std`` the noise
   level is estimated from the data.
3. Cut the smoothed curve at its critical points (see `segments`): stage boundaries are where the
   posterior slope dλ̂/d ln(step+1) crosses zero or falls to a plateau. Rising/falling stretches
   shorter than ``min_stage_length`` (in ln-step units) or whose change is not significant at
   ``min_confidence`` are not reported (their boundaries are dropped, not flagged).
4. Snap each boundary to the nearest step at which the LLC was logged, and classify each stage by
   the direction of a significant LLC change (Hoogland et al. 2024 type stages by the sign of the
   LLC change; the loss is evidence, not a gate):
   - ``'A'``: the LLC rises (significantly);
   - ``'B'``: the LLC falls (significantly);
   - ``'other'``: an LLC plateau (no significant change).
   The evidence gives the loss change, as a fraction of the smoothed loss's range and beside the
   LLC change as a fraction of the LLC's range, and flags what is atypical: a B whose loss moved
   more than ``loss_flat_tol`` of its range, an A whose loss rose.
5. Attach supporting evidence: LLC and loss changes, and the events of `signals` (loss
   bumps/drops, jumps of an in-context-learning or prefix-matching score) within the stage, and
   how many unhealthy LLC estimates it holds (left out of, or down-weighted in, the fit of step 2).
6. Name what else changes in each stage: the ``movers`` metrics that moved most relative to their
   range over the run (`movers.stage_movers`; e.g. 'movers: weights/ln_gain −38 % of range, ...').

Output columns, one row per stage, stages contiguous and in order (row i's end_step is row
i+1's start_step):

- ``start_step``, ``end_step``: int training steps (logged LLC steps);
- ``type``: 'A' | 'B' | 'other';
- ``llc_start``, ``llc_end``: the *smoothed* LLC (GP posterior mean) at those steps;
- ``loss_start``, ``loss_end``: the smoothed loss there (NaN without a loss column);
- ``confidence``: posterior probability, under the GP fit with the chain-spread noise, that the
  LLC moved in the observed direction between start and end, Phi(|Δ| / sd(Δ)). Stages of type
  A/B have confidence >= ``min_confidence`` (up to the snapping of boundaries to logged steps);
  plateau stages usually have much lower values;
- ``llc_z``: the signed z-score Δ / sd(Δ) behind `confidence`;
- ``evidence``: a human-readable summary ('; '-separated).

``DataFrame.attrs`` carries the fitted GP hyperparameters (``llc_fit``, ``loss_fit``) and the
supporting events (``signals``, a list of dicts as produced by `signals.transition_signals`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from devinterp.transitions.evidence import StageChange, stage_evidence
from devinterp.transitions.metrics import get_series, to_wide
from devinterp.transitions.movers import stage_movers
from devinterp.transitions.segments import Segment, segment_curve
from devinterp.transitions.signals import EVENT_COLUMNS, transition_signals
from devinterp.transitions.smoothing import GPFit, fit_gp, log_step

STAGE_COLUMNS = [
    "start_step", "end_step", "type", "llc_start", "llc_end", "loss_start", "loss_end",
    "confidence", "llc_z", "evidence",
]
MIN_LLC_POINTS = 5
SPREAD_NEIGHBOURS = 3  # a chain spread is moderated toward the median over itself and this many steps either side
STAGE_TYPES = {1: "A", -1: "B", 0: "other"}  # by the direction of the LLC's significant change


def _fit_summary(fit: GPFit) -> dict:
    return {
        "lengthscale_log_step": fit.lengthscale,
        "signal_std": float(np.sqrt(fit.signal_var)),
        "fitted_noise_std": float(np.sqrt(fit.fitted_noise_var)),
        "n_points": fit.n_raw,
    }


def _llc_noise(wide, llc, llc_std, steps, n_chains):
    if llc_std is None:
        if n_chains is not None:
            raise ValueError("n_chains only makes sense together with llc_std")
        return None
    if n_chains is not None and (not isinstance(n_chains, (int, np.integer)) or n_chains < 1):
        raise ValueError(f"n_chains must be a positive int, got {n_chains!r}")
    std_steps, std = get_series(wide, llc_std, what="llc_std")
    lookup = dict(zip(std_steps.tolist(), std.tolist()))
    missing = [int(s) for s in steps if int(s) not in lookup]
    if missing:
        raise ValueError(f"llc_std column {llc_std!r} has no value at steps {missing[:10]} where {llc!r} has one")
    noise = np.array([lookup[int(s)] for s in steps])
    if np.any(noise < 0):
        raise ValueError(f"llc_std column {llc_std!r} has negative values")
    noise = moderated_spread(steps, noise)
    return noise / np.sqrt(n_chains) if n_chains else noise


def moderated_spread(steps, spread) -> np.ndarray:
    """Each chain spread (std) moderated toward its neighbours': the root mean of its square and the
    median square over the 2 * SPREAD_NEIGHBOURS + 1 nearest steps (in step order, itself included).

    The spread of 4 chains has 3 degrees of freedom: one in 30 reads below 0.3 of the true std, which
    then weighs ~11x its share in the fit. On the presets' runs the ratio of each spread to that local
    median follows the chi-square law of 3 degrees of freedom (5 % quantile 0.32-0.46, expected 0.39),
    so the true spread varies smoothly along the run and its neighbours know it better (empirical
    Bayes moderation, Smyth 2004). A constant spread is left as it is."""
    steps, spread = np.asarray(steps), np.asarray(spread, dtype=float)
    order = np.argsort(steps, kind="stable")
    square = pd.Series(spread[order] ** 2)
    local = square.rolling(2 * SPREAD_NEIGHBOURS + 1, center=True, min_periods=1).median()  # fewer at the ends
    moderated = np.empty_like(spread)
    moderated[order] = np.sqrt((square + local).to_numpy() / 2)
    return moderated


def _merge_thin_edges(segs: list[Segment], xs: np.ndarray, min_points: int) -> list[Segment]:
    """Absorb a plateau stage at either end that holds fewer than min_points logged steps."""
    segs = list(segs)

    def count(s):
        return int(np.sum((xs >= s.start_x - 1e-12) & (xs <= s.end_x + 1e-12)))

    if len(segs) > 1 and segs[0].direction == 0 and count(segs[0]) < min_points:
        s0, s1 = segs[0], segs[1]
        segs[:2] = [Segment(s0.start_x, s1.end_x, s1.direction, s1.delta, s1.delta_std)]
    if len(segs) > 1 and segs[-1].direction == 0 and count(segs[-1]) < min_points:
        s0, s1 = segs[-2], segs[-1]
        segs[-2:] = [Segment(s0.start_x, s1.end_x, s0.direction, s0.delta, s0.delta_std)]
    return segs


# Longer than ~60 lines only for its signature and the documentation of its many settings: the
# body is short and delegates to the helpers below.
def detect_transitions(
    metrics_df: pd.DataFrame,
    llc: str = "llc/mean",
    loss: str | None = "eval/loss",
    llc_std: str | None = None,
    *,
    llc_healthy: str | None = None,
    n_chains: int | None = None,
    icl_score: str | None = None,
    prefix_matching: str | Sequence[str] | None = None,
    signals: Sequence[str] = (),
    movers: Sequence[str] = (),
    top_movers: int = 3,
    min_stage_length: float = 0.2,
    min_confidence: float = 0.999,
    z_slope: float = 2.0,
    plateau_rel: float = 0.05,
    loss_flat_tol: float = 0.1,
    min_points: int = 6,
    point_steps: Sequence[int] | None = None,
    min_lengthscale: float = 0.15,
    max_points: int = 150,
) -> pd.DataFrame:
    """Stages of a training run from its LLC curve; see the module docstring for the method.

    Arguments
    ---------
    metrics_df: long (`step, name, value`, extra columns ignored, last duplicate wins) or wide
        (indexed by step) metrics table. Not modified.
    llc, loss, llc_std: metric names. `loss=None` skips the loss; `llc_std=None` estimates the
        noise level from the data.
    llc_healthy: metric name of the LLC's health verdict (1 healthy, 0 not; see `devinterp.slt.llc`).
        Unhealthy points are left out of the fit when at least half of the points and MIN_LLC_POINTS
        remain; otherwise they are kept with 3× their noise std. Either way `attrs["unhealthy_steps"]`
        lists them and the evidence of each stage says how many it holds.
    n_chains: when given, `llc_std` is the spread of single chains and the noise std of the mean
        is llc_std / sqrt(n_chains); when None, `llc_std` is used as the noise std as is.
    icl_score, prefix_matching, signals: optional extra metrics (names or globs) searched for
        supporting events (`signals.transition_signals`); the loss is always searched.
    movers, top_movers: metrics (names or globs; absent ones skipped, e.g. `movers.MOVER_METRICS`)
        of which the `top_movers` that moved most over each stage, relative to their range over the
        run, are named in its evidence (`movers.stage_movers`).
    min_stage_length: minimum length of a rising/falling stretch, in units of ln(step + 1)
        (0.2 = a factor 1.22 in steps); also the shortest plateau that is its own stage.
    min_confidence: a rising/falling stretch is only a stage if the posterior probability that
        the LLC moved in its direction across it is at least this (default 0.999, z >= 3.09).
    z_slope: posterior z-score a slope needs to count as rising/falling at a point.
    plateau_rel: slopes below this fraction of the largest |slope| count as a plateau.
    loss_flat_tol: a B stage whose smoothed loss moved more than this fraction of its range is flagged
        in the evidence (it stays B: the type comes from the LLC).
    min_points: a plateau stage at either end with fewer logged LLC steps is merged inward.
    point_steps: the steps that count towards `min_points` instead of the logged LLC steps: an LLC measured
        at adaptively chosen checkpoints (`adaptive`) passes all the run's checkpoints, as its plateaus
        hold checkpoints it chose not to measure.
    min_lengthscale, max_points: smoothing settings (see `smoothing.fit_gp`).
    """
    _check_arguments(metrics_df, min_stage_length, loss_flat_tol)
    wide = to_wide(metrics_df)
    curve = fit_llc_curve(wide, llc, llc_std, llc_healthy=llc_healthy, n_chains=n_chains,
                          min_lengthscale=min_lengthscale, max_points=max_points)
    steps, llc_fit, unhealthy, excluded = curve.steps, curve.fit, curve.unhealthy, curve.excluded
    xs = log_step(steps)
    segs = segment_curve(llc_fit, float(xs.min()), float(xs.max()), z_slope=z_slope, plateau_rel=plateau_rel,
                         min_length=min_stage_length, min_confidence=min_confidence)
    counted = xs if point_steps is None else log_step(point_steps)
    bounds, directions = _snap_to_logged_steps(_merge_thin_edges(segs, counted, min_points), xs, steps)
    b_x = log_step(bounds)
    llc_at, delta, z, llc_range = _llc_changes(llc_fit, b_x, xs)
    loss_fit, loss_at, loss_range = _loss_at(wide, loss, b_x, xs, min_lengthscale, max_points)
    events = transition_signals(
        wide, loss=loss, icl_score=icl_score, prefix_matching=prefix_matching, extra=tuple(signals),
        min_confidence=min_confidence, min_length=min_stage_length,
    ) if (loss is not None or icl_score or prefix_matching or signals) else pd.DataFrame(columns=EVENT_COLUMNS)
    stage_bounds = list(zip(bounds[:-1], bounds[1:]))
    moved = stage_movers(wide, stage_bounds, movers, top=top_movers) if movers else [()] * len(stage_bounds)
    rows = []
    for i, ((start, end), direction) in enumerate(zip(stage_bounds, directions)):
        last = i == len(directions) - 1  # the last stage holds its end step too
        change = StageChange(direction, float(llc_at[i]), float(llc_at[i + 1]), float(delta[i]), float(z[i]),
                             llc_range, float(loss_at[i + 1] - loss_at[i]) if loss_fit is not None else None,
                             loss_range)
        inside = events[(events["step"] >= start) & ((events["step"] < end) | (last & (events["step"] <= end)))]
        flagged = [s for s in unhealthy if start <= s < end or (last and s == end)]
        rows.append({
            "start_step": start, "end_step": end, "type": STAGE_TYPES[direction],
            "llc_start": float(llc_at[i]), "llc_end": float(llc_at[i + 1]),
            "loss_start": float(loss_at[i]), "loss_end": float(loss_at[i + 1]),
            "confidence": float(norm.cdf(abs(z[i]))), "llc_z": float(z[i]),
            "evidence": stage_evidence(change, loss_flat_tol, inside, flagged, excluded, moved[i]),
        })
    return _stage_table(rows, llc_fit, loss_fit, events, unhealthy, excluded)


@dataclass(frozen=True)
class CurveFit:
    """The LLC points a stage fit rests on (unhealthy ones left out where `excluded`) and their GP fit."""

    steps: np.ndarray
    fit: GPFit
    unhealthy: list[int]  # steps whose estimate failed its health verdict
    excluded: bool  # whether they were left out of `steps` (else kept with UNHEALTHY_NOISE_FACTOR x their noise)


def fit_llc_curve(wide: pd.DataFrame, llc: str, llc_std: str | None = None, *, llc_healthy: str | None = None,
                  n_chains: int | None = None, min_lengthscale: float = 0.15, max_points: int = 150) -> CurveFit:
    """Steps 1-2 of `detect_transitions` (its arguments of the same names): the smoothed LLC curve of a wide
    metrics table. ValueError with fewer than MIN_LLC_POINTS distinct steps."""
    steps, values = get_series(wide, llc, what="llc")
    if len(np.unique(steps)) < MIN_LLC_POINTS:
        raise ValueError(f"need LLC values at >= {MIN_LLC_POINTS} distinct steps, got {len(np.unique(steps))}")
    noise = _llc_noise(wide, llc, llc_std, steps, n_chains)
    steps, values, noise, unhealthy, excluded = _handle_unhealthy(wide, llc_healthy, steps, values, noise)
    fit = fit_gp(steps, values, noise, min_lengthscale=min_lengthscale, max_points=max_points)
    return CurveFit(steps, fit, unhealthy, excluded)


def _check_arguments(metrics_df, min_stage_length: float, loss_flat_tol: float) -> None:
    if not isinstance(metrics_df, pd.DataFrame):
        raise TypeError(f"metrics_df must be a pandas DataFrame, got {type(metrics_df).__name__}")
    if min_stage_length <= 0:
        raise ValueError(f"min_stage_length must be > 0 (units of ln(step+1)), got {min_stage_length}")
    if loss_flat_tol < 0:
        raise ValueError(f"loss_flat_tol must be >= 0, got {loss_flat_tol}")


def _snap_to_logged_steps(segs: list[Segment], xs: np.ndarray, steps: np.ndarray) -> tuple[list[int], list[int]]:
    """(stage boundaries, one direction per stage): the segments' ends snapped to the nearest logged LLC
    step; stages that snapping made empty are dropped."""
    order = np.argsort(xs)
    xs_sorted, steps_sorted = xs[order], steps[order]
    bounds = [int(steps_sorted[0])]
    directions = []
    for seg in segs:
        end = int(steps_sorted[-1]) if seg is segs[-1] else int(steps_sorted[np.argmin(np.abs(xs_sorted - seg.end_x))])
        if end > bounds[-1]:
            bounds.append(end)
            directions.append(seg.direction)
    if len(bounds) == 1:  # degenerate: all steps equal after snapping
        bounds.append(bounds[0])
        directions.append(0)
    return bounds, directions


def _llc_changes(llc_fit: GPFit, b_x: np.ndarray, xs: np.ndarray):
    """The smoothed LLC at the boundaries, its change over each stage with the z-score of that change,
    and the smoothed LLC's range over the logged steps."""
    llc_at, _ = llc_fit.predict(b_x)
    delta, delta_sd = llc_fit.difference(b_x[:-1], b_x[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(delta_sd > 0, delta / delta_sd, np.sign(delta) * np.inf)
    z = np.nan_to_num(z, nan=0.0)
    llc_range = float(np.ptp(llc_fit.predict(np.linspace(float(xs.min()), float(xs.max()), 512))[0]))
    return llc_at, delta, z, llc_range


def _loss_at(wide: pd.DataFrame, loss: str | None, b_x: np.ndarray, xs: np.ndarray, min_lengthscale: float,
             max_points: int) -> tuple[GPFit | None, np.ndarray, float]:
    """(the loss's fit, the smoothed loss at the boundaries, its range over the LLC's steps); no fit,
    NaNs, without a loss or with fewer than 3 logged steps of it. No extrapolation past its logged steps."""
    if loss is None:
        return None, np.full(len(b_x), np.nan), np.nan
    l_steps, l_values = get_series(wide, loss, what="loss")
    if len(np.unique(l_steps)) < 3:
        return None, np.full(len(b_x), np.nan), np.nan
    loss_fit = fit_gp(l_steps, l_values, min_lengthscale=min_lengthscale, max_points=max_points)
    lx = log_step(l_steps)
    clip = (float(lx.min()), float(lx.max()))
    loss_at, _ = loss_fit.predict(np.clip(b_x, *clip))
    grid_mean, _ = loss_fit.predict(np.clip(np.linspace(float(xs.min()), float(xs.max()), 512), *clip))
    return loss_fit, loss_at, float(np.ptp(grid_mean))


def _stage_table(rows: list[dict], llc_fit: GPFit, loss_fit: GPFit | None, events: pd.DataFrame,
                 unhealthy: list[int], excluded: bool) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=STAGE_COLUMNS)
    out["start_step"] = out["start_step"].astype(np.int64)
    out["end_step"] = out["end_step"].astype(np.int64)
    out.attrs["llc_fit"] = _fit_summary(llc_fit)
    out.attrs["loss_fit"] = _fit_summary(loss_fit) if loss_fit is not None else None
    out.attrs["signals"] = events.to_dict("records")
    out.attrs["unhealthy_steps"] = unhealthy
    out.attrs["unhealthy_excluded"] = excluded
    return out


UNHEALTHY_NOISE_FACTOR = 3.0


def _handle_unhealthy(wide, llc_healthy, steps, values, noise):
    """(steps, values, noise, unhealthy steps, whether they were excluded); see `llc_healthy`."""
    if llc_healthy is None or llc_healthy not in wide.columns:
        return steps, values, noise, [], False
    verdict = wide[llc_healthy].reindex(steps).to_numpy()
    bad = np.isfinite(verdict) & (verdict < 0.5)
    unhealthy = [int(s) for s in steps[bad]]
    if not unhealthy:
        return steps, values, noise, [], False
    good = ~bad
    if good.sum() >= max(MIN_LLC_POINTS, len(steps) / 2):
        return steps[good], values[good], None if noise is None else noise[good], unhealthy, True
    if noise is not None:
        noise = np.where(bad, noise * UNHEALTHY_NOISE_FACTOR, noise)
    return steps, values, noise, unhealthy, False


def smoothed_curve(
    metrics_df: pd.DataFrame,
    name: str,
    std: str | None = None,
    *,
    n_chains: int | None = None,
    n_grid: int = 256,
    min_lengthscale: float = 0.15,
) -> pd.DataFrame:
    """The GP-smoothed curve of one metric for plotting: columns `step` (float, log-spaced over the
    logged range), `mean`, `std` (posterior std of the noise-free curve). Same smoother and noise
    conventions as `detect_transitions` (std column / sqrt(n_chains) as noise when given)."""
    wide = to_wide(metrics_df)
    steps, values = get_series(wide, name)
    noise = _llc_noise(wide, name, std, steps, n_chains)
    fit = fit_gp(steps, values, noise, min_lengthscale=min_lengthscale)
    xs = log_step(steps)
    grid = np.linspace(xs.min(), xs.max(), n_grid)
    mean, sd = fit.predict(grid)
    return pd.DataFrame({"step": np.expm1(grid), "mean": mean, "std": sd})
