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

from devinterp.analysis.posthoc import load_run_data, run_config
from devinterp.callbacks import Callback, CallbackRunner, build_callbacks
from devinterp.core.logfile import log_to_file
from devinterp.core.progress import BAR_FORMAT, format_time_left, measuring_label
from devinterp.store import checkpoints
from devinterp.store.results import ResultStore
from devinterp.store.run_dir import ANALYSIS_STATUS_FILE, STATUS_FILE, Status, read_status, write_status
from devinterp.store.unreadable import UnreadableFileError
from devinterp.training.schedule import checkpoint_schedule

log = logging.getLogger(__name__)

# Outcomes. INTERRUPTED: the follower itself was stopped (an exception, Ctrl-C).
FINISHED, MISSING, TRAINING_FAILED, TRAINER_SILENT, INTERRUPTED = (
    "finished", "checkpoints missing", "training failed", "trainer silent", "interrupted")
FOLLOW_LOG_FILE = "follow.log"
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
    run_dir = Path(run_dir)
    started = time.time()
    config = run_config(run_dir)
    schedule = checkpoint_schedule(int(config["steps"]), int(config["checkpoints"]["log"]),
                                   int(config["checkpoints"]["linear"]))
    scheduled = set(schedule)
    store = ResultStore(run_dir)
    torch_device = torch.device(device)
    runner: CallbackRunner | None = None  # built at the first checkpoint: it needs the run's step-0 weights
    result = FollowResult(run_dir, INTERRUPTED, "interrupted")
    # Plan with a throwaway runner (no data needed for planning) to size the bar.
    planner = CallbackRunner(list(callbacks), None, store, schedule, int(config["steps"]))
    bar = tqdm(total=len([s for s in planner.pending_steps() if s in scheduled]), desc="follow", unit="ckpt",
               disable=not progress, dynamic_ncols=True, bar_format=BAR_FORMAT)
    last_step = None

    def announce(callback: str, step: int) -> None:
        bar.set_description_str(measuring_label(callback, step))

    _write_status(run_dir, "analysing", None)
    try:
        while True:
            # The status first: the trainer writes "finished" only after its last checkpoint, so a
            # "finished" read here means every checkpoint is already listed below.
            status = _training_status(run_dir)
            state = status.state if status else None
            available = {info.step for info in checkpoints.list_checkpoints(run_dir)}
            pending = [s for s in (runner or planner).pending_steps() if s in scheduled]
            # A step whose callbacks all deferred (the LLC before its calibration) waits for catch_up.
            ready = [s for s in pending if s in available
                     and (runner is None or any((s, c.name) not in runner.deferred for c in runner.pending(s)))]
            if ready:
                if runner is None:
                    runner = CallbackRunner(list(callbacks), load_run_data(run_dir), store, schedule,
                                            int(config["steps"]), announce=announce)
                last_step = ready[0]
                runner.run(last_step, checkpoints.load(run_dir, last_step, torch_device), torch_device)
                runner.catch_up(last_step, available, lambda s: checkpoints.load(run_dir, s, torch_device),
                                torch_device)
                result.steps_analysed.append(last_step)
                seconds, known = runner.costs.estimate(runner.remaining_calls(last_step))
                bar.set_description_str("follow", refresh=False)
                bar.set_postfix_str(f"{len(ready) - 1} checkpoints behind, {format_time_left(seconds, known)} of "
                                    f"measuring left", refresh=False)
                bar.update(1)
                _write_status(run_dir, "analysing", last_step)
                continue

            measured = f"Measured {len(result.steps_analysed)} checkpoints"
            if state == "finished":
                if pending:
                    result.outcome = MISSING
                    result.message = (f"{run_dir}: training finished but due checkpoints are missing at steps "
                                      f"{pending[:10]}{' ...' if len(pending) > 10 else ''}. {measured}.")
                else:
                    result.outcome = FINISHED
                    result.lag_seconds = max(0.0, time.time() - (status.updated or started))
                    result.message = (f"followed {run_dir}: {measured.lower()}; everything stored "
                                      f"{result.lag_seconds:.1f} s after training finished")
                break
            if state == "failed":
                result.outcome = TRAINING_FAILED
                result.message = (f"{run_dir}: training failed at step {status.step}. {measured} (every "
                                  f"complete one); {len(pending)} due checkpoints will not come: resume the "
                                  f"run, then follow it again.")
                break
            # The trainer refreshes its status at every checkpoint and at least every
            # devinterp.training.trainer.HEARTBEAT_SECONDS; before its first status, count from our start.
            silent = time.time() - ((status.updated or started) if status else started)
            if silent > stale_after:
                result.outcome = TRAINER_SILENT
                described = f"status {state!r}" if state else f"no {STATUS_FILE}"
                result.message = (f"{run_dir}: no status update for {silent:.0f} s ({described}, "
                                  f"stale_after={stale_after:g}): the trainer seems to have died. {measured}; "
                                  f"{len(pending)} due ones are missing.")
                break
            bar.set_postfix_str(f"waiting for step {pending[0]}" if pending else "waiting for the end of training",
                                refresh=True)
            _write_status(run_dir, "analysing", last_step)
            sleep(poll_seconds)
    finally:
        bar.close()
        result.callback_seconds = runner.seconds if runner is not None else {}
        result.seconds = time.time() - started
        _write_status(run_dir, "finished" if result.outcome == FINISHED else "stopped", last_step,
                      outcome=result.outcome, seconds=result.callback_seconds, lag_seconds=result.lag_seconds)
    log.info(result.message)
    return result


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
