"""Following a run: checkpoints measured as they land, the same numbers as live, clean exits."""
import json
import shutil
import sys
import time

import pandas as pd
import pytest

from devinterp.cli import analyze as analyze_cli
from devinterp.analysis.follow import FINISHED, MISSING, TRAINER_SILENT, TRAINING_FAILED, follow_run
from devinterp.store.run_dir import ANALYSIS_STATUS_FILE
from devinterp.callbacks import LossCallback, WeightsCallback
from devinterp.store.checkpoints import checkpoints_dir, step_dirname
from devinterp.store import read_metrics
from devinterp.store.run_dir import write_status
from devinterp.cli.train import compose_train_config, run
from tests.helpers import callback_rows

BASE = ["steps=20", "checkpoints.log=3", "checkpoints.linear=3", "progress=false", "task.vocab_size=16",
        "task.seq_len=16", "task.eval_size=32", "batch_size=8", "model.d_model=16", "model.n_heads=2",
        "train_sample_size=64"]


def callbacks():
    return [LossCallback(), WeightsCallback()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same short run with live callbacks, and without any."""
    root = tmp_path_factory.mktemp("runs")
    live = run(compose_train_config([*BASE, "callbacks=[loss,weights]", f"run_dir={root / 'live'}"]), [])
    bare = run(compose_train_config([*BASE, "callbacks=[]", f"run_dir={root / 'bare'}"]), [])
    return live.run_dir, bare.run_dir


class FakeTrainer:
    """Replays a finished run as if it were training: its checkpoints are hidden, and each time the
    follower waits (its `sleep`), the next one lands (renamed into place, as the trainer does); after
    the last one the status becomes `end_state`."""

    def __init__(self, run_dir, end_state="finished", land=None):
        self.run_dir = run_dir
        self.hidden = run_dir / "hidden"
        self.hidden.mkdir()
        self.steps = sorted(int(p.name.split("_")[1]) for p in checkpoints_dir(run_dir).glob("step_*"))
        for step in self.steps:
            (checkpoints_dir(run_dir) / step_dirname(step)).rename(self.hidden / step_dirname(step))
        self.to_land = list(self.steps if land is None else land)
        self.end_state = end_state
        self.sleeps = 0
        write_status(run_dir, "training", 0)

    def sleep(self, seconds):
        self.sleeps += 1
        if self.to_land:
            step = self.to_land.pop(0)
            (self.hidden / step_dirname(step)).rename(checkpoints_dir(self.run_dir) / step_dirname(step))
            write_status(self.run_dir, "training", step)
        else:
            write_status(self.run_dir, self.end_state, self.steps[-1])


def test_follower_measures_checkpoints_as_they_land_with_the_live_numbers(runs, tmp_path):
    live, bare = runs
    run_dir = tmp_path / "run"
    shutil.copytree(bare, run_dir)
    trainer = FakeTrainer(run_dir)
    result = follow_run(run_dir, callbacks(), poll_seconds=0, progress=False, sleep=trainer.sleep)
    assert result.outcome == FINISHED and result.exit_code == 0
    assert result.steps_analysed == trainer.steps  # each as it landed, in order
    assert trainer.sleeps == len(trainer.steps) + 1  # it waited for every checkpoint and for the end
    assert result.lag_seconds is not None and result.lag_seconds >= 0
    assert set(result.callback_seconds) == {"loss", "weights"}
    pd.testing.assert_frame_equal(callback_rows(run_dir), callback_rows(live), check_exact=False, rtol=1e-6)
    status = json.loads((run_dir / ANALYSIS_STATUS_FILE).read_text())
    assert status["state"] == "finished" and status["outcome"] == FINISHED and status["step"] == trainer.steps[-1]

    # Following a run whose results are all stored: nothing to do, done at once.
    again = follow_run(run_dir, callbacks(), poll_seconds=0, progress=False, sleep=trainer.sleep)
    assert again.outcome == FINISHED and again.steps_analysed == []


def test_dashboard_shows_the_run_analysing_while_the_follower_catches_up(runs, tmp_path):
    """Training finished with checkpoints still to measure: the run's badge is "analysing"."""
    from devinterp.callbacks.base import Callback, CallbackOutput
    from devinterp.views.dashboard.data import load_status

    class BadgeCallback(Callback):
        name = "badge"
        seen = []

        def on_checkpoint(self, ctx):
            self.seen.append(load_status(run_dir, time.time(), stale_after=600).badge)
            return CallbackOutput({"badge/seen": 1.0})

    _, bare = runs
    run_dir = tmp_path / "run"
    shutil.copytree(bare, run_dir)
    trainer = FakeTrainer(run_dir, land=[])
    write_status(run_dir, "finished", 20)  # everything landed at once, training over
    for step in trainer.steps:
        (trainer.hidden / step_dirname(step)).rename(checkpoints_dir(run_dir) / step_dirname(step))
    result = follow_run(run_dir, [BadgeCallback()], poll_seconds=0, progress=False, sleep=trainer.sleep)
    assert result.outcome == FINISHED and BadgeCallback.seen == ["analysing"] * len(trainer.steps)
    assert load_status(run_dir, time.time(), stale_after=600).badge == "finished"


def test_follower_stops_when_training_failed_or_the_trainer_fell_silent(runs, tmp_path):
    _, bare = runs
    run_dir = tmp_path / "failed"
    shutil.copytree(bare, run_dir)
    trainer = FakeTrainer(run_dir, end_state="failed", land=[0, 1])  # died after two checkpoints
    result = follow_run(run_dir, callbacks(), poll_seconds=0, progress=False, sleep=trainer.sleep)
    assert result.outcome == TRAINING_FAILED and result.exit_code == 1
    assert result.steps_analysed == [0, 1] and "training failed" in result.message and "resume" in result.message
    assert json.loads((run_dir / ANALYSIS_STATUS_FILE).read_text())["state"] == "stopped"

    run_dir = tmp_path / "silent"
    shutil.copytree(bare, run_dir)
    trainer = FakeTrainer(run_dir, land=[0])
    old = time.time() - 100
    write_status(run_dir, "training", 0)
    status = json.loads((run_dir / "status.json").read_text())
    (run_dir / "status.json").write_text(json.dumps({**status, "updated": old}))

    def silent_sleep(seconds):  # a trainer that died long ago: nothing lands, the status never changes
        trainer.sleeps += 1

    result = follow_run(run_dir, callbacks(), poll_seconds=0, stale_after=50, progress=False, sleep=silent_sleep)
    assert result.outcome == TRAINER_SILENT and result.exit_code == 1 and result.steps_analysed == []
    assert "seems to have died" in result.message and trainer.sleeps == 0

    run_dir = tmp_path / "missing"
    shutil.copytree(bare, run_dir)
    shutil.rmtree(checkpoints_dir(run_dir) / step_dirname(20))
    write_status(run_dir, "finished", 20)
    result = follow_run(run_dir, callbacks(), poll_seconds=0, progress=False)
    assert result.outcome == MISSING and result.exit_code == 1 and "20" in result.message


def test_follow_cli(runs, tmp_path, monkeypatch, capsys):
    _, bare = runs
    run_dir = tmp_path / "run"
    shutil.copytree(bare, run_dir)
    monkeypatch.setattr(sys, "argv", ["devinterp-analyze", f"run_dir={run_dir}", "follow=true",
                                      "callbacks=[weights]", "progress=false"])
    with pytest.raises(SystemExit) as exit_info:
        analyze_cli.main()
    assert exit_info.value.code == 0 and "followed" in capsys.readouterr().out
    for bad, key in (("executor=process", "executor=process"), ("steps=[0]", "steps"), ("poll_seconds=0", "poll_seconds")):
        monkeypatch.setattr(sys, "argv", ["devinterp-analyze", f"run_dir={run_dir}", "follow=true", bad])
        with pytest.raises(SystemExit) as exit_info:
            analyze_cli.main()
        assert exit_info.value.code == 2 and key in capsys.readouterr().err


@pytest.mark.slow  # a spawned interpreter imports torch, transformers and hydra: 10-50 s on 2 busy cores
def test_training_with_a_follower_process_gives_the_live_numbers(runs, tmp_path, capsys):
    """`analyze=follow`: the trainer starts the follower as a child process and waits for it."""
    from devinterp.cli.train import report

    live, _ = runs
    result = run(compose_train_config([*BASE, "callbacks=[loss,weights]", "analyze=follow",
                                       f"run_dir={tmp_path / 'followed'}"]), [])
    assert set(result.callback_seconds) == {"loss", "weights"} and result.follower_lag_seconds is not None
    # The follower runs with its own torch thread count: float32 sums in another order (icl scores are
    # differences of losses, so compare absolutely too).
    pd.testing.assert_frame_equal(callback_rows(result.run_dir), callback_rows(live), check_exact=False, rtol=1e-5,
                                  atol=1e-5)
    assert (result.run_dir / "follow.log").is_file()
    report(result)
    assert "in a follower process" in capsys.readouterr().out


def test_follower_catches_up_on_deferred_measurements(runs, tmp_path):
    """A callback that defers until the last due checkpoint (as the LLC waits for its calibration's
    reference) is measured everywhere once that lands; the follower neither spins nor gives up."""
    from devinterp.callbacks.base import Callback, CallbackOutput, Deferred

    class WaitForLast(Callback):
        name = "wait_for_last"
        ready = False

        def on_checkpoint(self, ctx):
            if not self.ready and ctx.step < max(ctx.due_steps):
                raise Deferred("waits for the last checkpoint")
            self.ready = True
            return CallbackOutput({"wait_for_last/step": float(ctx.step)})

    _, bare = runs
    run_dir = tmp_path / "run"
    shutil.copytree(bare, run_dir)
    trainer = FakeTrainer(run_dir)
    result = follow_run(run_dir, [WaitForLast()], poll_seconds=0, progress=False, sleep=trainer.sleep)
    assert result.outcome == FINISHED
    assert trainer.sleeps <= len(trainer.steps) + 2
    measured = read_metrics(run_dir)
    assert sorted(measured[measured.name == "wait_for_last/step"]["step"]) == trainer.steps
