"""Is a stage robust? Compare one stage table with those of other LLC series of the same run
(other SGLD settings) or of other runs (other seeds).

Convention: a type-A or type-B stage of the primary table *reappears* in another table when that
table has a stage of the same type whose steps overlap it, i.e. max(starts) < min(ends) (sharing
only a boundary step does not count). A stage that does not reappear in every other table is
**fragile**; one that does is **robust**. Plateau stages ('other') are not judged. With no other
table, nothing is judged.

The same comparison serves LLC settings and seeds: `mark_robustness` is called once per kind of
comparison and a stage fragile under either stays fragile.

`mark_chain_spread` is the third check: an A or B stage whose LLC change is smaller than
MIN_SPREADS times the chain spread (the median over the stage's checkpoints of the std of the
chains' means, `llc/std`) is fragile too: chains started at one checkpoint disagree by as much
as the stage moves.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from devinterp.transitions.metrics import get_series, to_wide

JUDGED_TYPES = ("A", "B")
ROBUSTNESS_COLUMN = "robustness"  # 'robust' | 'fragile' | '' (not judged)
MIN_SPREADS = 1.0  # an A/B stage's |LLC change| must reach this many chain spreads


@dataclass(frozen=True)
class StageRobustness:
    """Where a stage reappears (`found_in`) and where not (`missing_in`), by the others' labels."""

    found_in: tuple[str, ...]
    missing_in: tuple[str, ...]

    @property
    def fragile(self) -> bool:
        return bool(self.missing_in)


def reappears(stage_type: str, start: int, end: int, other: pd.DataFrame) -> bool:
    """Whether `other` (a stage table) has a stage of `stage_type` overlapping [start, end]."""
    same = other[other["type"] == stage_type]
    return bool((same["start_step"].clip(lower=start) < same["end_step"].clip(upper=end)).any())


def stage_robustness(stages: pd.DataFrame, others: Mapping[str, pd.DataFrame]) -> list[StageRobustness | None]:
    """One entry per row of `stages`: None for plateau stages or when `others` is empty."""
    out: list[StageRobustness | None] = []
    for s in stages.itertuples():
        if s.type not in JUDGED_TYPES or not others:
            out.append(None)
            continue
        hits = {label: reappears(s.type, int(s.start_step), int(s.end_step), other) for label, other in others.items()}
        out.append(StageRobustness(tuple(k for k, hit in hits.items() if hit),
                                   tuple(k for k, hit in hits.items() if not hit)))
    return out


def mark_robustness(stages: pd.DataFrame, others: Mapping[str, pd.DataFrame], across: str) -> pd.DataFrame:
    """A copy of `stages` with the `robustness` column set from this comparison ('fragile' wins over
    an earlier 'robust'; nothing judged leaves it as it was) and a line added to `evidence`, e.g.
    'fragile across LLC settings: no B overlapping in llc-3fa2 (γ=30)'. `across` names the kind of
    comparison ('LLC settings', 'seeds')."""
    out = _with_columns(stages)
    for i, verdict in zip(out.index, stage_robustness(stages, others)):
        if verdict is None:
            continue
        if verdict.fragile:
            line = (f"fragile across {across}: no {out.at[i, 'type']} overlapping in {', '.join(verdict.missing_in)}"
                    + (f" (found in {', '.join(verdict.found_in)})" if verdict.found_in else ""))
        else:
            line = f"robust across {across}: also in {', '.join(verdict.found_in)}"
        _record(out, i, verdict.fragile, line)
    return out


def mark_chain_spread(stages: pd.DataFrame, metrics: pd.DataFrame, llc_std: str) -> pd.DataFrame:
    """A copy of `stages` where each A or B stage's evidence gives its |LLC change| (llc_end − llc_start)
    in chain spreads: the median of `llc_std` (the std over chains of their mean, per checkpoint) over the
    checkpoints in [start_step, end_step]. Below MIN_SPREADS the stage is marked fragile, else robust
    (unless already fragile). Stages without an `llc_std` value inside are not judged."""
    out = _with_columns(stages)
    steps, spread = get_series(to_wide(metrics), llc_std, what="llc_std")
    for i, s in zip(out.index, stages.itertuples()):
        inside = spread[(steps >= s.start_step) & (steps <= s.end_step)]
        typical = float(np.median(inside)) if len(inside) else 0.0
        if s.type not in JUDGED_TYPES or typical <= 0:
            continue
        spreads = abs(s.llc_end - s.llc_start) / typical
        fragile = spreads < MIN_SPREADS
        _record(out, i, fragile, f"{'fragile' if fragile else 'robust'} against the chain spread: the LLC change is "
                                 f"{spreads:.1f}× the median std over chains ({typical:.3g})")
    return out


def _with_columns(stages: pd.DataFrame) -> pd.DataFrame:
    out = stages.copy()
    if ROBUSTNESS_COLUMN not in out.columns:
        out[ROBUSTNESS_COLUMN] = ""
    if "evidence" not in out.columns:
        out["evidence"] = ""
    return out


def _record(out: pd.DataFrame, i, fragile: bool, line: str) -> None:
    """Set row i's verdict ('fragile' wins over an earlier 'robust') and append `line` to its evidence."""
    if fragile:
        out.at[i, ROBUSTNESS_COLUMN] = "fragile"
    elif out.at[i, ROBUSTNESS_COLUMN] != "fragile":
        out.at[i, ROBUSTNESS_COLUMN] = "robust"
    evidence = str(out.at[i, "evidence"]) if pd.notna(out.at[i, "evidence"]) else ""
    out.at[i, "evidence"] = f"{evidence}; {line}" if evidence else line
