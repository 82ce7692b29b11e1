"""`DevinterpCallback`: the Hugging Face `Trainer` drives a `devinterp.Monitor`.

    from devinterp.integrations.hf import DevinterpCallback
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      callbacks=[DevinterpCallback(data=tokens, callbacks="study")])
    trainer.train()      # also writes <args.output_dir>/devinterp/, a devinterp run directory

The monitor starts at `on_train_begin` (total steps: the Trainer's `max_steps`; seed: `args.seed`;
run directory: `run_dir`, default `<output_dir>/devinterp`), records every optimizer step at
`on_step_end` (step t: the model after t updates, `state.global_step`), the training loss at the steps
the Trainer logs it (`train/loss`; a checkpoint's training loss is the last one logged), and closes at
`on_train_end`. Only the main process monitors.

What it measures also goes to the Trainer's own loggers, as `devinterp/<metric>` at the step it
describes: into `state.log_history` (the step's log entry), into the `logs` of every callback after this
one, and to wandb when the Trainer's wandb integration is on (logged on its `train/global_step` axis:
the Trainer's integrations run before the callbacks given to it, so this one reaches wandb itself). What
is measured after the step it describes (the LLC of checkpoints before its calibration, the last
measurements of `close`) is logged the same way at `on_train_end`. Needs `accelerate`
(`pip install 'devinterp[hf]'`), as the Trainer does.
"""
from __future__ import annotations

import sys
from pathlib import Path

from transformers import TrainerCallback

from devinterp.monitor import Monitor
from devinterp.store.metrics import read_metrics

PREFIX = "devinterp/"
RUN_DIRNAME = "devinterp"


class DevinterpCallback(TrainerCallback):
    """A `transformers.TrainerCallback` driving a `devinterp.Monitor` (module docstring). `data`,
    `callbacks`, `loss_fn` and `monitor_kwargs` (seq_len, eval_size, checkpoints, progress, ...) are the
    Monitor's; `run_dir` defaults to `<args.output_dir>/devinterp`. `monitor` is None until training starts."""

    def __init__(self, data, callbacks="study", run_dir: str | Path | None = None, loss_fn=None, **monitor_kwargs):
        self.data, self.callbacks, self.run_dir, self.loss_fn = data, callbacks, run_dir, loss_fn
        self.monitor_kwargs = {"progress": False, **monitor_kwargs}
        self.monitor: Monitor | None = None
        self.pending: dict[int, dict[str, float]] = {}  # step -> metrics not yet logged
        self.logged: set[tuple[int, str]] = set()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        run_dir = self.run_dir if self.run_dir is not None else Path(args.output_dir) / RUN_DIRNAME
        self.monitor = Monitor(run_dir, self.data, total_steps=state.max_steps or None, loss_fn=self.loss_fn,
                               callbacks=self.callbacks, seed=args.seed, source="hf_trainer",
                               name=args.run_name or "hf_trainer", **self.monitor_kwargs)
        self._record(state.global_step, self.monitor.step(state.global_step, model), control)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.monitor is not None:
            self._record(state.global_step, self.monitor.step(state.global_step, model), control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.monitor is None or logs is None:
            return
        if "loss" in logs:
            self.monitor.record_loss(state.global_step, logs["loss"])
        for step, metrics in sorted(self.pending.items()):
            entry = state.log_history[-1] if state.log_history else None
            if step == state.global_step:
                logs.update(metrics)
            if step == state.global_step and entry is not None and entry.get("step") == step:
                entry.update(metrics)
            else:
                state.log_history.append({**metrics, "step": step})
            _to_wandb(args, metrics, step)
        self.pending = {}

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is None:
            return
        self.monitor.close()
        self._log_the_rest(args, state)

    def _record(self, step: int, measured: dict[str, float], control) -> None:
        """Scalars measured at `step`, for the log the Trainer writes next (it is asked to write one)."""
        if measured:
            self.pending.setdefault(step, {}).update({PREFIX + name: value for name, value in measured.items()})
            self.logged.update((step, name) for name in measured)
            control.should_log = True

    def _log_the_rest(self, args, state) -> None:
        """What was stored after the step it describes, as one log entry per step."""
        metrics = read_metrics(self.monitor.run_dir)
        metrics = metrics[metrics["callback"] != "train"]
        for step, rows in metrics.groupby("step"):
            late = {PREFIX + name: float(value) for name, value in zip(rows["name"], rows["value"])
                    if (int(step), name) not in self.logged}
            if late:
                state.log_history.append({**late, "step": int(step)})
                _to_wandb(args, late, int(step))
                self.logged.update((int(step), name.removeprefix(PREFIX)) for name in late)


def _to_wandb(args, metrics: dict[str, float], step: int) -> None:
    """`metrics` at `step` to the Trainer's wandb run, when its wandb integration made one."""
    wandb = sys.modules.get("wandb")  # imported by the Trainer's integration when it is on; never here
    if wandb is None or "wandb" not in (args.report_to or []) or getattr(wandb, "run", None) is None:
        return
    wandb.log({**metrics, "train/global_step": step})
