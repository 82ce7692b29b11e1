"""The training loop: nanoGPT-style, with dense checkpoints and exact resume.

Conventions: "step t" is the model after t optimizer updates. Checkpoints and eval metrics at
step t describe that model; `train/loss` at step t is the loss of step t's training batch
measured on that model (just before update t+1). Training batches are a pure function of
(seed, step), and optimizer, scheduler and RNG states are checkpointed, so a run resumed from
its last checkpoint ends with exactly the weights of an uninterrupted run.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from devinterp import checkpoints
from devinterp.callbacks import Callback, CallbackRunner, RunData, training_sample
from devinterp.config import Device, TrainConfig
from devinterp.loggers import MetricLogger
from devinterp.models import build_model, count_parameters
from devinterp.store.metrics import MetricsWriter
from devinterp.store.run_dir import EVAL_TOKENS_FILE, write_status
from devinterp.tasks import Task, build_task
from devinterp.store.results import ResultStore
from devinterp.training.optim import build_optimizer, build_scheduler
from devinterp.training.schedule import checkpoint_schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float  # wall time of this invocation (a resumed run counts only its own part)
    steps_trained: int  # optimizer steps done in this invocation
    num_parameters: int
    train_seconds: float  # of `seconds`: forward, backward, optimizer steps
    callback_seconds: dict[str, float]  # of `seconds`: per callback


def resolve_device(device: Device) -> torch.device:
    if device == Device.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device.value)


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


def train(cfg: TrainConfig, run_dir: Path, logger: MetricLogger, callbacks: list[Callback]) -> TrainResult:
    """Train according to `cfg`, writing checkpoints and metrics into `run_dir` and running
    `callbacks` at their steps (before the checkpoint of that step is written).

    With `cfg.resume`, continues from the last complete checkpoint in `run_dir`; callback
    results already stored are not recomputed.
    """
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    task = build_task(cfg.task, seed=cfg.seed)
    schedule = checkpoint_schedule(cfg.steps, cfg.checkpoints.log, cfg.checkpoints.linear)
    eval_tokens = load_or_create_eval_tokens(run_dir, task)
    torch.manual_seed(cfg.seed)  # only dropout-like randomness uses it; checkpointed for resume

    start_step, wall_offset = 0, 0.0
    resume_step = checkpoints.latest_step(run_dir) if cfg.resume else None
    if resume_step is not None:
        model = checkpoints.load(run_dir, resume_step, device).train()
        state = checkpoints.load_trainer_state(run_dir, resume_step)
        start_step, wall_offset = resume_step, state["wall_time"]
        log.info("resuming %s from step %d", run_dir, start_step)
    else:
        model = build_model(cfg.model, task.vocab_size, task.seq_len, seed=cfg.seed).to(device)
    optimizer = build_optimizer(cfg.optim, model)
    scheduler = build_scheduler(cfg.optim, optimizer, cfg.steps)
    if resume_step is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_states(state["rng"])
    log.info("model: %s with %d parameters on %s", type(model).__name__, count_parameters(model), device)
    if resume_step is None:
        initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        initial_state = checkpoints.initial_state(run_dir)
    data = RunData(task, eval_tokens, training_sample(task, cfg.train_sample_size), cfg.seed, run_dir, initial_state)
    runner = CallbackRunner(callbacks, data, ResultStore(run_dir), schedule, cfg.steps)
    for callback in callbacks:
        callback.on_train_start(model)
    train_seconds = 0.0

    writer = MetricsWriter(run_dir)
    checkpoint_steps = set(schedule)
    last_loss = None
    bar = tqdm(range(start_step, cfg.steps + 1), initial=start_step, total=cfg.steps + 1,
               desc="train", unit="step", disable=not cfg.progress, dynamic_ncols=True)
    for step in bar:
        if runner.pending(step):
            measured = runner.run(step, model, device)
            logger.log(step, measured.scalars)
            logger.log_arrays(step, measured.arrays)
        if step in checkpoint_steps and step != resume_step:
            writer.flush()
            wall = wall_offset + time.perf_counter() - started
            trainer_state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_states(),
                "wall_time": wall,
                "step": step,
            }
            checkpoints.save_checkpoint(run_dir, step, model, trainer_state, last_loss, wall)
            write_status(run_dir, "training", step)
        if step == cfg.steps:
            break

        step_started = time.perf_counter()
        model.train()
        tokens = task.train_batch(step, cfg.batch_size).to(device)
        loss = model(tokens, labels=task.labels(tokens)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()

        last_loss = loss.item()
        for callback in callbacks:
            callback.on_step(step, last_loss)
        train_seconds += time.perf_counter() - step_started
        if step % cfg.log_every == 0:
            train_metrics = {"train/loss": last_loss, "train/lr": optimizer.param_groups[0]["lr"]}
            writer.add(step, train_metrics)
            logger.log(step, train_metrics)
            bar.set_postfix(loss=f"{last_loss:.3f}", refresh=False)

    writer.flush()
    for callback in callbacks:
        callback.on_train_end()
    write_status(run_dir, "finished", cfg.steps)
    seconds = time.perf_counter() - started
    return TrainResult(run_dir, cfg.steps, seconds, cfg.steps - start_step, count_parameters(model),
                       train_seconds, dict(runner.seconds))
