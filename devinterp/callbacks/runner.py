"""Running callbacks at a step: scheduling, isolation of failures and of RNG state, storage."""
from __future__ import annotations

import logging
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput, Deferred, derive_seed
from devinterp.callbacks.custom_loss import LossFn, prefixed, with_loss
from devinterp.core.progress import CostModel
from devinterp.core.errors import ConfigError
from devinterp.store.adaptive import AdaptiveRecord, write_adaptive_record
from devinterp.store.results import ResultStore
from devinterp.tasks import Task
from devinterp.transitions.adaptive import HEALTHY, STD, VALUE, adaptive_rounds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    """The fixed inputs every callback of a run sees, whatever the step or process. `loss_fn`: the run's
    own loss function, if it brought one (then every model is measured through it, see
    `devinterp.callbacks.custom_loss`); None: the model's own `model(inputs, labels=labels).loss`."""

    task: Task
    eval_tokens: torch.Tensor
    train_tokens: torch.Tensor
    seed: int
    run_dir: Path | None = None
    initial_state: dict[str, torch.Tensor] | None = None
    loss_fn: LossFn | None = None

    def measured(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` as the callbacks see it (with the run's loss function, if any)."""
        return with_loss(model, self.loss_fn)

    def measured_initial_state(self) -> dict[str, torch.Tensor] | None:
        """The step-0 weights, named as `measured` names the parameters."""
        return self.initial_state if self.loss_fn is None else prefixed(self.initial_state)


def applicable(callbacks: list[Callback], model: torch.nn.Module, data: RunData) -> tuple[list[Callback], list[str]]:
    """The callbacks that can measure `model` on the run's data, and one line for each that cannot
    (`Callback.unsupported`): "<name>: skipped, <why>"."""
    measured, kept, skipped = data.measured(model), [], []
    was_training = measured.training
    measured.eval()
    for callback in callbacks:
        why = callback.unsupported(measured, data.eval_tokens)
        if why is None:
            kept.append(callback)
        else:
            skipped.append(f"{callback.name}: skipped, {why}")
    measured.train(was_training)
    return kept, skipped


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

    Each result is claimed in the store before it is computed (see `ResultStore.claim`): one
    held by another process is skipped and listed in `busy` (or, with `wait_for_claims`, waited
    for), one that process stored meanwhile is skipped. `failed` lists (step, callback name) of
    the runs that raised. `announce(callback_name, step)`, if given, is called just before each
    callback runs (the progress bar shows it)."""

    callbacks: list[Callback]
    data: RunData
    store: ResultStore
    checkpoint_steps: list[int]
    total_steps: int
    completed: set[tuple[int, str, str]] | None = None  # results already stored; None: ask the store
    run_finished: bool = False  # post hoc over a finished run
    wait_for_claims: bool = False
    announce: Callable[[str, int], None] | None = None
    costs: CostModel = field(default_factory=CostModel)
    failed: list[tuple[int, str]] = field(default_factory=list)
    busy: list[tuple[int, str]] = field(default_factory=list)
    deferred: set[tuple[int, str]] = field(default_factory=set)  # (step, callback) that raised Deferred
    _rounds: dict[str, list[list[int]]] = field(default_factory=dict)  # adaptive callbacks: their rounds so far

    def __post_init__(self):
        self._due = {c.name: c.schedule.due_steps(self.checkpoint_steps, self.total_steps) for c in self.callbacks}
        self._done = self.store.completed() if self.completed is None else set(self.completed)
        self.refine()

    def refine(self) -> bool:
        """Add to the due steps of each adaptively scheduled callback the refinement rounds its stored results
        call for (`devinterp.transitions.adaptive`), and record its rounds in the run (`store.adaptive`).
        Returns whether a step was added. Also called by `pending_steps`."""
        added = False
        for callback in self.callbacks:
            if callback.schedule.adaptive is None:
                continue
            rounds = self.adaptive_rounds(callback)
            if rounds == self._rounds.get(callback.name):
                continue
            self._rounds[callback.name] = rounds
            new = set().union(*rounds) - self._due[callback.name]
            self._due[callback.name] |= new
            added = added or bool(new)
            write_adaptive_record(self.store.run_dir, callback.name, callback.settings_hash, AdaptiveRecord(
                sorted(self.checkpoint_steps), rounds, asdict(callback.schedule.adaptive)))
        return added

    def adaptive_rounds(self, callback: Callback) -> list[list[int]]:
        """The rounds of an adaptively scheduled callback so far, from its stored results (a failed
        measurement counts as measured, without a value)."""
        names = callback.stage_curve
        stored = self.store.scalars(callback.name, callback.settings_hash,
                                    [n for n in (names.value, names.std, names.healthy) if n is not None])
        curve = stored.rename(columns={names.value: VALUE, names.std: STD, names.healthy: HEALTHY})
        failed = {int(r["step"]) for r in self.store.failures()
                  if r.get("callback") == callback.name and r.get("settings") == callback.settings_hash}
        failed |= {step for step, name in self.failed if name == callback.name}
        return adaptive_rounds(self.checkpoint_steps, curve, callback.schedule.adaptive, failed)

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds spent per callback so far."""
        return dict(self.costs.totals)

    def remaining_calls(self, after_step: int) -> dict[str, int]:
        """Calls still to run after `after_step`, and deferred ones before it that `catch_up` will run,
        per callback (for time-left estimates)."""
        return {c.name: sum(1 for s in self._due[c.name]
                            if (s > after_step or (s, c.name) in self.deferred)
                            and (s, c.name, c.settings_hash) not in self._done)
                for c in self.callbacks}

    def pending(self, step: int) -> list[Callback]:
        return [c for c in self.callbacks
                if step in self._due[c.name] and (step, c.name, c.settings_hash) not in self._done]

    def pending_steps(self) -> list[int]:
        """Every step with a callback due and not stored (adaptive schedules refined first)."""
        self.refine()
        steps = set().union(*self._due.values()) if self._due else set()
        return sorted(s for s in steps if self.pending(s))

    def run(self, step: int, model: torch.nn.Module, device: torch.device,
            only: set[str] | None = None) -> CallbackOutput:
        """Run the callbacks pending at `step` (those named in `only`, when given); returns their
        outputs merged (for loggers)."""
        merged = CallbackOutput()
        model = self.data.measured(model)
        was_training = model.training
        model.eval()
        for callback in self.pending(step):
            if only is not None and callback.name not in only:
                continue
            with self.store.claim(step, callback.name, callback.settings_hash, self.wait_for_claims) as claimed:
                if not claimed:
                    self.busy.append((step, callback.name))
                    continue
                if not self.store.is_complete(step, callback.name, callback.settings_hash):
                    try:
                        output = self._run_one(callback, step, model, device)
                    except Deferred as e:
                        log.info("%s at step %d deferred: %s", callback.name, step, e)
                        self.deferred.add((step, callback.name))
                        continue
                    merged.scalars.update(output.scalars)
                    merged.arrays.update(output.arrays)
            self.deferred.discard((step, callback.name))
            self._done.add((step, callback.name, callback.settings_hash))
        model.train(was_training)
        return merged

    def catch_up(self, before: int, available: set[int], load_model: Callable[[int], torch.nn.Module],
                 device: torch.device) -> None:
        """Measure what is still pending at saved steps (`available`) before `before`, for every callback
        that has measured a step at or after `before` (so it no longer defers: e.g. the LLC once it is
        calibrated; also what a killed run left undone), loading each step with `load_model(step)`."""
        ready = {c.name for c in self.callbacks
                 if any(s >= before and (s, c.name, c.settings_hash) in self._done for s in self._due[c.name])}
        waiting = sorted(s for s in available if s < before and any(c.name in ready for c in self.pending(s)))
        for step in waiting:
            self.run(step, load_model(step), device, only=ready)

    def finish(self, available: set[int], load_model: Callable[[int], torch.nn.Module], device: torch.device) -> None:
        """Measure everything still pending at saved steps (`available`), loading each with `load_model(step)`,
        round after round until no adaptive schedule adds a step (the end of a live run)."""
        tried: set[int] = set()
        while todo := [s for s in self.pending_steps() if s in available and s not in tried]:
            for step in todo:
                self.run(step, load_model(step), device)
                tried.add(step)

    def _run_one(self, callback: Callback, step: int, model: torch.nn.Module, device: torch.device) -> CallbackOutput:
        """Run and store one callback (or record its failure); returns its output (empty if it failed).
        `Deferred` propagates: nothing is stored and the step stays pending."""
        seed = derive_seed(self.data.seed, step, callback.name)
        ctx = CallbackContext(step, model, self.data.task, self.data.eval_tokens, self.data.train_tokens,
                              device, seed, self.data.run_dir, self.data.measured_initial_state(),
                              tuple(sorted(self._due[callback.name])), self.run_finished)
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
            for message in dict.fromkeys(str(warning.message) for warning in caught):  # each once per call
                log.warning("%s at step %d: %s", callback.name, step, message)
            self.store.write(step, callback.name, callback.settings_hash, output.scalars, output.arrays)
            return output
        except Deferred:
            raise
        except Exception as e:
            log.exception("callback %s failed at step %d", callback.name, step)
            self.store.write_failure(step, callback.name, callback.settings_hash, repr(e), traceback.format_exc())
            self.failed.append((step, callback.name))
            return CallbackOutput()
        finally:
            self.costs.record(callback.name, time.perf_counter() - started)
