"""Post-hoc analysis: run callbacks over a finished (or running) run's saved checkpoints.

Incremental and resumable: results already stored for a (step, callback, settings) are skipped,
so a killed analysis continues where it stopped and re-running a finished one does nothing.
One job per checkpoint; each job loads its checkpoint and writes its own result files.
"""
from __future__ import annotations

import functools
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from tqdm.auto import tqdm

from devinterp import checkpoints
from devinterp.callbacks import Callback, CallbackRunner, RunData, training_sample
from devinterp.analysis.executors import ExecutorConfig, map_unordered
from devinterp.config import TASK_SCHEMAS, TaskConfig
from devinterp.store.results import ResultStore
from devinterp.store.run_dir import CONFIG_FILE, EVAL_TOKENS_FILE
from devinterp.store.atomic import atomic_write_json
from devinterp.tasks import build_task

log = logging.getLogger(__name__)
ANALYSIS_STATUS_FILE = "analysis_status.json"
@dataclass(frozen=True)
class CheckpointJob:
    """Callbacks to run at one checkpoint (planned by the driver: they are due and not stored)."""

    run_dir: Path
    step: int
    callbacks: tuple[Callback, ...]
    device: str
    checkpoint_steps: tuple[int, ...]
    total_steps: int


@dataclass
class AnalysisResult:
    run_dir: Path
    steps_analysed: list[int]
    seconds: float
    callback_seconds: dict[str, float] = field(default_factory=dict)
    failures: int = 0


def run_config(run_dir: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(Path(run_dir) / CONFIG_FILE), resolve=True)


@functools.lru_cache(maxsize=4)
def load_run_data(run_dir: Path) -> RunData:
    """The fixed inputs the run's live callbacks saw: same task, eval set, training sample, seed.
    Cached per process (every checkpoint job of a run needs the same); callers must not modify it."""
    config = run_config(run_dir)
    schema = TASK_SCHEMAS[config["task"]["name"]]
    task_cfg: TaskConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), config["task"]))
    task = build_task(task_cfg, seed=config["seed"])
    eval_tokens = load_file(Path(run_dir) / EVAL_TOKENS_FILE)["tokens"]
    train_tokens = training_sample(task, config.get("train_sample_size", 1024))
    return RunData(task, eval_tokens, train_tokens, config["seed"], Path(run_dir), checkpoints.initial_state(run_dir))


def make_runner(run_dir: Path, callbacks: list[Callback], data: RunData) -> CallbackRunner:
    steps = [info.step for info in checkpoints.list_checkpoints(run_dir)]
    total_steps = int(run_config(run_dir)["steps"])
    return CallbackRunner(list(callbacks), data, ResultStore(run_dir), steps, total_steps)


def analyze_checkpoint(job: CheckpointJob) -> tuple[int, dict[str, float]]:
    """Run a job's callbacks at its checkpoint; returns (step, seconds per callback)."""
    runner = CallbackRunner(list(job.callbacks), load_run_data(job.run_dir), ResultStore(job.run_dir),
                            list(job.checkpoint_steps), job.total_steps, completed=set())
    device = torch.device(job.device)
    runner.run(job.step, checkpoints.load(job.run_dir, job.step, device), device)
    return job.step, dict(runner.seconds)


def analyze(
    run_dir: Path,
    callbacks: list[Callback],
    executor: ExecutorConfig | None = None,
    device: str = "cpu",
    steps: list[int] | None = None,
    progress: bool = True,
) -> AnalysisResult:
    """Run `callbacks` at their due checkpoint steps (optionally only `steps`), skipping stored
    results. Post hoc only checkpoint steps can be analysed: a schedule's `every` and explicit
    steps count only where a checkpoint exists."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    runner = make_runner(run_dir, callbacks, load_run_data(run_dir))
    available = set(runner.checkpoint_steps)
    todo = [s for s in runner.pending_steps() if s in available and (steps is None or s in steps)]
    jobs = [CheckpointJob(run_dir, s, tuple(runner.pending(s)), device, tuple(runner.checkpoint_steps),
                          runner.total_steps) for s in todo]
    atomic_write_json(run_dir / ANALYSIS_STATUS_FILE, {"state": "analysing", "step": 0, "updated": time.time()})
    totals: dict[str, float] = defaultdict(float)
    failed_before = len(ResultStore(run_dir).failures())
    state = "failed"
    try:
        with tqdm(total=len(jobs), desc="analyse", unit="ckpt", disable=not progress, dynamic_ncols=True) as bar:
            for step, seconds in map_unordered(executor or ExecutorConfig(), analyze_checkpoint, jobs):
                for name, value in seconds.items():
                    totals[name] += value
                bar.update(1)
                atomic_write_json(run_dir / ANALYSIS_STATUS_FILE,
                                  {"state": "analysing", "step": step, "updated": time.time()})
        state = "finished"
    finally:
        atomic_write_json(run_dir / ANALYSIS_STATUS_FILE, {"state": state, "step": max(todo, default=0),
                                                           "updated": time.time()})
    failures = len(ResultStore(run_dir).failures()) - failed_before
    return AnalysisResult(run_dir, sorted(todo), time.perf_counter() - started, dict(totals), max(failures, 0))


def log_results(logger, run_dir: Path, steps: list[int], callbacks: list[Callback]) -> None:
    """Send stored results of `callbacks` at `steps` to a logger (e.g. the run's wandb run)."""
    from devinterp.store.metrics import read_metrics

    metrics = read_metrics(run_dir, latest_only=False)
    store = ResultStore(run_dir)
    for callback in callbacks:
        mine = metrics[(metrics["callback"] == callback.name) & (metrics["settings"] == callback.settings_hash)
                       & metrics["step"].isin(steps)]
        for step, rows in mine.groupby("step"):
            logger.log(int(step), dict(zip(rows["name"], rows["value"])))
            try:
                logger.log_arrays(int(step), store.load_arrays(callback.name, callback.settings_hash, int(step)))
            except FileNotFoundError:
                pass
