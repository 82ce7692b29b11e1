"""The post-hoc analysis bar: what is being measured, and time left from the measured callback costs
(see devinterp.core.progress)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from tqdm.auto import tqdm

from devinterp.core.progress import CostModel, format_time_left, measuring_label


class AnalysisProgress:
    """Follows a list of checkpoint jobs (each with `.step` and `.callbacks`) as they finish.

    The time left is the remaining jobs' callbacks at their mean measured seconds per call, divided by
    the number of parallel workers; "≥" while some callback has not finished once."""

    def __init__(self, bar: tqdm, jobs: Sequence, workers: int = 1):
        self.bar = bar
        self.workers = max(workers, 1)
        self.costs = CostModel()
        self._pending = {job.step: Counter(c.name for c in job.callbacks) for job in jobs}
        self._show()

    def measuring(self, callback: str, step: int) -> None:
        """Called by an in-process job before each callback."""
        self.bar.set_description_str(measuring_label(callback, step))

    def done(self, step: int, seconds: Mapping[str, float]) -> None:
        """A job finished, having spent `seconds` per callback."""
        for name, value in seconds.items():
            self.costs.record(name, value)
        self._pending.pop(step, None)
        self.bar.update(1)
        self._show()

    def _show(self) -> None:
        remaining = sum(self._pending.values(), Counter())
        seconds, known = self.costs.estimate(remaining)
        self.bar.set_postfix_str(format_time_left(seconds / self.workers, known), refresh=False)
