"""Following a training run: measure each checkpoint as it lands, beside the trainer, never in its way.

    devinterp-analyze run_dir=runs/induction/<run> follow=true callbacks=study
    devinterp-train analyze=follow callbacks=study      # the trainer starts this follower itself

The follower polls the run directory. It measures complete checkpoints only (a checkpoint directory
exists only once it is complete, see devinterp.store.checkpoints), oldest first, so it keeps up whenever the
callbacks cost less than the training between checkpoints and catches up afterwards otherwise. Due
steps come from the run's own checkpoint schedule (its config), exactly as in a live run, and results
already stored are skipped: a killed follower resumes, two followers never redo each other's work.

It stops when
- the training status is "finished" and every due checkpoint is measured (exit code 0), or some
  due checkpoint is missing (exit code 1);
- the training status is "failed": it measures the complete checkpoints there are, then stops
  (exit code 1; resume the run and follow again for the rest);
- no sign of life from the trainer for `stale_after` seconds (its status "training" not refreshed,
  or no status at all since the follower started): the trainer is presumed dead (exit code 1).
While it runs, `analysis_status.json` says "analysing" and is refreshed at every poll, so the dashboard
shows the run as analysing (and as stale if the follower itself dies). At the end it holds the outcome,
the seconds per callback and the lag: seconds from the end of training to the last result stored.
"""
from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from devinterp.analysis.posthoc import load_run_data
from devinterp.callbacks import Callback, CallbackRunner, build_callbacks
from devinterp.core.logfile import log_to_file
from devinterp.core.progress import BAR_FORMAT, format_time_left, measuring_label
from devinterp.store import checkpoints
from devinterp.store.results import ResultStore
from devinterp.store.run_dir import (ANALYSIS_STATUS_FILE, FOLLOW_LOG_FILE, STATUS_FILE, Status, read_run_config,
                                     read_status, write_status)
from devinterp.store.unreadable import UnreadableFileError
from devinterp.training.schedule import run_schedule

log = logging.getLogger(__name__)

# Outcomes. INTERRUPTED: the follower itself was stopped (an exception, Ctrl-C).
FINISHED, MISSING, TRAINING_FAILED, TRAINER_SILENT, INTERRUPTED = (
    "finished", "checkpoints missing", "training failed", "trainer silent", "interrupted")
DEFAULT_POLL_SECONDS = 2.0
DEFAULT_STALE_AFTER = 600.0


@dataclass
class FollowResult:
    run_dir: Path
    outcome: str  # one of the outcomes above
    message: str  # one line for the user
    steps_analysed: list[int] = field(default_factory=list)
    callback_seconds: dict[str, float] = field(default_factory=dict)
    lag_seconds: float | None = None  # end of training -> last result stored (FINISHED only)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        return 0 if self.outcome == FINISHED else 1


def _training_status(run_dir: Path) -> Status | None:
    """The trainer's status.json, or None while there is none (or it is being replaced)."""
    try:
        return read_status(run_dir)
    except (FileNotFoundError, UnreadableFileError):
        return None


def _write_status(run_dir: Path, state: str, step: int | None, **extra) -> None:
    write_status(run_dir, state, step, name=ANALYSIS_STATUS_FILE, **extra)


def follow_run(
    run_dir: Path,
    callbacks: list[Callback],
    *,
    device: str = "cpu",
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    stale_after: float = DEFAULT_STALE_AFTER,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> FollowResult:
    """Measure `callbacks` at the run's due checkpoints as they land, until the run is finished and
    everything is stored, or the trainer failed or fell silent (see the module docstring)."""
    following = Following(Path(run_dir), callbacks, torch.device(device), progress)
    try:
        while True:
            # The status first: the trainer writes "finished" only after its last checkpoint, so a
            # "finished" read here means every checkpoint is already listed below.
            status = _training_status(following.run_dir)
            available = {info.step for info in checkpoints.list_checkpoints(following.run_dir)}
            pending = following.pending()
            ready = following.ready(pending, available)
            if ready:
                following.measure(ready, available)
            elif following.over(status, pending, stale_after):
                break
            else:
                following.wait(pending)
                sleep(poll_seconds)
    finally:
        following.close()
    log.info(following.result.message)
    return following.result


class Following:
    """A follower between two polls of its run: what is due, what it measured, its progress bar."""

    def __init__(self, run_dir: Path, callbacks: list[Callback], device: torch.device, progress: bool):
        self.run_dir, self.callbacks, self.device = run_dir, list(callbacks), device
        self.started = time.time()
        config = read_run_config(run_dir)
        self.total_steps = int(config["steps"])
        self.schedule = run_schedule(config)
        self.store = ResultStore(run_dir)
        # Plans with a throwaway runner (planning needs no data) until the first checkpoint lands: the
        # runner that measures needs the run's step-0 weights.
        self.planner = CallbackRunner(self.callbacks, None, self.store, self.schedule, self.total_steps)
        self.runner: CallbackRunner | None = None
        self.result = FollowResult(run_dir, INTERRUPTED, "interrupted")
        self.last_step: int | None = None
        self.bar = tqdm(total=len(self.pending()), desc="follow", unit="ckpt", disable=not progress,
                        dynamic_ncols=True, bar_format=BAR_FORMAT)
        _write_status(run_dir, "analysing", None)

    def pending(self) -> list[int]:
        """Checkpoint steps with callbacks due and not stored, in order."""
        scheduled = set(self.schedule)
        return [s for s in (self.runner or self.planner).pending_steps() if s in scheduled]

    def ready(self, pending: list[int], available: set[int]) -> list[int]:
        """The pending steps saved so far; a step whose callbacks all deferred (the LLC before its
        calibration) is left to `catch_up`."""
        runner = self.runner
        return [s for s in pending if s in available
                and (runner is None or any((s, c.name) not in runner.deferred for c in runner.pending(s)))]

    def measure(self, ready: list[int], available: set[int]) -> None:
        """Measure the oldest ready checkpoint, and what waited for it."""
        if self.runner is None:
            self.runner = CallbackRunner(self.callbacks, load_run_data(self.run_dir), self.store, self.schedule,
                                         self.total_steps, announce=self.announce)
        step = self.last_step = ready[0]
        self.runner.run(step, checkpoints.load(self.run_dir, step, self.device), self.device)
        self.runner.catch_up(step, available, lambda s: checkpoints.load(self.run_dir, s, self.device), self.device)
        self.result.steps_analysed.append(step)
        seconds, known = self.runner.costs.estimate(self.runner.remaining_calls(step))
        self.bar.set_description_str("follow", refresh=False)
        self.bar.set_postfix_str(f"{len(ready) - 1} checkpoints behind, {format_time_left(seconds, known)} of "
                                 f"measuring left", refresh=False)
        self.bar.update(1)
        _write_status(self.run_dir, "analysing", step)

    def announce(self, callback: str, step: int) -> None:
        self.bar.set_description_str(measuring_label(callback, step))

    def over(self, status: Status | None, pending: list[int], stale_after: float) -> bool:
        """Whether following ends here, nothing being ready to measure: training finished or failed,
        or the trainer fell silent. Then `result` says how."""
        measured = f"Measured {len(self.result.steps_analysed)} checkpoints"
        state = status.state if status else None
        # The trainer refreshes its status at every checkpoint and at least every
        # devinterp.training.trainer.HEARTBEAT_SECONDS; before its first status, count from our start.
        silent = time.time() - ((status.updated or self.started) if status else self.started)
        if state == "finished" and pending:
            outcome, message = MISSING, (f"{self.run_dir}: training finished but due checkpoints are missing at "
                                         f"steps {pending[:10]}{' ...' if len(pending) > 10 else ''}. {measured}.")
        elif state == "finished":
            self.result.lag_seconds = max(0.0, time.time() - (status.updated or self.started))
            outcome, message = FINISHED, (f"followed {self.run_dir}: {measured.lower()}; everything stored "
                                          f"{self.result.lag_seconds:.1f} s after training finished")
        elif state == "failed":
            outcome, message = TRAINING_FAILED, (
                f"{self.run_dir}: training failed at step {status.step}. {measured} (every complete one); "
                f"{len(pending)} due checkpoints will not come: resume the run, then follow it again.")
        elif silent > stale_after:
            described = f"status {state!r}" if state else f"no {STATUS_FILE}"
            outcome, message = TRAINER_SILENT, (
                f"{self.run_dir}: no status update for {silent:.0f} s ({described}, stale_after={stale_after:g}): "
                f"the trainer seems to have died. {measured}; {len(pending)} due ones are missing.")
        else:
            return False
        self.result.outcome, self.result.message = outcome, message
        return True

    def wait(self, pending: list[int]) -> None:
        """Say what the follower waits for (on its bar and in analysis_status.json)."""
        self.bar.set_postfix_str(f"waiting for step {pending[0]}" if pending else "waiting for the end of training",
                                 refresh=True)
        _write_status(self.run_dir, "analysing", self.last_step)

    def close(self) -> None:
        """Store the outcome, the seconds per callback and the lag in analysis_status.json."""
        self.bar.close()
        result = self.result
        result.callback_seconds = self.runner.seconds if self.runner is not None else {}
        result.seconds = time.time() - self.started
        _write_status(self.run_dir, "finished" if result.outcome == FINISHED else "stopped", self.last_step,
                      outcome=result.outcome, seconds=result.callback_seconds, lag_seconds=result.lag_seconds)


# ----------------------------------------------------------------------------- as the trainer's child
def _follower_main(run_dir: str, callbacks_cfg: dict, device: str, threads: int, poll_seconds: float,
                   stale_after: float) -> None:
    """Entry point of the follower process `devinterp-train analyze=follow` starts (spawned: a fresh
    interpreter, so no torch state is shared with the trainer). Logs to <run_dir>/follow.log."""
    torch.set_num_threads(threads)
    log_to_file(Path(run_dir) / FOLLOW_LOG_FILE)
    result = follow_run(Path(run_dir), build_callbacks(callbacks_cfg), device=device, poll_seconds=poll_seconds,
                        stale_after=stale_after, progress=False)
    raise SystemExit(result.exit_code)


class Follower:
    """A follower process beside this (training) process; see `devinterp.analysis.follow`.

    It measures the callbacks `callbacks_cfg` (a plain {name: {_target_, ...}} dict, as in the
    `callbacks` config) with `threads` torch threads. `wait()` blocks until it is done and returns
    the outcome it stored in the run's analysis_status.json."""

    def __init__(self, run_dir: Path, callbacks_cfg: dict, *, device: str, threads: int,
                 poll_seconds: float = DEFAULT_POLL_SECONDS, stale_after: float = DEFAULT_STALE_AFTER):
        self.run_dir = Path(run_dir)
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=_follower_main, name="devinterp-follower",
            args=(str(run_dir), callbacks_cfg, device, threads, poll_seconds, stale_after))
        self.process.start()

    def wait(self) -> dict:
        self.process.join()
        try:
            status = read_status(self.run_dir, ANALYSIS_STATUS_FILE)
            outcome = {"state": status.state, "step": status.step, "updated": status.updated, **status.extra}
        except (OSError, UnreadableFileError):
            outcome = {}
        return {**outcome, "exit_code": self.process.exitcode}
