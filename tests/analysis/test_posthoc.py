"""Post-hoc analysis equals the live one, is resumable, and does not depend on the executor."""
import shutil
import sys

import pandas as pd
import pytest

from devinterp.cli import analyze as analyze_cli
from devinterp.analysis import ExecutorConfig, analyze
from devinterp.callbacks import GradsCallback, InductionCallback, LossCallback, WeightsCallback
from devinterp.analysis.executors import ExecutorName
from devinterp.store import read_metrics
from tests.helpers import callback_rows, one_torch_thread


def callbacks():
    return [LossCallback(), InductionCallback(num_sequences=16), WeightsCallback(), GradsCallback(num_samples=32)]


@pytest.fixture(scope="module")
def trained(small_runs):
    """The same short run twice: with live callbacks, and without any (to analyse post hoc)."""
    return small_runs


def test_posthoc_equals_online_and_is_incremental(trained, tmp_path):
    live, bare = trained
    run_dir = tmp_path / "run"
    shutil.copytree(bare, run_dir)
    first = analyze(run_dir, callbacks(), steps=[0, 20], progress=False)  # an analysis "killed" early
    assert first.steps_analysed == [0, 20]
    rest = analyze(run_dir, callbacks(), progress=False)
    assert 0 not in rest.steps_analysed and 20 not in rest.steps_analysed and rest.steps_analysed
    assert analyze(run_dir, callbacks(), progress=False).steps_analysed == []  # finished: a no-op
    pd.testing.assert_frame_equal(callback_rows(run_dir), callback_rows(live), check_exact=False, rtol=1e-6)


def test_changed_settings_add_entries_instead_of_overwriting(trained, tmp_path):
    _, bare = trained
    run_dir = tmp_path / "run"
    shutil.copytree(bare, run_dir)
    analyze(run_dir, [InductionCallback(num_sequences=16)], progress=False)
    result = analyze(run_dir, [InductionCallback(num_sequences=8)], progress=False)
    assert result.steps_analysed  # new settings: computed again
    everything = read_metrics(run_dir, latest_only=False)
    assert everything[everything.callback == "induction"]["settings"].nunique() == 2


@pytest.mark.slow(seconds=30)
@pytest.mark.parametrize("executor", [ExecutorName.process, ExecutorName.ray])
def test_parallel_executors_match_serial(trained, tmp_path, executor):
    """Bit-for-bit equal. Workers run one torch thread each (a pool shares the cores), so the
    serial reference does too: summation order, not the executor, is what could differ."""
    _, bare = trained
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    shutil.copytree(bare, serial)
    shutil.copytree(bare, parallel)
    with one_torch_thread():
        analyze(serial, callbacks(), progress=False)
    config = ExecutorConfig(name=executor, num_workers=2)
    result = analyze(parallel, callbacks(), executor=config, progress=False)
    assert result.callback_seconds and set(result.callback_seconds) == {"loss", "induction", "weights", "grads"}
    pd.testing.assert_frame_equal(callback_rows(parallel), callback_rows(serial), check_exact=True)


def test_analyze_cli(trained, tmp_path, monkeypatch, capsys):
    _, bare = trained
    run_dir = tmp_path / "run"
    shutil.copytree(bare, run_dir)
    monkeypatch.setattr(sys, "argv", ["devinterp-analyze", f"run_dir={run_dir}", "callbacks=[loss,weights]",
                                      "progress=false"])
    analyze_cli.main()
    out = capsys.readouterr().out
    assert "analysed" in out and "loss" in out and "weights" in out
    assert set(callback_rows(run_dir)["callback"]) == {"loss", "weights"}
    monkeypatch.setattr(sys, "argv", ["devinterp-analyze", f"run_dir={tmp_path / 'nothing'}"])
    with pytest.raises(SystemExit) as exit_info:
        analyze_cli.main()
    assert exit_info.value.code == 2 and "run_dir=" in capsys.readouterr().err


def test_posthoc_results_go_to_the_runs_own_wandb_run(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    _, bare = trained
    run_dir = tmp_path / "run"
    shutil.copytree(bare, run_dir)
    (run_dir / "wandb_id.txt").write_text("abcd1234")  # as left by training with logger=wandb
    monkeypatch.setattr(sys, "argv", ["devinterp-analyze", f"run_dir={run_dir}", "callbacks=[loss]",
                                      "logger=wandb", "progress=false"])
    analyze_cli.main()
    offline_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert offline_runs and all(p.name.endswith("-abcd1234") for p in offline_runs)


def test_only_results_another_process_held_are_waited_for(tmp_path):
    """The last pass (`waiting_jobs`) holds a job only where a callback found its claim taken, with
    only those callbacks: no job, and no checkpoint load, for the steps that finished in the first pass."""
    from devinterp.analysis.posthoc import CheckpointJob, JobResult, waiting_jobs

    loss, weights = LossCallback(), WeightsCallback()
    jobs = [CheckpointJob(tmp_path, step, (loss, weights), "cpu", (0, 10, 20), 20, True) for step in (0, 10, 20)]
    results = [JobResult(0, {"loss": 0.1, "weights": 0.1}), JobResult(10, {"weights": 0.1}, busy=("loss",)),
               JobResult(20, {"loss": 0.1, "weights": 0.1})]
    waiting = waiting_jobs(jobs, results)
    assert [(job.step, [c.name for c in job.callbacks], job.wait_for_claims) for job in waiting] == [(10, ["loss"], True)]
    assert waiting_jobs(jobs, [JobResult(s, {"loss": 0.1}) for s in (0, 10, 20)]) == []
