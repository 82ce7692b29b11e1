"""`Monitor`: devinterp's checkpoints and callbacks inside someone else's training loop.

    monitor = Monitor("runs/mine", data=tokens, total_steps=1000)      # callbacks="study"
    for step in range(1000 + 1):
        monitor.step(step, model, loss=loss)     # the model after `step` optimizer updates
        ...                                      # the next update
    monitor.close()

At every step of the checkpoint schedule `step` saves the model into the run directory (the atomic
layout of `devinterp.store.checkpoints`) and runs the callbacks due there, live, on that checkpoint as
it loads (a transformers model: its eager-attention reload, exactly what post-hoc analysis measures; a
plain torch module: a copy). The schedule is the trainer's dense one, `checkpoint_schedule(total_steps,
log, linear)`; without `total_steps` it is log-spaced (`open_ended_schedule`, 20 per decade), and
`close` saves the last step seen as well. Measurements that wait (the LLC for its calibration's
reference checkpoint) run once it is measured, at the latest in `close`, which measures the last
checkpoint as post hoc over a finished run would. The run directory is a normal one
(`devinterp.monitor.run_files`): `devinterp-analyze`, `devinterp-report`, `devinterp-dashboard` and a
follower read it unchanged.

Conventions: step t is the model after t optimizer updates; call `step` with increasing steps (every
step, or at least every scheduled one: an unscheduled step costs a comparison). `loss` is the training
loss of that step's batch (nats), recorded as `train/loss` and in the checkpoint's metadata (the LLC's
live calibration waits for it to leave its initial plateau); without it the LLC is calibrated on the
last checkpoint. `loss_fn(model, (inputs, labels))` replaces the model's own
`model(inputs, labels=labels).loss` in every measurement (`devinterp.callbacks.custom_loss`).
Measuring never touches the model, its gradients or the caller's random state.
"""
from __future__ import annotations

import copy
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_model
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from devinterp.callbacks import (Callback, CallbackRunner, RunData, applicable, build_callbacks, callbacks_config,
                                 training_sample)
from devinterp.callbacks.custom_loss import LossFn, loss_fn_name
from devinterp.core.errors import ConfigError
from devinterp.core.logfile import RunLog
from devinterp.core.progress import BAR_FORMAT, measuring_label
from devinterp.monitor.run_files import (check_vocabulary, create_run_dir, model_description, split_sample,
                                         write_config)
from devinterp.store import checkpoints
from devinterp.store.metrics import MetricsWriter
from devinterp.store.results import ResultStore
from devinterp.store.run_dir import LOG_FILE, write_status
from devinterp.tasks import read_token_data
from devinterp.tasks.token_data import describe
from devinterp.training.schedule import CheckpointConfig, checkpoint_schedule, open_ended_schedule, run_schedule
from devinterp.training.trainer import Heartbeat

log = logging.getLogger(__name__)
# The open-ended schedule is planned this far ahead (its callbacks' due steps need a horizon).
OPEN_ENDED_HORIZON = 10**9

CallbacksSpec = str | Sequence | Mapping | None


def callbacks_from(spec: CallbacksSpec) -> tuple[list[Callback], dict]:
    """Callbacks and the config that rebuilds them (stored in config.yaml): from a preset or a list of names
    and overrides (`devinterp.callbacks.presets`), a config mapping, or Callback objects."""
    if isinstance(spec, Sequence) and not isinstance(spec, str) and spec and all(isinstance(c, Callback) for c in spec):
        return list(spec), {c.name: callback_config(c) for c in spec}
    config = callbacks_config(spec)
    return build_callbacks(config), config


def default_spacing(total_steps: int | None) -> CheckpointConfig:
    """The trainer's default schedule (60 log-spaced, 40 linearly spaced checkpoints), at most one per step."""
    default = CheckpointConfig()
    if total_steps is None:
        return default
    return CheckpointConfig(log=min(default.log, total_steps + 1), linear=min(default.linear, total_steps + 1))


def callback_config(callback: Callback) -> dict:
    """The config entry that builds `callback` again."""
    cls = type(callback)
    schedule = {**asdict(callback.schedule), "steps": list(callback.schedule.steps)}
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", "schedule": schedule, **asdict(callback.config)}


class Monitor:
    """See the module docstring. `data`: token ids, or anything `devinterp.tasks.read_token_data` reads
    (with `labels` and `seq_len` as there). `callbacks`: "study" (the default: loss, LLC, Hessian, induction,
    weights, gradients), "default", a list of names and overrides (`["study", "llc.num_draws=100"]`), a
    config mapping or Callback objects. `checkpoints`: the schedule's log/linear counts (the trainer's
    defaults). `run_dir` is created (`run_dir_1`, ... if it exists); `monitor.run_dir` says where.
    Bad arguments raise ConfigError (one line naming the argument or the file) before anything is written.
    Use it as a context manager to close it (a run that raises is marked failed)."""

    def __init__(self, run_dir: str | Path, data, total_steps: int | None = None, loss_fn: LossFn | None = None,
                 callbacks: CallbacksSpec = "study", *, labels=None, seq_len: int | None = None, seed: int = 0,
                 eval_size: int = 256, train_sample_size: int = 1024, checkpoints: CheckpointConfig | None = None,
                 device: str | torch.device | None = None, progress: bool = True, name: str = "monitor",
                 source: str = "monitor"):
        if total_steps is not None and (not isinstance(total_steps, int) or total_steps <= 0):
            raise ConfigError(f"total_steps={total_steps!r}: must be a positive number of steps, or None")
        for key, value in (("eval_size", eval_size), ("train_sample_size", train_sample_size)):
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{key}={value!r}: must be a positive integer")
        self.spacing = checkpoints or default_spacing(total_steps)
        try:
            self.spacing.validate(total_steps or OPEN_ENDED_HORIZON)
        except ValueError as e:
            raise ConfigError(f"checkpoints.{e}") from None
        self.callbacks, callbacks_cfg = callbacks_from(callbacks)
        if total_steps is None:
            for callback in self.callbacks:
                if callback.schedule.every:
                    raise ConfigError(f"callbacks.{callback.name}.schedule.every={callback.schedule.every}: needs "
                                      "total_steps (the run's length)")
        self.loss_fn = loss_fn
        try:
            loss_name = loss_fn_name(loss_fn)
        except ValueError as e:
            loss_name = None
            log.warning("%s: post-hoc analysis of this run will measure the model's own loss", e)
            print(f"devinterp: warning: {e}; post-hoc analysis of this run cannot use it", file=sys.stderr)
        self.data_name = describe(data)
        tokens = read_token_data(data, labels=labels, seq_len=seq_len)
        sample, eval_count = split_sample(tokens, eval_size, train_sample_size, seed, self.data_name)
        self.total_steps = total_steps
        self.schedule = (checkpoint_schedule(total_steps, self.spacing.log, self.spacing.linear) if total_steps
                         else open_ended_schedule(OPEN_ENDED_HORIZON))
        self.config = {"name": name, "source": source, "steps": total_steps or 0,
                       "checkpoints": {"log": self.spacing.log, "linear": self.spacing.linear, "steps": []},
                       "callbacks": callbacks_cfg, "loss_fn": loss_name, "model": None, "data": self.data_name}
        self.run_dir, self.task, self.config = create_run_dir(Path(run_dir), sample, eval_count, seed, self.config)
        self.scheduled = set(self.schedule)
        self.seed, self.device, self.progress = seed, device, progress
        self.writer = MetricsWriter(self.run_dir)
        self.runner: CallbackRunner | None = None
        self.heartbeat: Heartbeat | None = None
        self.bar: tqdm | None = None
        self.model: torch.nn.Module | None = None  # the model of the last `step` call (close saves it if due)
        self.last_step: int | None = None
        self.last_loss: float | None = None  # the latest training loss given (`step`, `record_loss`)
        self.saved: set[int] = set()
        self.skipped: list[str] = []
        self.closed = False
        self.started = time.perf_counter()
        self.run_log = RunLog(self.run_dir / LOG_FILE)
        write_status(self.run_dir, "training", None)

    # --- the loop ---------------------------------------------------------------------------------

    def step(self, step: int, model: torch.nn.Module, loss: float | None = None) -> dict[str, float]:
        """Record step `step` (the model after `step` updates; `loss`: that step's batch loss): save a
        checkpoint and run the callbacks due there. Returns the scalars measured ({} if none)."""
        if self.closed:
            raise RuntimeError(f"{self.run_dir}: the monitor is closed")
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"step={step}: steps must increase (the last one was {self.last_step})")
        if self.runner is None:
            self._start(step, model)
        self.model, self.last_step = model, step
        if loss is not None:
            self.record_loss(step, loss)
        if step in self.scheduled:
            self._save(step, model, self.last_loss)
        measured = self._measure(step, model) if self.runner.pending(step) else {}
        self.heartbeat.tick()
        return measured

    def record_loss(self, step: int, loss: float) -> None:
        """The training loss logged at `step`, for a framework that logs it every few steps (the Trainer):
        recorded as `train/loss` there, and the training loss of the checkpoints saved until the next."""
        self.last_loss = float(loss)
        self.writer.add(step, {"train/loss": self.last_loss})

    def close(self) -> None:
        """Finish the run: save the last step seen (if the schedule has not), measure what is still due
        there and what waited, mark the run finished."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.runner is not None:
                if self.last_step not in self.saved:
                    self._save(self.last_step, self.model, self.last_loss)
                self._finalize_config()
                self._finish_measuring()
                for callback in self.runner.callbacks:
                    callback.on_train_end()
            self.writer.flush()
            write_status(self.run_dir, "finished", self.last_step)
        finally:
            if self.bar is not None:
                self.bar.close()
            self.run_log.close()

    def fail(self) -> None:
        """Mark the run failed (the training loop raised); what is saved stays readable."""
        self.closed = True
        self.writer.flush()
        write_status(self.run_dir, "failed", self.last_step)
        self.run_log.close()

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.fail()

    # --- inside ---------------------------------------------------------------------------------

    def _start(self, step: int, model: torch.nn.Module) -> None:
        """At the first step: check the model against the data, say which callbacks cannot measure it,
        and set up the run's callback data (step-0 weights when the first step is 0)."""
        check_vocabulary(self.task.data, model, self.data_name)
        self.device = torch.device(self.device) if self.device is not None else next(model.parameters()).device
        self.config["model"] = model_description(model)
        write_config(self.run_dir, self.config)
        initial = {k: v.detach().clone() for k, v in model.state_dict().items()} if step == 0 else None
        data = RunData(self.task, self.task.eval_tokens(), training_sample(self.task, self.task.num_train), self.seed,
                       self.run_dir, initial, self.loss_fn)
        callbacks, self.skipped = applicable(self.callbacks, self._copy(model), data)
        for line in self.skipped:
            log.warning(line)
            print(f"devinterp: {line}", file=sys.stderr)
        known = self.total_steps is not None
        self.bar = tqdm(total=len(self.schedule) if known else None, desc="devinterp", unit="ckpt",
                        disable=not self.progress, dynamic_ncols=True, bar_format=BAR_FORMAT if known else None)
        self.runner = CallbackRunner(callbacks, data, ResultStore(self.run_dir), self.schedule,
                                     self.total_steps or OPEN_ENDED_HORIZON, announce=self._announce)
        self.heartbeat = Heartbeat(self.run_dir, step)
        for callback in callbacks:
            callback.on_train_start(model)

    def _save(self, step: int, model: torch.nn.Module, loss: float | None) -> None:
        self.writer.flush()
        checkpoints.save_checkpoint(self.run_dir, step, model, None, loss, time.perf_counter() - self.started)
        self.saved.add(step)
        self.heartbeat.beat(step)
        if self.bar is not None:
            self.bar.update(1)

    def _measure(self, step: int, model: torch.nn.Module) -> dict[str, float]:
        """The callbacks due at `step`, on that step's checkpoint (or a copy of the model where none is
        saved), then what waited for them."""
        measured = self.runner.run(step, self._load(step) if step in self.saved else self._copy(model), self.device)
        self.runner.catch_up(step, self.saved, self._load, self.device)
        self.writer.flush()
        if self.bar is not None:
            self.bar.set_description_str("devinterp", refresh=True)
        return measured.scalars

    def _finish_measuring(self) -> None:
        """What is still due over the saved checkpoints, as post hoc over a finished run: the last
        checkpoint (always due) and the measurements that waited for a reference checkpoint."""
        steps = sorted(self.saved)
        runner = CallbackRunner(self.runner.callbacks, self.runner.data, self.runner.store, steps, self.last_step,
                                run_finished=True, announce=self._announce)
        runner.finish(self.saved, self._load, self.device)
        if steps:
            runner.catch_up(steps[-1], self.saved, self._load, self.device)
        for name, seconds in runner.costs.totals.items():
            self.runner.costs.record(name, seconds, runner.costs.counts[name])

    def _finalize_config(self) -> None:
        """The run's length and its checkpoints as saved (the explicit list where the schedule's own
        formula would not give them: an open-ended or stopped run)."""
        config = self.config
        config["steps"] = self.last_step
        if set(run_schedule(config)) != self.saved:
            config["checkpoints"] = {"log": 0, "linear": 0, "steps": sorted(self.saved)}
        write_config(self.run_dir, config)

    def _copy(self, model: torch.nn.Module) -> torch.nn.Module:
        """A copy of the model to measure, in eager attention where it is a transformers model."""
        if isinstance(model, PreTrainedModel):
            copied = copy.deepcopy(model)
            if getattr(copied.config, "_attn_implementation", "eager") != "eager":
                copied.set_attn_implementation("eager")
            return copied.eval()
        return copy.deepcopy(model).eval()

    def _load(self, step: int) -> torch.nn.Module:
        """The model saved at `step`: reloaded (a transformers model) or the live module with its weights."""
        if isinstance(self.model, PreTrainedModel):
            return checkpoints.load(self.run_dir, step, self.device)
        model = copy.deepcopy(self.model)
        load_model(model, checkpoints.checkpoint_path(self.run_dir, step) / checkpoints.WEIGHTS_FILE,
                   device=str(self.device))
        return model.eval()

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds spent per callback so far."""
        return dict(self.runner.costs.totals) if self.runner is not None else {}

    def _announce(self, callback: str, step: int) -> None:
        if self.bar is not None:
            self.bar.set_description_str(measuring_label(callback, step))

