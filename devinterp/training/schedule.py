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


# Log-spaced steps per decade when the total is not known (`open_ended_schedule`): as dense as the
# default 60 log-spaced steps over a 1000-step run.
LOG_STEPS_PER_DECADE = 20


def open_ended_schedule(up_to: int, per_decade: int = LOG_STEPS_PER_DECADE) -> list[int]:
    """Checkpoint steps of a run whose length is not known: 0 and the steps round(10^(k / per_decade)),
    k = 0, 1, ..., up to `up_to` (de-duplicated). A prefix of it never changes as `up_to` grows."""
    if up_to < 0 or per_decade <= 0:
        raise ValueError(f"up_to={up_to} must be >= 0 and per_decade={per_decade} positive")
    steps, k = {0}, 0
    while (step := int(round(10 ** (k / per_decade)))) <= up_to:
        steps.add(step)
        k += 1
    return sorted(steps)


def run_schedule(config: dict) -> list[int]:
    """A run's checkpoint steps from its stored config (config.yaml, plain containers): the
    `checkpoint_schedule` of `steps`, `checkpoints.log` and `checkpoints.linear`, with the explicit
    `checkpoints.steps` where the run lists them (runs of `devinterp.monitor` that did not know their
    length, and checkpoint folders from elsewhere)."""
    total, spacing = int(config["steps"]), config["checkpoints"]
    explicit = [int(s) for s in spacing.get("steps") or [] if 0 <= int(s) <= total]
    return sorted(set(checkpoint_schedule(total, int(spacing["log"]), int(spacing["linear"]))) | set(explicit))
