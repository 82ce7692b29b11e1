"""Supporting transition signals: jumps, bumps and dips in metrics other than the LLC.

The developmental-interpretability literature treats several things besides critical points of the
LLC as transition signals: a bump or drop in the loss, a sharp drop of the in-context-learning
score (late-token loss minus early-token loss), a jump in a head's prefix-matching score. This
module finds such events in any metric with the same machinery as the LLC stages: the metric is
smoothed by a GP in x = ln(step + 1) with the noise level estimated from the data
(`smoothing.fit_gp`), cut into monotone segments (`segments.segment_curve`, so an event that noise
alone could produce is not listed), and each segment yields events:

- ``rise`` / ``drop``: a significantly rising / falling segment, reported at the step of its
  steepest slope in log-step; ``magnitude`` is the smoothed change over the whole segment;
- ``peak`` / ``trough``: the boundary between a rising and a falling segment (a loss *bump* is a
  ``rise`` followed by a ``peak``), reported at the extremum; ``magnitude`` is the smaller of the
  two adjacent changes (how far the curve comes back).

``z`` is the posterior z-score of the change (magnitude / its posterior std).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from devinterp.transitions.metrics import expand_names, get_series, to_wide
from devinterp.transitions.segments import segment_curve
from devinterp.transitions.smoothing import fit_gp, log_step

EVENT_COLUMNS = ["step", "name", "kind", "magnitude", "z"]


def _nearest_step(x: float, steps: np.ndarray) -> int:
    return int(steps[np.argmin(np.abs(log_step(steps) - x))])


def signal_events(
    steps,
    values,
    name: str,
    *,
    min_confidence: float = 0.999,
    min_length: float = 0.2,
    plateau_rel: float = 0.05,
    min_points: int = 6,
) -> pd.DataFrame:
    """Events (columns `step, name, kind, magnitude, z`) of one metric series; see module doc.

    Steps are snapped to the nearest logged step. Series with fewer than `min_points` finite
    values give no events."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    if len(steps) < min_points or np.unique(steps).size < 3:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    fit = fit_gp(steps, values)
    xs = log_step(steps)
    segs = segment_curve(
        fit, float(xs.min()), float(xs.max()),
        min_length=min_length, min_confidence=min_confidence, plateau_rel=plateau_rel,
    )
    rows = []
    for i, seg in enumerate(segs):
        if seg.direction == 0:
            continue
        grid = np.linspace(seg.start_x, seg.end_x, 64)
        slope, _ = fit.derivative(grid)
        steepest = grid[np.argmax(np.abs(slope))]
        kind = "rise" if seg.direction > 0 else "drop"
        rows.append((_nearest_step(steepest, steps), name, kind, seg.delta, seg.z))
        nxt = segs[i + 1] if i + 1 < len(segs) else None
        if nxt is not None and nxt.direction == -seg.direction:
            kind = "peak" if seg.direction > 0 else "trough"
            small = seg if abs(seg.z) <= abs(nxt.z) else nxt
            rows.append((_nearest_step(seg.end_x, steps), name, kind, abs(small.delta), abs(small.z)))
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def transition_signals(
    metrics_df: pd.DataFrame,
    loss: str | None = "eval/loss",
    icl_score: str | None = None,
    prefix_matching: str | Sequence[str] | None = None,
    extra: Sequence[str] = (),
    **kwargs,
) -> pd.DataFrame:
    """Supporting transition events found in the metrics table (long or wide, see `metrics`).

    loss, icl_score: metric names; prefix_matching and extra: names or fnmatch globs (e.g.
    ``"induction/prefix_matching/*"`` for one column per head). Metrics that are not in the table
    are skipped (signals are optional evidence); a warning names each skipped exact name.
    `kwargs` go to `signal_events`. Returns columns `step, name, kind, magnitude, z`, sorted by
    step then name."""
    wide = to_wide(metrics_df)
    wanted: list[str] = []
    for item in (loss, icl_score):
        if item is not None:
            wanted.append(item)
    if isinstance(prefix_matching, str):
        wanted.append(prefix_matching)
    elif prefix_matching is not None:
        wanted.extend(prefix_matching)
    if isinstance(extra, str):
        raise ValueError("extra must be a sequence of metric names, not a single string")
    wanted.extend(extra)
    names: list[str] = []
    for pattern in wanted:
        try:
            names.extend(n for n in expand_names(wide, [pattern]) if n not in names)
        except ValueError:
            warnings.warn(f"transition signal {pattern!r} is not in the metrics table; skipped", stacklevel=2)
    frames = [signal_events(*get_series(wide, n), n, **kwargs) for n in names]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=EVENT_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["step", "name"], kind="stable").reset_index(drop=True)


__all__ = ["EVENT_COLUMNS", "signal_events", "transition_signals"]
