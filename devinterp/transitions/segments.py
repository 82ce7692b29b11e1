"""Cutting a smoothed curve into monotone stages at its critical points.

Works on a `GPFit` (see `smoothing`), in x = ln(step + 1). On a uniform grid of x:

1. **Slope labels.** A grid point is *rising* (+1) where the posterior mean slope exceeds both
   ``z_slope`` posterior standard deviations and a plateau floor (``plateau_rel`` times the
   largest |slope| on the grid), *falling* (-1) symmetrically, and *flat* (0) otherwise. The
   floor is the published "|d lambda / d log t| below a threshold" criterion; the z test keeps
   noise from producing slopes.
2. **Clean-up** (repeated until nothing changes):
   - a flat run between two runs of the same sign is filled in (no boundary) when it is shorter
     than ``min_length`` or when its slope is not *confidently* small: the upper bound of its mean
     slope, (|Δ| + z_slope * sd(Δ)) / length with Δ the change across it, must stay below
     ``PLATEAU_SPLIT`` (0.5) times the peak |slope| of each neighbour. (Failing to show a slope is
     not the same as showing a plateau.)
   - a rising/falling run is dropped (relabelled flat) if it is shorter than ``min_length`` or if
     the posterior probability that the curve changed in its direction across it is below
     ``min_confidence``. This is how boundaries that noise alone could produce are *not reported*.
3. **Boundaries.**
   - between a rising and a falling run (either order): one boundary, at the extremum of the
     smoothed curve in the flat stretch between them (a maximum or minimum is a critical point
     however wide its top);
   - between two runs of the same sign (the flat stretch is >= ``min_length`` and confidently
     slow after clean-up): if the curve still changes significantly (at ``min_confidence``) across
     the stretch, it is a slow-down and gets one boundary where |slope| is smallest; otherwise it
     is a plateau stage of its own, with direction 0;
   - a flat stretch at either end becomes a plateau stage when it is at least ``min_length`` long,
     confidently slow (as above, against its one neighbour) and without significant net change;
     otherwise its neighbour absorbs it.
   With no rising or falling run at all the whole range is one stage of direction 0.
4. A stage whose one rising/falling run does not make its net change significant (at
   ``min_confidence``, in the run's direction) is not a stage of that direction: the run is relabelled
   flat and steps 3-4 are repeated, so the flat stretch it leaves is judged afresh (at either end, a
   stretch across which the curve still changes significantly is absorbed by its neighbour, as in step
   3). On markov-ICL's LLC at the adaptive schedule's points, a rise over steps 2-5 (z 3.6 on its own,
   2.7 from step 0: the smoothed LLC dips after step 0) otherwise left a plateau "stage" 0-143 whose
   net change was z 4.0.
5. A resulting stage without a rising/falling run (or with runs of both directions) whose net change
   is nevertheless significant at ``min_confidence`` takes the direction of that change; one whose net
   change is not gets direction 0, and adjacent direction-0 stages merge (the merged stage is judged
   again: two plateaus can add up to a significant change).

Every returned segment carries the posterior mean and std of f(end) - f(start), from which
`Segment.confidence` = Phi(|delta| / std) is the posterior probability that the curve moved in
the observed direction across the segment.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from devinterp.transitions.smoothing import GPFit

# A flat stretch between two rises (or two falls), or at either end, is only a plateau stage when
# the upper confidence bound of its mean |slope| stays below this fraction of the neighbouring
# peak slope.
PLATEAU_SPLIT = 0.5


@dataclass(frozen=True)
class Segment:
    """One stage of a smoothed curve, in x = ln(step + 1)."""

    start_x: float
    end_x: float
    direction: int  # +1 rising, -1 falling, 0 plateau / not significant
    delta: float  # posterior mean of f(end_x) - f(start_x)
    delta_std: float  # its posterior std

    @property
    def z(self) -> float:
        """Signed delta / std (inf when the std vanishes and delta does not)."""
        if self.delta_std > 0:
            return self.delta / self.delta_std
        return 0.0 if self.delta == 0 else float(np.sign(self.delta) * np.inf)

    @property
    def confidence(self) -> float:
        """Posterior probability that the curve moved in the sign of `delta` across the segment."""
        return float(norm.cdf(abs(self.z)))


def _runs(labels: np.ndarray) -> list[list[int]]:
    """Run-length encoding: [[label, first_index, last_index], ...]."""
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change - 1, [len(labels) - 1]])
    return [[int(labels[s]), int(s), int(e)] for s, e in zip(starts, ends)]


def slope_labels(fit: GPFit, grid: np.ndarray, *, z_slope: float, plateau_rel: float) -> np.ndarray:
    """+1 / -1 / 0 per grid point (step 1 of the module docstring)."""
    slope, slope_sd = fit.derivative(grid)
    floor = plateau_rel * float(np.max(np.abs(slope))) if len(slope) else 0.0
    thresh = np.maximum(z_slope * slope_sd, floor)
    labels = np.zeros(len(grid), dtype=int)
    labels[slope > thresh] = 1
    labels[slope < -thresh] = -1
    return labels


def _confidently_slow(fit, grid, slope, zero_run, neighbour, z_slope) -> bool:
    """Is the mean |slope| across `zero_run` confidently below PLATEAU_SPLIT x the neighbour's peak?

    The mean slope over the stretch is (f(end) - f(start)) / length, whose posterior is much
    tighter than pointwise slopes; its upper bound is (|delta| + z_slope * sd) / length."""
    _, i0, i1 = zero_run
    if i1 <= i0:
        return False
    delta, sd = fit.difference(grid[i0], grid[i1])
    upper = (abs(float(delta[0])) + z_slope * float(sd[0])) / (grid[i1] - grid[i0])
    peak = float(np.max(np.abs(slope[neighbour[1] : neighbour[2] + 1])))
    return upper < PLATEAU_SPLIT * peak


def _clean(labels, grid, fit, min_length, min_confidence, z_slope):
    labels = labels.copy()
    slope, _ = fit.derivative(grid)
    for _ in range(4 * len(labels)):  # each pass changes labels; a cap guards against cycling
        changed = False
        runs = _runs(labels)
        for k in range(1, len(runs) - 1):
            lab, i0, i1 = runs[k]
            if lab != 0 or not runs[k - 1][0] == runs[k + 1][0] != 0:
                continue
            left, right = runs[k - 1], runs[k + 1]
            slow = all(_confidently_slow(fit, grid, slope, runs[k], nb, z_slope) for nb in (left, right))
            if grid[i1] - grid[i0] < min_length or not slow:
                labels[i0 : i1 + 1] = left[0]
                changed = True
        if changed:
            continue
        for lab, i0, i1 in _runs(labels):
            if lab == 0:
                continue
            short = grid[i1] - grid[i0] < min_length
            delta, sd = fit.difference(grid[i0], grid[i1])
            seg = Segment(grid[i0], grid[i1], lab, float(delta[0]), float(sd[0]))
            if short or np.sign(seg.delta) != lab or seg.confidence < min_confidence:
                labels[i0 : i1 + 1] = 0
                changed = True
        if not changed:
            return labels
    return labels


def segment_curve(
    fit: GPFit,
    x_lo: float,
    x_hi: float,
    *,
    z_slope: float = 2.0,
    plateau_rel: float = 0.05,
    min_length: float = 0.2,
    min_confidence: float = 0.999,
    grid_size: int = 512,
) -> list[Segment]:
    """Stages of the smoothed curve on [x_lo, x_hi] (x = ln(step + 1)); see the module docstring.

    min_length is in units of ln(step + 1) (0.2 = a factor of ~1.22 in steps)."""
    if not x_hi > x_lo:
        raise ValueError(f"need x_hi > x_lo, got [{x_lo}, {x_hi}]")
    if not 0.5 <= min_confidence < 1:
        raise ValueError(f"min_confidence must be in [0.5, 1), got {min_confidence}")
    if z_slope < 0 or not 0 <= plateau_rel < 1 or min_length <= 0:
        raise ValueError(
            f"need z_slope >= 0, 0 <= plateau_rel < 1, min_length > 0; got {z_slope}, {plateau_rel}, {min_length}"
        )
    grid = np.linspace(x_lo, x_hi, grid_size)
    labels = _clean(
        slope_labels(fit, grid, z_slope=z_slope, plateau_rel=plateau_rel), grid, fit, min_length, min_confidence, z_slope
    )
    while True:  # each pass relabels at least one run flat (step 4), so it ends
        runs = _runs(labels)
        cuts = _cuts(fit, grid, runs, min_length, min_confidence, z_slope)
        edges = [0, *sorted(set(c for c in cuts if 0 < c < len(grid) - 1)), len(grid) - 1]
        weak = _runs_of_weak_stages(fit, grid, runs, edges, min_confidence)
        if not weak:
            return _segments(fit, grid, runs, edges, min_confidence)
        for _, i0, i1 in weak:
            labels[i0 : i1 + 1] = 0


def _runs_inside(runs: list[tuple[int, int, int]], a: int, b: int) -> list[tuple[int, int, int]]:
    """The rising/falling runs that overlap the grid stretch [a, b]."""
    return [(lab, i0, i1) for lab, i0, i1 in runs if lab != 0 and i0 < b and i1 > a]


def _runs_of_weak_stages(fit: GPFit, grid: np.ndarray, runs: list[tuple[int, int, int]], edges: list[int],
                         min_confidence: float) -> list[tuple[int, int, int]]:
    """Step 4: the runs of the stages (between consecutive `edges`) that have runs of one direction only
    but whose net change is not significant in that direction."""
    weak = []
    for a, b in zip(edges[:-1], edges[1:]):
        inside = _runs_inside(runs, a, b)
        if len({lab for lab, _, _ in inside}) != 1:
            continue
        delta, sd = fit.difference(grid[a], grid[b])
        stage = Segment(float(grid[a]), float(grid[b]), inside[0][0], float(delta[0]), float(sd[0]))
        if stage.confidence < min_confidence or np.sign(stage.delta) != stage.direction:
            weak += inside
    return weak


def _cuts(fit: GPFit, grid: np.ndarray, runs: list[tuple[int, int, int]], min_length: float, min_confidence: float,
          z_slope: float) -> list[int]:
    """Grid indices where a stage ends and the next begins, from the runs of slope labels."""
    mean, _ = fit.predict(grid)
    slope, _ = fit.derivative(grid)

    def confidently_slow(zero_run, neighbour) -> bool:
        return _confidently_slow(fit, grid, slope, zero_run, neighbour, z_slope)

    def still_moving(zero_run) -> bool:  # net change across the stretch is significant
        delta, sd = fit.difference(grid[zero_run[1]], grid[zero_run[2]])
        return Segment(0.0, 0.0, 0, float(delta[0]), float(sd[0])).confidence >= min_confidence

    cuts: list[int] = []
    for k, (lab, i0, i1) in enumerate(runs):
        if lab != 0:
            continue
        first, last = k == 0, k == len(runs) - 1
        long = grid[i1] - grid[i0] >= min_length
        if first and last:
            break  # no monotone run at all
        if first:
            if long and confidently_slow(runs[k], runs[k + 1]) and not still_moving(runs[k]):
                cuts.append(i1)
        elif last:
            if long and confidently_slow(runs[k], runs[k - 1]) and not still_moving(runs[k]):
                cuts.append(i0)
        elif runs[k - 1][0] == runs[k + 1][0]:  # same sign, confidently slower in between
            if still_moving(runs[k]):  # a slow-down: one boundary where the slope is smallest
                cuts.append(i0 + int(np.argmin(np.abs(slope[i0 : i1 + 1]))))
            else:  # a genuine plateau: a stage of its own
                cuts.extend([i0, i1])
        else:  # opposite signs: the extremum in between
            lo, hi = max(i0 - 1, 0), min(i1 + 1, len(grid) - 1)
            window = mean[lo : hi + 1] * runs[k - 1][0]  # rising-then-falling: maximum
            cuts.append(lo + int(np.argmax(window)))
    # Adjacent runs of opposite sign with no flat point between them: cut at the sign change.
    for k in range(len(runs) - 1):
        if runs[k][0] != 0 and runs[k + 1][0] == -runs[k][0]:
            cuts.append(runs[k][2])
    return cuts


def _segments(fit: GPFit, grid: np.ndarray, runs: list[tuple[int, int, int]], edges: list[int],
              min_confidence: float) -> list[Segment]:
    """The stages between consecutive `edges` (grid indices), none of them weak (step 4): the direction of
    the one monotone run inside, else (none or several) that of a significant net change (step 5), else 0;
    adjacent plateaus merged."""
    segments = []
    for a, b in zip(edges[:-1], edges[1:]):
        present = {lab for lab, _, _ in _runs_inside(runs, a, b)}
        direction = present.pop() if len(present) == 1 else 0
        delta, sd = fit.difference(grid[a], grid[b])
        seg = _significant_direction(Segment(float(grid[a]), float(grid[b]), direction, float(delta[0]), float(sd[0])),
                                     min_confidence)
        if segments and seg.direction == 0 and segments[-1].direction == 0:  # merge adjacent plateaus
            delta, sd = fit.difference(segments[-1].start_x, seg.end_x)
            seg = _significant_direction(Segment(segments[-1].start_x, seg.end_x, 0, float(delta[0]), float(sd[0])),
                                         min_confidence)
            segments.pop()
        segments.append(seg)
    return segments


def _significant_direction(seg: Segment, min_confidence: float) -> Segment:
    """Step 5: a stage without a direction whose net change is significant takes that change's direction."""
    if seg.direction == 0 and seg.confidence >= min_confidence:
        return Segment(seg.start_x, seg.end_x, int(np.sign(seg.delta)), seg.delta, seg.delta_std)
    return seg
