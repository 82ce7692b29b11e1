"""Adaptive checkpoint selection: measure a curve (the LLC) where its stages need it, not everywhere.

A run saves dozens of checkpoints; the stage table needs the curve densely only around its stage
boundaries and where it moves. `adaptive_rounds` chooses which checkpoints to measure, round by round:

- Round 0: `initial` checkpoints, half of them evenly spaced in x = ln(step + 1) (the first and the
  last among them), half evenly spaced in the checkpoints' order. Schedules save checkpoints both
  log- and linearly spaced, and the dense table's power to see a slow change late in training comes
  from the many linear checkpoints there: log spacing alone put 6 of 10 points before step 100 on
  markov-ICL, whose late type-B fall then went unseen.
- Each later round, from the values measured in the rounds before (the curve is smoothed and cut
  into stages by `detect_transitions`, as the report does), adds in this order of priority:
  1. *boundaries*: for each stage boundary, the middle unmeasured checkpoint between it and its
     measured neighbour on either side, until both neighbours are the adjacent saved checkpoints:
     the boundary is then located to within one saved checkpoint;
  2. *marginal stages*: in each stage whose net LLC change is near the detector's significance
     threshold (|z| within MARGINAL_Z), the middle of its widest unmeasured stretch (in checkpoints):
     more points there decide whether it is a stage, as the many points of the dense table do;
  3. *bends*: around each measured point that departs from the straight line through its two measured
     neighbours by more than `z_change` times the noise, the middles of the stretches on either side
     (a turn of the curve, a stage, could hide there);
  4. *moves*: the middle of each gap wider than `min_gap` in x across which the smoothed curve changes
     by more than `z_change` standard deviations;
  5. *uncertain gaps*: the middle of each gap wider than `min_gap` whose middle the smoother knows
     UNCERTAIN_GAP times worse than the measured points.
  Rules 2-5 leave room in the budget for the bisections the boundaries still need, except when the
  curve is *unresolved*: the smoother needs an excess noise above UNRESOLVED_NOISE times the measured
  (chain) noise to pass through the points. Then its stages may be artefacts of the sparse fit (on
  induction's LLC, 30 of 88 points with chain spread ~1 fit with excess noise ~13, and the rise over the
  first 60 steps read as flat), and the bends, which show whether the curve is smooth between the
  points, come before that reserve, led by the sharpest bend against the chain noise alone (the fitted
  excess may be the unresolved curve itself; on induction seed 7 two points at either side of the bump
  tip the fit back to excess noise ~0).
- It stops when a round adds nothing or the budget is spent: `budget` × the number of checkpoints
  estimates in all (round 0 included).

The selection is a pure function of the checkpoint schedule and the values stored for the chosen
steps, so every executor (the trainer, a follower, a post-hoc analysis, Ray) chooses the same steps,
and values stored at other steps (a dense analysis of the same run) do not change it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from devinterp.transitions.detect import MIN_LLC_POINTS, detect_transitions, fit_llc_curve, moderated_spread
from devinterp.transitions.smoothing import GPFit, log_step

VALUE, STD, HEALTHY = "value", "std", "healthy"  # the columns of a curve table (index: step)
UNCERTAIN_GAP = 2.0  # a gap whose middle the smoother knows this many times worse than the measured points
# A stage's |z| (net LLC change / its posterior std) in this band is near the detector's threshold (3.09 at
# min_confidence 0.999): below, more points may make it significant; above, they may show it is not.
MARGINAL_Z = (2.0, 4.0)
UNRESOLVED_NOISE = 2.0  # fitted excess noise std / median measured std above which the curve is unresolved


@dataclass(frozen=True)
class AdaptiveSettings:
    """`initial`: checkpoints in round 0 (at most half the budget); `budget`: most estimates, as a fraction
    of the checkpoints (at least MIN_LLC_POINTS); `z_change`, `min_gap` (in ln(step + 1)): the *moves* rule above. The defaults
    are those of `scripts/bench_adaptive.py` (README, "Adaptive schedule")."""

    initial: int = 10
    budget: float = 0.35
    z_change: float = 2.5
    min_gap: float = 0.3

    def __post_init__(self):
        if self.initial < MIN_LLC_POINTS:
            raise ValueError(f"initial={self.initial}: must be >= {MIN_LLC_POINTS} (the stage detector's minimum)")
        if not 0 < self.budget <= 1:
            raise ValueError(f"budget={self.budget}: must be a fraction in (0, 1]")
        if self.z_change <= 0 or self.min_gap <= 0:
            raise ValueError(f"z_change={self.z_change}, min_gap={self.min_gap}: must be positive")

    def max_estimates(self, num_checkpoints: int) -> int:
        return max(min(MIN_LLC_POINTS, num_checkpoints), math.floor(self.budget * num_checkpoints))

    def initial_count(self, num_checkpoints: int) -> int:
        """Checkpoints in round 0: `initial`, but at most half the budget (refinement gets the rest)."""
        return min(self.initial, max(MIN_LLC_POINTS, self.max_estimates(num_checkpoints) // 2))


def initial_steps(checkpoint_steps: Sequence[int], count: int) -> list[int]:
    """`count` of the checkpoints: for each of `count - count // 2` targets evenly spaced in ln(step + 1)
    (the first and the last checkpoint), then each of `count // 2` targets evenly spaced in the
    checkpoints' order, the nearest checkpoint not yet taken (all of them when there are no more)."""
    steps = sorted(set(int(s) for s in checkpoint_steps))
    if len(steps) <= count:
        return steps
    positions = {"x": log_step(steps), "order": np.arange(len(steps), dtype=float)}
    by_order = count // 2
    targets = [*(("x", t) for t in np.linspace(positions["x"][0], positions["x"][-1], count - by_order)),
               *(("order", t) for t in np.linspace(0, len(steps) - 1, by_order + 2)[1:-1])]
    chosen: list[int] = []
    for axis, target in targets:
        free = [i for i in range(len(steps)) if i not in chosen]
        chosen.append(min(free, key=lambda i: abs(positions[axis][i] - target)))
    return sorted(steps[i] for i in chosen)


def adaptive_rounds(checkpoint_steps: Sequence[int], curve: pd.DataFrame, settings: AdaptiveSettings,
                    failed: Iterable[int] = ()) -> list[list[int]]:
    """The rounds chosen so far: round 0, then each round whose predecessors are all measured (a value
    in `curve`, indexed by step with columns VALUE and optionally STD, HEALTHY) or `failed`. The last
    round may still be waiting for measurements; the union of the rounds is what is due."""
    steps = sorted(set(int(s) for s in checkpoint_steps))
    limit = settings.max_estimates(len(steps))
    rounds = [initial_steps(steps, settings.initial_count(len(steps)))]
    chosen = set(rounds[0])
    known = set(int(s) for s in curve.index[curve[VALUE].notna()]) | set(int(s) for s in failed)
    while chosen <= known and len(chosen) < limit:
        new = next_round(steps, curve[curve.index.isin(chosen)], settings, limit - len(chosen))
        if not new:
            break
        rounds.append(new)
        chosen.update(new)
    return rounds


def next_round(steps: list[int], curve: pd.DataFrame, settings: AdaptiveSettings, limit: int) -> list[int]:
    """At most `limit` unmeasured checkpoints to measure next (module docstring), ascending."""
    values = curve[curve[VALUE].notna() & curve.index.isin(steps)].sort_index().rename_axis("step")
    measured = [steps.index(int(s)) for s in values.index]
    if len(measured) < MIN_LLC_POINTS:
        return []
    std = STD if STD in values.columns and values[STD].notna().all() else None
    healthy = HEALTHY if HEALTHY in values.columns else None
    fit = fit_llc_curve(values, VALUE, std, llc_healthy=healthy).fit
    stages = detect_transitions(values, llc=VALUE, loss=None, llc_std=std, llc_healthy=healthy, point_steps=steps)
    xs = log_step(steps)
    at_boundaries, reserve = _boundary_candidates([steps.index(int(b)) for b in stages["start_step"].iloc[1:]],
                                                  measured)
    priority = at_boundaries
    bends = _bend_candidates(values, measured, xs, fit, settings.z_change)
    if std is not None and fit.fitted_noise_var > (UNRESOLVED_NOISE * values[STD].median()) ** 2:  # unresolved
        sharpest = _bend_candidates(values, measured, xs, fit, settings.z_change, excess_noise=False)[:2]
        priority, bends = [*at_boundaries, *sharpest, *bends], []
    first = _unmeasured(priority, measured)[:limit]
    others = [*_marginal_candidates(stages, steps, measured), *bends, *_gap_candidates(measured, xs, fit, settings)]
    others = [c for c in _unmeasured(others, measured) if c not in first]
    chosen = first + others[: max(limit - len(first) - reserve, 0)]
    return sorted(steps[i] for i in chosen)


def _unmeasured(candidates: list[int], measured: list[int]) -> list[int]:
    """`candidates` without repeats and without the measured ones, in order."""
    return [c for c in dict.fromkeys(candidates) if c not in measured]


def _boundary_candidates(boundaries: list[int], measured: list[int]) -> tuple[list[int], int]:
    """Rule 1, on checkpoint indices: the middle of the unmeasured stretch on either side of each boundary,
    and how many more bisections the boundaries need after these (the other rules leave room for them)."""
    candidates, reserve = [], 0
    for i in boundaries:
        left = max(j for j in measured if j < i)
        right = min(j for j in measured if j > i)
        candidates += [mid for mid in ((left + i) // 2, (i + right + 1) // 2) if mid not in (left, i, right)]
        reserve += sum(max(math.ceil(math.log2(gap)) - 1, 0) for gap in (i - left, right - i))
    return list(dict.fromkeys(candidates)), reserve


def _marginal_candidates(stages: pd.DataFrame, steps: list[int], measured: list[int]) -> list[int]:
    """Rule 2, on checkpoint indices: the middle of the widest unmeasured stretch in each stage whose
    |llc_z| is within MARGINAL_Z."""
    candidates = []
    for stage in stages.itertuples():
        if not MARGINAL_Z[0] <= abs(stage.llc_z) < MARGINAL_Z[1]:
            continue
        first, last = steps.index(int(stage.start_step)), steps.index(int(stage.end_step))
        inside = [j for j in measured if first <= j <= last]
        gaps = [(b - a, a, b) for a, b in zip(inside[:-1], inside[1:]) if b - a > 1]
        if gaps:
            _, a, b = max(gaps)
            candidates.append((a + b) // 2)
    return candidates


def _bend_candidates(values: pd.DataFrame, measured: list[int], xs: np.ndarray, fit: GPFit,
                     z_change: float, excess_noise: bool = True) -> list[int]:
    """Rule 3: the middles of the stretches on either side of each bend (`_bends`), the sharpest first."""
    return [mid for k in _bends(values, measured, xs, fit, z_change, excess_noise)
            for mid in ((measured[k - 1] + measured[k]) // 2, (measured[k] + measured[k + 1] + 1) // 2)]


def _gap_candidates(measured: list[int], xs: np.ndarray, fit: GPFit, settings: AdaptiveSettings) -> list[int]:
    """Rules 4 and 5: the middles of the gaps wider than `min_gap` across which the smoothed curve moves
    by more than `z_change` standard deviations (largest first), then of those whose middle the smoother
    knows UNCERTAIN_GAP times worse than the measured points (least known first)."""
    gaps = [(a, b) for a, b in zip(measured[:-1], measured[1:]) if b - a > 1 and xs[b] - xs[a] > settings.min_gap]
    if not gaps:
        return []
    a_x, b_x = xs[[a for a, _ in gaps]], xs[[b for _, b in gaps]]
    delta, sd = fit.difference(a_x, b_x)
    z = np.abs(delta) / np.maximum(sd, 1e-300)
    _, mid_sd = fit.predict((a_x + b_x) / 2)
    _, point_sd = fit.predict(xs[measured])
    moving = [k for k in np.argsort(-z) if z[k] > settings.z_change]
    uncertain = [k for k in np.argsort(-mid_sd) if mid_sd[k] > UNCERTAIN_GAP * np.median(point_sd)]
    return [(gaps[k][0] + gaps[k][1]) // 2 for k in moving + uncertain]


def _bends(values: pd.DataFrame, measured: list[int], xs: np.ndarray, fit: GPFit, z_change: float,
           excess_noise: bool = True) -> list[int]:
    """Positions k in `measured` (interior) whose value departs from the straight line (in x) through its
    two measured neighbours by more than `z_change` times the noise (the fit's: moderated chain spread plus,
    with `excess_noise`, the fitted excess), the largest departures first."""
    y = values[VALUE].to_numpy(dtype=float)
    excess = fit.fitted_noise_var if excess_noise else 0.0
    spread = moderated_spread(values.index, values[STD]) if STD in values else 0.0
    noise = np.sqrt(excess + spread ** 2)
    x = xs[measured]
    z = []
    for k in range(1, len(measured) - 1):
        w = (x[k] - x[k - 1]) / (x[k + 1] - x[k - 1])
        line = (1 - w) * y[k - 1] + w * y[k + 1]
        sd = np.sqrt(noise[k] ** 2 + ((1 - w) * noise[k - 1]) ** 2 + (w * noise[k + 1]) ** 2)
        z.append(abs(y[k] - line) / max(sd, 1e-300))
    return [k + 1 for k in np.argsort(z)[::-1] if z[k] > z_change]
