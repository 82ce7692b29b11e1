"""The evidence of a stage: one '; '-separated line saying what the LLC and the loss did over it and
what else happened in it (events of `signals`, unhealthy LLC estimates, the metrics that moved most)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from devinterp.transitions.movers import Mover, describe_movers


@dataclass(frozen=True)
class StageChange:
    """What the smoothed curves did over one stage. Ranges are over the run's logged LLC steps."""

    direction: int  # +1: the LLC rose significantly (A), -1: fell (B), 0: plateau
    llc_start: float
    llc_end: float
    llc_delta: float  # smoothed difference, llc_end - llc_start up to the GP's posterior
    llc_z: float  # llc_delta / its posterior sd
    llc_range: float
    loss_delta: float | None  # the smoothed loss's change; None without a loss (or fewer than 3 logged steps of it)
    loss_range: float


def stage_evidence(change: StageChange, loss_flat_tol: float, events: pd.DataFrame, unhealthy: list[int],
                   unhealthy_excluded: bool, movers: tuple[Mover, ...]) -> str:
    """The stage's evidence: its LLC change, its loss change beside it (flagging a B whose loss moved
    more than `loss_flat_tol` of its range and an A whose loss rose), then the `events` within it, its
    `unhealthy` LLC steps and its `movers`."""
    evidence = [f"LLC {change.llc_start:.4g} -> {change.llc_end:.4g} (change {change.llc_delta:+.3g}, "
                f"z={change.llc_z:+.1f})"]
    if change.direction == 0:
        evidence.append("LLC plateau (no significant monotone change)")
    evidence += _loss_evidence(change, loss_flat_tol)
    evidence += [f"{r.name} {r.kind} at step {int(r.step)} (z={float(r.z):+.1f})" for r in events.itertuples()]
    if unhealthy:
        how = "left out" if unhealthy_excluded else "down-weighted"
        evidence.append(f"{len(unhealthy)} unhealthy LLC estimate(s) {how} "
                        f"(steps {', '.join(map(str, unhealthy[:5]))}{', ...' if len(unhealthy) > 5 else ''})")
    if movers:
        evidence.append(describe_movers(movers))
    return "; ".join(evidence)


def _loss_evidence(change: StageChange, loss_flat_tol: float) -> list[str]:
    if change.loss_delta is None:
        return ["no loss column: type from the LLC only"]
    d_loss, loss_range = change.loss_delta, change.loss_range
    loss_flat = bool(np.isfinite(d_loss) and abs(d_loss) <= loss_flat_tol * loss_range)
    frac = abs(d_loss) / loss_range if loss_range > 0 else 0.0
    llc_frac = abs(change.llc_delta) / change.llc_range if change.llc_range > 0 else 0.0
    evidence = [f"loss {d_loss:+.3g} ({frac:.0%} of the loss range; the LLC moved {llc_frac:.0%} of its range)"]
    if change.direction > 0 and d_loss > 0 and not loss_flat:
        evidence.append("loss rises (atypical for type A)")
    if change.direction < 0 and not loss_flat:
        evidence.append(f"loss moved more than {loss_flat_tol:.0%} of its range (a B with a moving loss)")
    return evidence
