"""The training loop: nanoGPT-style, with dense checkpoints and exact resume.

Conventions: "step t" is the model after t optimizer updates. Checkpoints and eval metrics at
step t describe that model; `train/loss` at step t is the loss of step t's training batch
measured on that model (just before update t+1). Training batches are a pure function of
(seed, step), and optimizer, scheduler and RNG states are checkpointed, so a run resumed from
its last checkpoint ends with exactly the weights of an uninterrupted run.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from devinterp.callbacks import Callback, CallbackRunner, RunData, training_sample
from devinterp.core.devices import resolve_device
from devinterp.core.progress import BAR_FORMAT, format_time_left, measuring_label
from devinterp.models import build_model, count_parameters
from devinterp.store import checkpoints
from devinterp.store.metrics import MetricsWriter
from devinterp.store.results import ResultStore
from devinterp.store.run_dir import EVAL_TOKENS_FILE, write_status
from devinterp.tasks import Task, build_task
from devinterp.training.config import TrainConfig
from devinterp.training.loggers import MetricLogger
from devinterp.training.optim import build_optimizer, build_scheduler
from devinterp.training.schedule import checkpoint_schedule

log = logging.getLogger(__name__)
# status.json is refreshed at every checkpoint and at least this often in between, so that readers (the
# dashboard, a follower) can tell a long stretch between checkpoints from a dead trainer.
HEARTBEAT_SECONDS = 30.0


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float  # wall time of this invocation (a resumed run counts only its own part)
    steps_trained: int  # optimizer steps done in this invocation
    num_parameters: int
    train_seconds: float  # of `seconds`: forward, backward, optimizer steps
    callback_seconds: dict[str, float]  # of `seconds`: per callback (analyze=follow: the follower's)
    follower_lag_seconds: float | None = None  # analyze=follow: end of training -> follower done


def load_or_create_eval_tokens(run_dir: Path, task: Task) -> torch.Tensor:
    """The run's fixed eval set, stored in the run directory at the first start."""
    path = run_dir / EVAL_TOKENS_FILE
    if path.exists():
        return load_file(path)["tokens"]
    tokens = task.eval_tokens()
    save_file({"tokens": tokens.contiguous()}, path)
    return tokens


def rng_states() -> dict:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def resume_point(run_dir: Path, device: torch.device) -> checkpoints.Resumable | None:
    """The checkpoint to resume from (see `checkpoints.load_latest`); says which it skipped."""
    resumed, skipped = checkpoints.load_latest(run_dir, device)
    for error in skipped:
        message = f"resume: skipping checkpoint step {error.step}: {error}"
        log.warning(message)
        print(f"warning: {message}", file=sys.stderr)
    return resumed


class TrainingProgress:
    """The training bar's text: "train" or what is being measured ("llc @ step 290"), the last loss,
    training steps/s (training only) and the time left, counting the callbacks still due at their
    measured cost (see devinterp.core.progress)."""

    def __init__(self, bar: tqdm):
        self.bar = bar

    def measuring(self, callback: str, step: int) -> None:
        self.bar.set_description_str(measuring_label(callback, step))

    def training(self) -> None:
        self.bar.set_description_str("train", refresh=False)

    def update(self, loss: float, seconds_per_step: float, steps_left: int,
               callbacks_left: tuple[float, bool]) -> None:
        callback_seconds, known = callbacks_left
        rate = 1.0 / seconds_per_step if seconds_per_step > 0 else float("inf")
        left = format_time_left(steps_left * seconds_per_step + callback_seconds, known)
        self.bar.set_postfix_str(f"loss={loss:.3f}, {rate:.1f} steps/s, {left}", refresh=False)


@dataclass
class TrainingState:
    """What training carries from step to step; a checkpoint saves it for an exact resume."""

    model: PreTrainedModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    start_step: int  # 0, or the step of the checkpoint resumed from
    resumed: bool
    wall_offset: float  # seconds of the run's earlier segments (resumed runs)


def start_training(cfg: TrainConfig, run_dir: Path, task: Task, device: torch.device) -> TrainingState:
    """A freshly initialised model with its optimizer and LR schedule, or (`cfg.resume`) those of the
    last checkpoint that loads completely, with the RNG states saved there."""
    resumed = resume_point(run_dir, device) if cfg.resume else None
    if resumed is not None:
        model = resumed.model.train()
        log.info("resuming %s from step %d", run_dir, resumed.step)
    else:
        model = build_model(cfg.model, task.vocab_size, task.seq_len, seed=cfg.seed).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.optim, optimizer, cfg.steps)
    if resumed is None:
        return TrainingState(model, optimizer, scheduler, start_step=0, resumed=False, wall_offset=0.0)
    saved = resumed.trainer_state
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_states(saved["rng"])
    return TrainingState(model, optimizer, scheduler, resumed.step, resumed=True, wall_offset=saved["wall_time"])


def train_step(cfg: TrainConfig, task: Task, state: TrainingState, step: int, device: torch.device) -> float:
    """Update `state.model` on step `step`'s training batch (update step+1); returns that batch's loss."""
    state.model.train()
    tokens = task.train_batch(step, cfg.batch_size).to(device)
    loss = state.model(tokens, labels=task.labels(tokens)).loss
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.optim.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.optim.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    return loss.item()


def save_training_checkpoint(run_dir: Path, step: int, state: TrainingState, train_loss: float | None,
                             wall_time: float) -> None:
    """Checkpoint `step`: the model and what an exact resume needs (optimizer, schedule, RNG states)."""
    trainer_state = {
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "rng": rng_states(),
        "wall_time": wall_time,
        "step": step,
    }
    checkpoints.save_checkpoint(run_dir, step, state.model, trainer_state, train_loss, wall_time)


class Heartbeat:
    """The trainer's status.json: "training" with the last checkpoint's step, written at every
    checkpoint and at least every HEARTBEAT_SECONDS in between."""

    def __init__(self, run_dir: Path, step: int):
        self.run_dir = run_dir
        self.beat(step)  # also replaces a resumed run's "failed"

    def beat(self, step: int) -> None:
        write_status(self.run_dir, "training", step)
        self.step, self.last = step, time.time()

    def tick(self) -> None:
        if time.time() - self.last >= HEARTBEAT_SECONDS:
            self.beat(self.step)


def train(cfg: TrainConfig, run_dir: Path, logger: MetricLogger, callbacks: list[Callback]) -> TrainResult:
    """Train according to `cfg`, writing checkpoints and metrics into `run_dir` and running
    `callbacks` at their steps (before the checkpoint of that step is written).

    With `cfg.resume`, continues from the last checkpoint in `run_dir` that loads completely
    (newer, damaged ones are named on stderr and in the log; when training passes their step
    again it writes them anew and keeps the damaged directory aside, see `save_checkpoint`);
    callback results already stored are not recomputed.
    """
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    task = build_task(cfg.task, seed=cfg.seed)
    schedule = checkpoint_schedule(cfg.steps, cfg.checkpoints.log, cfg.checkpoints.linear)
    eval_tokens = load_or_create_eval_tokens(run_dir, task)
    torch.manual_seed(cfg.seed)  # only dropout-like randomness uses it; checkpointed for resume
    state = start_training(cfg, run_dir, task, device)
    log.info("model: %s with %d parameters on %s", type(state.model).__name__, count_parameters(state.model), device)
    initial_state = (checkpoints.initial_state(run_dir) if state.resumed
                     else {k: v.detach().clone() for k, v in state.model.state_dict().items()})
    data = RunData(task, eval_tokens, training_sample(task, cfg.train_sample_size), cfg.seed, run_dir, initial_state)
    bar = tqdm(range(state.start_step, cfg.steps + 1), initial=state.start_step, total=cfg.steps + 1, desc="train",
               unit="step", disable=not cfg.progress, dynamic_ncols=True, bar_format=BAR_FORMAT)
    progress = TrainingProgress(bar)
    runner = CallbackRunner(callbacks, data, ResultStore(run_dir), schedule, cfg.steps, announce=progress.measuring)
    for callback in callbacks:
        callback.on_train_start(state.model)
    train_seconds = run_steps(cfg, run_dir, task, state, runner, logger, progress, set(schedule), device, started)
    for callback in callbacks:
        callback.on_train_end()
    write_status(run_dir, "finished", cfg.steps)
    return TrainResult(run_dir, cfg.steps, time.perf_counter() - started, cfg.steps - state.start_step,
                       count_parameters(state.model), train_seconds, runner.seconds)


def run_steps(cfg: TrainConfig, run_dir: Path, task: Task, state: TrainingState, runner: CallbackRunner,
              logger: MetricLogger, progress: TrainingProgress, checkpoint_steps: set[int], device: torch.device,
              started: float) -> float:
    """The loop over the progress bar's steps: at each, the callbacks and the checkpoint due (of the
    model after `step` updates), then update step+1. Returns the seconds spent training (callbacks
    excluded); `started` is when this invocation started (perf_counter), for the checkpoints' wall time."""
    writer = MetricsWriter(run_dir)
    saved_steps = {info.step for info in checkpoints.list_checkpoints(run_dir)}
    heartbeat = Heartbeat(run_dir, state.start_step)
    last_loss, train_seconds = None, 0.0
    for step in progress.bar:
        if runner.pending(step):
            measured = runner.run(step, state.model, device)
            logger.log(step, measured.scalars)
            logger.log_arrays(step, measured.arrays)
            # Measurements deferred at earlier checkpoints (the LLC until calibrated) run from disk.
            runner.catch_up(step, saved_steps, lambda s: checkpoints.load(run_dir, s, device), device)
            progress.training()
        if step in checkpoint_steps and not (state.resumed and step == state.start_step):
            writer.flush()
            save_training_checkpoint(run_dir, step, state, last_loss, state.wall_offset + time.perf_counter() - started)
            saved_steps.add(step)
            heartbeat.beat(step)
        if step == cfg.steps:
            break
        step_started = time.perf_counter()
        last_loss = train_step(cfg, task, state, step, device)
        for callback in runner.callbacks:
            callback.on_step(step, last_loss)
        train_seconds += time.perf_counter() - step_started
        heartbeat.tick()
        if step % cfg.log_every == 0:
            train_metrics = {"train/loss": last_loss, "train/lr": state.optimizer.param_groups[0]["lr"]}
            writer.add(step, train_metrics)
            logger.log(step, train_metrics)
            progress.update(last_loss, train_seconds / (step + 1 - state.start_step), cfg.steps - step - 1,
                            runner.costs.estimate(runner.remaining_calls(step)))
    # Adaptive schedules' refinement rounds: each needs the round before it measured, so they run now.
    runner.finish(saved_steps, lambda s: checkpoints.load(run_dir, s, device), device)
    writer.flush()
    return train_seconds
