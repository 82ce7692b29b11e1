"""The callback protocol: measurements taken at checkpoint steps, live or post hoc.

A callback receives a `CallbackContext` (the step, the model at that step, the run's fixed data,
a seed derived from (run seed, step, callback name)) and returns a `CallbackOutput`: named scalars
(stored in the run's metrics table) and optional arrays (stored per checkpoint beside it).
The same callback object runs inside the training loop (`devinterp.training.trainer`) and over
saved checkpoints (`devinterp-analyze`); because it depends only on the context, both give the
same numbers for the same checkpoint, in any order and in any process.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import PreTrainedModel

from devinterp.callbacks.custom_loss import CustomLossModel
# require and positive are also the callbacks' own building blocks of Settings.validate
from devinterp.core.errors import ConfigError, SettingError, describe, positive, require  # noqa: F401
from devinterp.tasks import Task
from devinterp.transitions.adaptive import AdaptiveSettings, initial_steps

ADAPTIVE = "adaptive"  # `schedule: adaptive`


@dataclass(frozen=True)
class Schedule:
    """When a callback runs. Steps are training steps.

    - `at_checkpoints`: at checkpoint steps; with `checkpoint_stride=k`, only every k-th one
      (indices 0, k, 2k, ... of the run's checkpoint schedule) and always the last one;
    - `adaptive` (instead of `at_checkpoints`; `schedule: adaptive` in a config): at the checkpoints that
      `devinterp.transitions.adaptive` chooses from the callback's own stored curve (its `stage_curve`),
      round by round: a coarse set (half log-spaced, half in the checkpoints' order), then refinements
      around stage boundaries, marginal stages and bends (the
      runner adds each round once the one before is stored, see `CallbackRunner.pending_steps`);
    - `every`: additionally every N steps (live runs only: post hoc needs a saved checkpoint);
    - `steps`: additionally these explicit steps.
    """

    at_checkpoints: bool = True
    checkpoint_stride: int = 1
    every: int | None = None
    steps: tuple[int, ...] = ()
    adaptive: AdaptiveSettings | None = None

    def __post_init__(self):
        require(self.checkpoint_stride >= 1, "schedule.checkpoint_stride", self.checkpoint_stride, "must be >= 1")
        require(self.every is None or self.every >= 1, "schedule.every", self.every, "must be >= 1 or null")
        for step in self.steps:
            require(step >= 0, "schedule.steps", list(self.steps), "steps must be >= 0")

    def due_steps(self, checkpoint_steps: list[int], total_steps: int) -> set[int]:
        """The steps due before any adaptive refinement (for `adaptive`: its round 0)."""
        due = set(int(s) for s in self.steps if 0 <= s <= total_steps)
        if self.adaptive is not None:
            due.update(initial_steps(checkpoint_steps, self.adaptive.initial_count(len(set(checkpoint_steps)))))
        elif self.at_checkpoints and checkpoint_steps:
            due.update(checkpoint_steps[:: self.checkpoint_stride])
            due.add(checkpoint_steps[-1])
        if self.every:
            due.update(range(0, total_steps + 1, self.every))
        return due


@dataclass
class CallbackOutput:
    scalars: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class CallbackContext:
    """What a callback may look at. `model` is in eval mode; callbacks must not modify it."""

    step: int
    model: torch.nn.Module
    task: Task
    eval_tokens: torch.Tensor  # the run's fixed held-out set (examples, seq_len)
    train_tokens: torch.Tensor  # a fixed sample of training sequences (examples, seq_len)
    device: torch.device
    seed: int  # derived from (run seed, step, callback name): see derive_seed
    run_dir: Path | None = None
    initial_state: dict[str, torch.Tensor] | None = None  # weights at step 0, when known
    due_steps: tuple[int, ...] = ()  # every step this callback is due at in the run, ascending
    run_finished: bool = False  # post hoc over a finished run (live and follow-along runs: False)


class Deferred(Exception):
    """Raised by `on_checkpoint` when a measurement cannot be taken yet (e.g. the LLC waits for its
    calibration's reference checkpoint). Nothing is stored; the step stays pending and is retried
    from its saved checkpoint once the callback has measured a later step."""


def derive_seed(run_seed: int, step: int, name: str) -> int:
    """A seed that depends only on (run seed, step, callback name), never on global state."""
    digest = hashlib.sha256(f"{run_seed}/{step}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class StageCurve:
    """Names of a callback's scalars: `value` (the curve), `std` (its noise std) and `healthy` (1/0) or None."""

    value: str
    std: str | None = None
    healthy: str | None = None


@dataclass
class NoSettings:
    pass


class Callback:
    """Base class. Subclasses set `name` and a typed `Settings` dataclass, and implement
    `on_checkpoint`; the other hooks are optional.

    Constructor keyword arguments are validated against `Settings` (unknown keys and wrong types
    raise `ConfigError` naming the key) and available as `self.config`. Values are then checked by
    the Settings' own `validate()` method, if it has one: it raises `SettingError` (see `require`)
    and the error names the full key, e.g. `callbacks.llc.step_size=-1.0: must be positive`. So
    bad settings fail when the callback is built, before training or an analysis starts.
    """

    name: str = "callback"
    Settings: type = NoSettings
    # The scalar whose curve feeds stage detection, with its noise std and health verdict (or None): what
    # an adaptive schedule follows. None: this callback cannot be scheduled adaptively.
    stage_curve: StageCurve | None = None

    def __init__(self, schedule: Schedule | dict | str | None = None, **settings):
        try:
            self.schedule = _as_schedule(schedule)
            require(self.schedule.adaptive is None or self.stage_curve is not None, "schedule", ADAPTIVE,
                    "this callback has no curve for stage detection to follow (adaptive: llc, hessian)")
            merged = OmegaConf.merge(OmegaConf.structured(self.Settings), settings)
            self.config = OmegaConf.to_object(merged)
            if hasattr(self.config, "validate"):
                self.config.validate()
        except SettingError as e:
            raise e.within(f"callbacks.{self.name}") from None
        except Exception as e:
            raise ConfigError(f"callbacks.{self.name}: {describe(e)}") from e

    @cached_property
    def settings_hash(self) -> str:
        """Identifies this callback's settings: results of other settings are stored separately.
        The schedule is not part of it (it says when to measure, not what)."""
        payload = json.dumps({"name": self.name, **asdict(self.config)}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]

    def unsupported(self, model: torch.nn.Module, eval_tokens: torch.Tensor) -> str | None:
        """Why this callback cannot measure `model` (as the callbacks see it: see
        `devinterp.callbacks.custom_loss`) on a run whose eval set is `eval_tokens`, in one line; None when
        it can. Asked once per run, before the first measurement: a run of someone else's model skips
        the callbacks that do not apply (e.g. induction scores of a model without attention)."""
        return None

    def on_train_start(self, model: torch.nn.Module) -> None:
        """Live runs only: before the first step (after a resume, before its first step)."""

    def on_step(self, step: int, loss: float) -> None:
        """Live runs only: after optimizer update step+1; `loss` is step `step`'s batch loss (nats)."""

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        raise NotImplementedError

    def on_train_end(self) -> None:
        """Live runs only: after the last step and its callbacks."""


@dataclass
class ScheduleSettings:
    """Config schema of a Schedule (see there). `adaptive`: null (off), true (the default settings) or
    the settings of `devinterp.transitions.adaptive.AdaptiveSettings`."""

    at_checkpoints: bool = True
    checkpoint_stride: int = 1
    every: Optional[int] = None
    steps: List[int] = field(default_factory=list)
    adaptive: Any = None


def _as_schedule(schedule) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    if schedule == ADAPTIVE:
        schedule = {"adaptive": True}
    if isinstance(schedule, str):
        raise SettingError("schedule", schedule, f'must be a mapping or "{ADAPTIVE}"')
    merged = OmegaConf.merge(OmegaConf.structured(ScheduleSettings), {} if schedule is None else schedule)
    values = OmegaConf.to_container(merged)
    return Schedule(**{**values, "steps": tuple(values["steps"]), "adaptive": _as_adaptive(values["adaptive"])})


def _as_adaptive(value) -> AdaptiveSettings | None:
    if value is None or value is False:
        return None
    if value is True:
        return AdaptiveSettings()
    if not isinstance(value, dict):
        raise SettingError("schedule.adaptive", value, "must be true, false, null or a mapping of its settings")
    unknown = sorted(set(value) - {f.name for f in fields(AdaptiveSettings)})
    if unknown:
        raise SettingError(f"schedule.adaptive.{unknown[0]}", value[unknown[0]],
                           f"not a setting (settings: {', '.join(f.name for f in fields(AdaptiveSettings))})")
    try:
        return AdaptiveSettings(**value)
    except (TypeError, ValueError) as e:
        raise SettingError("schedule.adaptive", value, str(e)) from None


def not_a_language_model(model: torch.nn.Module, eval_tokens: torch.Tensor, needs: str) -> str | None:
    """Why a callback that needs `needs` (a transformers model with an integer vocabulary, fed rows of token
    ids) cannot measure `model` on `eval_tokens`, or None (see `Callback.unsupported`)."""
    if not isinstance(model, PreTrainedModel) or not isinstance(getattr(model.config, "vocab_size", None), int):
        return (f"needs {needs} (this is a {type(model).__name__}"
                + (" measured with its own loss_fn)" if isinstance(model, CustomLossModel) else ")"))
    if eval_tokens.is_floating_point() or eval_tokens.dim() != 2:
        return f"needs rows of token ids (the run's inputs have shape {tuple(eval_tokens.shape)})"
    return None
