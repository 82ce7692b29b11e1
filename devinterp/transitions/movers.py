"""What changes in a stage: the metrics that move most across it, besides the LLC.

Conventions:

- a metric's value at a stage boundary is its logged series (finite values only), smoothed by a
  running median of SPIKE_WINDOW points (a single-checkpoint spike, such as a loss spike's Hessian,
  would otherwise set the range and hide every real change), linearly interpolated in
  x = ln(step + 1); a stage that reaches outside the metric's logged steps is not scored for that
  metric (no extrapolation);
- its change over a stage is value(end_step) − value(start_step), and its *fraction* is that
  change divided by the metric's range over the run (max − min of the smoothed values), so a
  weight norm and an attention score compare on one scale. The sign is the direction;
- movers are ranked by |fraction|; metrics that moved less than `min_fraction` of their range,
  or are constant over the run, are not named.

`stage_movers` is pure: it reads the metrics table (long or wide, see `metrics`) and the stage
boundaries and returns the ranked movers per stage; `describe_movers` writes one evidence line.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.ndimage import median_filter

from devinterp.transitions.metrics import expand_names, get_series, to_wide
from devinterp.transitions.smoothing import log_step

# What the model is doing beside the LLC (globs allowed): weight norm, LayerNorm gains, the Hessian's
# trace and top eigenvalue, per-head refined LLC, in-context scores, induction / previous-token heads,
# n-gram scores.
MOVER_METRICS = (
    "weights/norm", "weights/ln_gain", "hessian/trace", "hessian/top_1", "llc/L*H*/mean",
    "eval/icl_score", "induction/icl_score", "induction/prefix_matching_max", "induction/previous_token_max",
    "ngram/kl_2", "ngram/kl_3",
)
MIN_MOVER_POINTS = 3
SPIKE_WINDOW = 3  # running median over this many logged points: a one-checkpoint spike moves nothing


@dataclass(frozen=True)
class Mover:
    """One metric's change over a stage: `change` in its own units, `fraction` = change / run range."""

    name: str
    change: float
    fraction: float


def stage_movers(metrics_df: pd.DataFrame, boundaries: Sequence[tuple[int, int]],
                 names: Sequence[str] = MOVER_METRICS, *, top: int = 3,
                 min_fraction: float = 0.05) -> list[tuple[Mover, ...]]:
    """For each (start_step, end_step) in `boundaries`, the `top` metrics among `names` (exact
    names or globs; absent ones are skipped) with the largest |change| relative to their range
    over the run, largest first (see the module docstring for the conventions)."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if min_fraction < 0:
        raise ValueError(f"min_fraction must be >= 0, got {min_fraction}")
    wide = to_wide(metrics_df)
    present = [n for n in names if any(ch in n for ch in "*?[") or n in wide.columns]
    curves = []
    for name in expand_names(wide, present):
        steps, values = get_series(wide, name)
        values = median_filter(values, size=SPIKE_WINDOW, mode="nearest") if len(values) else values
        span = float(np.ptp(values)) if len(values) else 0.0
        if len(np.unique(steps)) >= MIN_MOVER_POINTS and span > 0:
            curves.append((name, log_step(steps), values, span))
    result = []
    for start, end in boundaries:
        xs = log_step([start, end])
        movers = []
        for name, x, values, span in curves:
            if xs[0] < x.min() - 1e-12 or xs[1] > x.max() + 1e-12:
                continue
            at_start, at_end = np.interp(xs, x, values)
            change = float(at_end - at_start)
            if abs(change) >= min_fraction * span:
                movers.append(Mover(name, change, change / span))
        movers.sort(key=lambda m: -abs(m.fraction))
        result.append(tuple(movers[:top]))
    return result


def describe_movers(movers: Sequence[Mover]) -> str:
    """'movers: weights/ln_gain −38 % of range, hessian/trace −22 %' (U+2212 for minus); '' if none."""
    if not movers:
        return ""
    parts = [f"{m.name} {'+' if m.fraction >= 0 else '−'}{abs(m.fraction) * 100:.0f} %" for m in movers]
    parts[0] += " of range"
    return "movers: " + ", ".join(parts)
