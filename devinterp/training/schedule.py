"""Which steps get a checkpoint."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from devinterp.core.errors import require


@dataclass
class CheckpointConfig:
    """Schema of configs/checkpoints/: how many steps of each spacing (see `checkpoint_schedule`)."""

    log: int = 60  # log-spaced checkpoint steps over [1, steps]
    linear: int = 40  # linearly spaced steps over [0, steps]

    def validate(self, steps: int) -> None:
        for key in ("log", "linear"):
            count = getattr(self, key)
            require(count >= 0, key, count, "must be >= 0")
            require(count <= steps + 1, key, count, f"more checkpoints than there are steps (steps={steps})")


def checkpoint_schedule(total_steps: int, n_log: int, n_linear: int) -> list[int]:
    """Sorted union of `n_log` log-spaced steps in [1, total_steps] and `n_linear` linearly spaced
    steps in [0, total_steps], always including 0 and `total_steps`.

    Steps are rounded to integers and de-duplicated, so early log-spaced steps that round to the
    same integer count once: the result can hold fewer than n_log + n_linear + 2 steps.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps={total_steps} must be positive")
    if n_log < 0 or n_linear < 0:
        raise ValueError(f"checkpoint counts must be >= 0, got log={n_log}, linear={n_linear}")
    log_steps = np.geomspace(1, total_steps, n_log) if n_log else np.array([])
    linear_steps = np.linspace(0, total_steps, n_linear) if n_linear else np.array([])
    steps = np.concatenate([[0, total_steps], np.rint(log_steps), np.rint(linear_steps)]).astype(np.int64)
    return sorted(set(steps.tolist()))
