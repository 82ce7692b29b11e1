"""Running callbacks at a step: scheduling, isolation of failures and of RNG state, storage."""
from __future__ import annotations

import logging
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput, derive_seed
from devinterp.callbacks.progress import CostModel
from devinterp.config import ConfigError
from devinterp.store.results import ResultStore
from devinterp.tasks import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    """The fixed inputs every callback of a run sees, whatever the step or process."""

    task: Task
    eval_tokens: torch.Tensor
    train_tokens: torch.Tensor
    seed: int
    run_dir: Path | None = None
    initial_state: dict[str, torch.Tensor] | None = None


def training_sample(task: Task, num_sequences: int) -> torch.Tensor:
    """A fixed sample of training sequences (the first rows of step 0's stream)."""
    return task.train_batch(0, num_sequences)


def build_callbacks(callbacks_cfg) -> list[Callback]:
    """Instantiate the `callbacks` config dict ({name: {_target_: ..., settings...}}).
    Entries set to null are skipped. Raises ConfigError naming the entry on bad settings."""
    callbacks = []
    for key, node in (callbacks_cfg or {}).items():
        if node is None:
            continue
        try:
            callback = instantiate(node, _convert_="all")
        except ConfigError:
            raise
        except Exception as e:
            cause = e.__cause__ if isinstance(e.__cause__, ConfigError) else None
            raise ConfigError(str(cause) if cause else f"callbacks.{key}: {e}".splitlines()[0]) from e
        if not isinstance(callback, Callback):
            raise ConfigError(f"callbacks.{key}._target_: {type(callback).__name__} is not a devinterp Callback")
        callbacks.append(callback)
    names = [c.name for c in callbacks]
    if len(set(names)) != len(names):
        raise ConfigError(f"callbacks: two entries share a callback name ({names})")
    return callbacks


@dataclass
class CallbackRunner:
    """Runs each callback at its due steps, skipping results already stored, and records the
    seconds spent per callback (`costs`: totals and means per call). A callback that raises
    is logged and stored as a failure for that (step, callback); the others, and training, go on.

    `announce(callback_name, step)`, if given, is called just before each callback runs (the
    progress bar shows it)."""

    callbacks: list[Callback]
    data: RunData
    store: ResultStore
    checkpoint_steps: list[int]
    total_steps: int
    completed: set[tuple[int, str, str]] | None = None  # results already stored; None: ask the store
    announce: Callable[[str, int], None] | None = None
    costs: CostModel = field(default_factory=CostModel)

    def __post_init__(self):
        self._due = {c.name: c.schedule.due_steps(self.checkpoint_steps, self.total_steps) for c in self.callbacks}
        self._done = self.store.completed() if self.completed is None else set(self.completed)

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds spent per callback so far."""
        return dict(self.costs.totals)

    def remaining_calls(self, after_step: int) -> dict[str, int]:
        """Calls still to run after `after_step`, per callback (for time-left estimates)."""
        return {c.name: sum(1 for s in self._due[c.name]
                            if s > after_step and (s, c.name, c.settings_hash) not in self._done)
                for c in self.callbacks}

    def pending(self, step: int) -> list[Callback]:
        return [c for c in self.callbacks
                if step in self._due[c.name] and (step, c.name, c.settings_hash) not in self._done]

    def pending_steps(self) -> list[int]:
        steps = set().union(*self._due.values()) if self._due else set()
        return sorted(s for s in steps if self.pending(s))

    def run(self, step: int, model: torch.nn.Module, device: torch.device) -> CallbackOutput:
        """Run the callbacks pending at `step`; returns their outputs merged (for loggers)."""
        merged = CallbackOutput()
        was_training = model.training
        model.eval()
        for callback in self.pending(step):
            seed = derive_seed(self.data.seed, step, callback.name)
            ctx = CallbackContext(step, model, self.data.task, self.data.eval_tokens, self.data.train_tokens,
                                  device, seed, self.data.run_dir, self.data.initial_state)
            if self.announce is not None:
                self.announce(callback.name, step)
            started = time.perf_counter()
            try:
                # Warnings (e.g. an unconverged Lanczos run) go to the run's log, not the console:
                # the same diagnostics are stored as metrics.
                with warnings.catch_warnings(record=True) as caught, \
                        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    warnings.simplefilter("always")
                    torch.manual_seed(seed)
                    output = callback.on_checkpoint(ctx)
                for warning in caught:
                    log.warning("%s at step %d: %s", callback.name, step, warning.message)
                self.store.write(step, callback.name, callback.settings_hash, output.scalars, output.arrays)
                merged.scalars.update(output.scalars)
                merged.arrays.update(output.arrays)
            except Exception as e:
                log.exception("callback %s failed at step %d", callback.name, step)
                self.store.write_failure(step, callback.name, callback.settings_hash, repr(e), traceback.format_exc())
            finally:
                self.costs.record(callback.name, time.perf_counter() - started)
            self._done.add((step, callback.name, callback.settings_hash))
        model.train(was_training)
        return merged
