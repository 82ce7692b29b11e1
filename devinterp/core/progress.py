"""Honest progress: what is being measured, and time left that counts the measurements still to come.

Callback time lands on single steps (a checkpoint's Hessian and LLC take seconds, a training step
milliseconds), so a rate over steps says nothing about the time left. Here the time left is
estimated part by part: the remaining training steps at the measured seconds per training step, plus,
for every callback, its remaining due calls at its mean measured seconds per call. A callback not
measured yet has no cost estimate; the estimate is then a lower bound, shown as "≥".
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from tqdm.auto import tqdm

# The bar shows the postfix (losses, rates, time left) instead of tqdm's own rate-based estimate.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


@dataclass
class CostModel:
    """Mean measured seconds per call of each callback."""

    totals: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def record(self, name: str, seconds: float, calls: int = 1) -> None:
        self.totals[name] += seconds
        self.counts[name] += calls

    def mean(self, name: str) -> float | None:
        """Mean seconds per call, or None before the first call."""
        return self.totals[name] / self.counts[name] if self.counts.get(name) else None

    def estimate(self, remaining_calls: Mapping[str, int]) -> tuple[float, bool]:
        """Seconds for `remaining_calls` ({callback: calls}), and whether every cost was known (if not,
        the unknown ones count 0 and the seconds are a lower bound)."""
        seconds, known = 0.0, True
        for name, calls in remaining_calls.items():
            if not calls:
                continue
            mean = self.mean(name)
            if mean is None:
                known = False
            else:
                seconds += calls * mean
        return seconds, known


def format_time_left(seconds: float | None, known: bool = True) -> str:
    """'eta 1:02:03' (h:mm:ss or mm:ss); 'eta ≥ ...' for a lower bound; 'eta ?' when nothing is known."""
    if seconds is None:
        return "eta ?"
    return f"eta {'' if known else '≥ '}{tqdm.format_interval(max(seconds, 0.0))}"


def measuring_label(callback: str, step: int) -> str:
    """The bar's description while a callback runs: 'llc @ step 290'."""
    return f"{callback} @ step {step}"
