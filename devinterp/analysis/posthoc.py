"""Post-hoc analysis: run callbacks over a finished (or running) run's saved checkpoints.

Incremental and resumable: results already stored for a (step, callback, settings) are skipped,
so a killed analysis continues where it stopped and re-running a finished one does nothing.
One job per checkpoint; each job loads its checkpoint and writes its own result files.

Robust: a checkpoint that cannot be loaded is recorded as a failure of each of its callbacks
(under `failures/`, naming the damaged file) and the other checkpoints are measured. Several
analyses of one run may work at once: each result is claimed before it is computed (see
`ResultStore.claim`); results another analysis is computing are waited for at the end, and
computed here if that analysis died, so every analysis ends with all it asked for stored once.
Only complete checkpoints are seen, so an analysis can run beside training and be re-run to
catch up.
"""
from __future__ import annotations

import functools
import logging
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from devinterp.analysis.executors import ExecutorConfig, ExecutorName, map_unordered, parallel_workers
from devinterp.analysis.progress import AnalysisProgress
from devinterp.callbacks import Callback, CallbackRunner, RunData, applicable, training_sample
from devinterp.callbacks.custom_loss import import_loss_fn
from devinterp.core.errors import ConfigError
from devinterp.core.progress import BAR_FORMAT
from devinterp.store import checkpoints
from devinterp.store.metrics import read_metrics
from devinterp.store.results import ResultStore
from devinterp.store.run_dir import (ANALYSIS_STATUS_FILE, EVAL_TOKENS_FILE, RUN_CONFIG_FILE, read_run_config,
                                     read_status, write_status)
from devinterp.store.unreadable import UnreadableFileError, error_line, warn_unreadable
from devinterp.tasks import build_task, task_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointJob:
    """Callbacks to run at one checkpoint (planned by the driver: they are due and not stored)."""

    run_dir: Path
    step: int
    callbacks: tuple[Callback, ...]
    device: str
    checkpoint_steps: tuple[int, ...]
    total_steps: int
    run_finished: bool = True
    wait_for_claims: bool = False  # wait for results another analysis is computing (the last pass)


@dataclass(frozen=True)
class JobResult:
    """What one job did: seconds per callback, the callbacks that failed, those another process
    was computing (`busy`, not run), those that deferred their measurement (`deferred`: the LLC
    before its calibration's reference checkpoint) and, if the checkpoint could not be loaded, why."""

    step: int
    seconds: dict[str, float]
    failed: tuple[str, ...] = ()
    busy: tuple[str, ...] = ()
    deferred: tuple[str, ...] = ()
    unreadable: str | None = None


@dataclass
class AnalysisResult:
    run_dir: Path
    steps_analysed: list[int]
    seconds: float
    callback_seconds: dict[str, float] = field(default_factory=dict)
    failures: int = 0  # callback runs of this analysis that failed (recorded under failures/)
    unreadable: dict[int, str] = field(default_factory=dict)  # step -> why its checkpoint did not load
    skipped: list[str] = field(default_factory=list)  # "<callback>: skipped, <why>": cannot measure this model


def check_run_config(run_dir: Path) -> dict:
    """The run's config.yaml, checked for what analysing it needs (a seed, a step count, a task that
    builds, a loss function that imports); ConfigError naming the file and what is wrong."""
    path = Path(run_dir) / RUN_CONFIG_FILE
    try:
        config = read_run_config(run_dir)
    except UnreadableFileError as e:
        raise ConfigError(str(e)) from None
    for key in ("seed", "steps"):
        if not isinstance(config.get(key), int) or isinstance(config.get(key), bool):
            raise ConfigError(f"{path}: '{key}' is {'missing' if key not in config else repr(config[key])}, "
                              "not a whole number")
    if not isinstance(config.get("task"), dict) or "name" not in config["task"]:
        raise ConfigError(f"{path}: no 'task' mapping with a 'name'")
    try:
        task_config(config["task"])
    except Exception as e:  # an unknown task name, a key or a type its schema rejects
        raise ConfigError(f"{path}: task: {error_line(e)}") from None
    try:
        run_loss_fn(config)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config


def run_loss_fn(config: dict):
    """The loss function the run measured with (config `loss_fn`), or None: the model's own loss."""
    name = config.get("loss_fn")
    return None if name is None else import_loss_fn(str(name))


@functools.lru_cache(maxsize=4)
def load_run_data(run_dir: Path) -> RunData:
    """The fixed inputs the run's live callbacks saw: same task, eval set, training sample, seed, loss.
    Cached per process (every checkpoint job of a run needs the same); callers must not modify it."""
    config = read_run_config(run_dir)
    task = build_task(task_config(config["task"]).in_run(run_dir), seed=config["seed"])
    eval_tokens = load_file(Path(run_dir) / EVAL_TOKENS_FILE)["tokens"]
    train_tokens = training_sample(task, config.get("train_sample_size", 1024))
    return RunData(task, eval_tokens, train_tokens, config["seed"], Path(run_dir), checkpoints.initial_state(run_dir),
                   run_loss_fn(config))


def make_runner(run_dir: Path, callbacks: list[Callback], data: RunData) -> CallbackRunner:
    steps = [info.step for info in checkpoints.list_checkpoints(run_dir)]
    total_steps = int(read_run_config(run_dir)["steps"])
    return CallbackRunner(list(callbacks), data, ResultStore(run_dir), steps, total_steps,
                          run_finished=run_is_finished(run_dir))


def run_is_finished(run_dir: Path) -> bool:
    """Whether training has finished (`status.json` says so; a run without one, or with an unreadable
    one, counts as finished: post hoc, its saved checkpoints are all there is)."""
    try:
        return read_status(run_dir).state == "finished"
    except FileNotFoundError:
        return True
    except UnreadableFileError as e:
        warn_unreadable(e, "the run counts as finished")
        return True


def analyze_checkpoint(job: CheckpointJob, announce=None) -> JobResult:
    """Run a job's callbacks at its checkpoint. `announce(callback, step)` is called before each
    callback (in-process executors only)."""
    device = torch.device(job.device)
    try:
        model = checkpoints.load(job.run_dir, job.step, device)
    except checkpoints.CheckpointError as e:
        return record_unreadable_checkpoint(job, e)
    runner = CallbackRunner(list(job.callbacks), load_run_data(job.run_dir), ResultStore(job.run_dir),
                            list(job.checkpoint_steps), job.total_steps, completed=set(),
                            run_finished=job.run_finished, wait_for_claims=job.wait_for_claims, announce=announce)
    runner.run(job.step, model, device)
    return JobResult(job.step, dict(runner.seconds), tuple(name for _, name in runner.failed),
                     tuple(name for _, name in runner.busy), tuple(sorted(name for _, name in runner.deferred)))


def record_unreadable_checkpoint(job: CheckpointJob, error: checkpoints.CheckpointError) -> JobResult:
    """A failure of each of the job's callbacks, naming the damaged file (which is left as it is)."""
    store = ResultStore(job.run_dir)
    for callback in job.callbacks:
        store.write_failure(job.step, callback.name, callback.settings_hash, str(error), "", file=str(error.path))
    return JobResult(job.step, {}, failed=tuple(c.name for c in job.callbacks), unreadable=str(error))


def plan_jobs(runner: CallbackRunner, run_dir: Path, device: str, steps: list[int] | None) -> list[CheckpointJob]:
    """One job per checkpoint with callbacks due and not stored (optionally only at `steps`)."""
    available = set(runner.checkpoint_steps)
    todo = [s for s in runner.pending_steps() if s in available and (steps is None or s in steps)]
    return [CheckpointJob(run_dir, s, tuple(runner.pending(s)), device, tuple(runner.checkpoint_steps),
                          runner.total_steps, runner.run_finished) for s in todo]


def deferred_jobs(jobs: list[CheckpointJob], results: list[JobResult]) -> list[CheckpointJob]:
    """The second pass: the callbacks that deferred at their step in the first (which has measured
    the reference checkpoint they waited for)."""
    deferred = {r.step: set(r.deferred) for r in results if r.deferred}
    return sorted((replace(job, callbacks=tuple(c for c in job.callbacks if c.name in deferred[job.step]))
                   for job in jobs if job.step in deferred), key=lambda job: job.step)


def waiting_jobs(jobs: list[CheckpointJob], results: list[JobResult]) -> list[CheckpointJob]:
    """The last pass: jobs for the results that another process was computing, which wait for
    it (and compute the result if it did not store it)."""
    busy = defaultdict(set)
    for result in results:
        if result.busy:  # only these steps: a job without callbacks would still load its checkpoint
            busy[result.step].update(result.busy)
    return [replace(job, callbacks=tuple(c for c in job.callbacks if c.name in busy[job.step]), wait_for_claims=True)
            for job in jobs if job.step in busy]


def run_jobs(run_dir: Path, jobs: list[CheckpointJob], executor: ExecutorConfig, progress: bool,
             desc: str = "analyse") -> list[JobResult]:
    results = []
    with tqdm(total=len(jobs), desc=desc, unit="ckpt", disable=not progress or not jobs, dynamic_ncols=True,
              bar_format=BAR_FORMAT) as bar:
        tracker = AnalysisProgress(bar, jobs, parallel_workers(executor, len(jobs)))
        fn = functools.partial(analyze_checkpoint, announce=tracker.measuring) \
            if executor.name == ExecutorName.local else analyze_checkpoint
        for result in map_unordered(executor, fn, jobs):
            results.append(result)
            if result.unreadable:
                bar.write(f"warning: skipped checkpoint step {result.step}: {result.unreadable}", file=sys.stderr)
            tracker.done(result.step, result.seconds)
            write_analysis_status(run_dir, "analysing", result.step)
    return results


def write_analysis_status(run_dir: Path, state: str, step: int) -> None:
    write_status(run_dir, state, step, name=ANALYSIS_STATUS_FILE)


def summarize(run_dir: Path, jobs: list[CheckpointJob], results: list[JobResult], seconds: float) -> AnalysisResult:
    totals: dict[str, float] = defaultdict(float)
    for result in results:
        for name, value in result.seconds.items():
            totals[name] += value
    failures = sum(len(r.failed) for r in results)  # the passes run disjoint (step, callback) pairs
    unreadable = {r.step: r.unreadable for r in results if r.unreadable}
    return AnalysisResult(run_dir, sorted({job.step for job in jobs}), seconds, dict(totals), failures, unreadable)


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
    executor = executor or ExecutorConfig()
    started = time.perf_counter()
    data = load_run_data(run_dir)
    runner = make_runner(run_dir, callbacks, data)
    jobs = plan_jobs(runner, run_dir, device, steps)
    callbacks, skipped = applicable_to_run(run_dir, callbacks, data, device, [job.step for job in jobs])
    if skipped:
        runner = make_runner(run_dir, callbacks, data)
        jobs = plan_jobs(runner, run_dir, device, steps)
    write_analysis_status(run_dir, "analysing", 0)
    state, planned, results = "failed", [], []
    try:
        round_number = 0
        while jobs:
            desc = "analyse" if round_number == 0 else f"refine {round_number}"
            planned += jobs
            results += run_jobs(run_dir, jobs, executor, progress, desc=desc)
            results += run_jobs(run_dir, deferred_jobs(jobs, results), executor, progress, desc="after calibration")
            results += run_jobs(run_dir, waiting_jobs(jobs, results), executor, progress, desc="wait for others")
            # An adaptive schedule's next round, now that this one is stored (nothing is tried twice).
            jobs = untried(plan_jobs(make_runner(run_dir, callbacks, data), run_dir, device, steps), planned)
            round_number += 1
        state = "finished"
    finally:
        write_analysis_status(run_dir, state, max((job.step for job in planned), default=0))
        ResultStore(run_dir).remove_stale_locks()
    return replace(summarize(run_dir, planned, results, time.perf_counter() - started), skipped=skipped)


def untried(jobs: list[CheckpointJob], planned: list[CheckpointJob]) -> list[CheckpointJob]:
    """`jobs` without the (step, callback) pairs of `planned` (a failure stays a failure until the next analysis)."""
    tried = {(job.step, c.name) for job in planned for c in job.callbacks}
    kept = [replace(job, callbacks=tuple(c for c in job.callbacks if (job.step, c.name) not in tried)) for job in jobs]
    return [job for job in kept if job.callbacks]


def applicable_to_run(run_dir: Path, callbacks: list[Callback], data: RunData, device: str,
                      steps: list[int]) -> tuple[list[Callback], list[str]]:
    """The callbacks that can measure the run's model (asked of the newest of `steps` that loads), and
    one line for each that cannot (see `Callback.unsupported`). Nothing to measure: all of them."""
    for step in sorted(steps, reverse=True):
        try:
            model = checkpoints.load(run_dir, step, device)
        except checkpoints.CheckpointError:
            continue
        return applicable(callbacks, model, data)
    return list(callbacks), []


def log_results(logger, run_dir: Path, steps: list[int], callbacks: list[Callback]) -> None:
    """Send stored results of `callbacks` at `steps` to a logger (e.g. the run's wandb run)."""
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
            except UnreadableFileError as e:
                warn_unreadable(e, "its arrays are not logged")
