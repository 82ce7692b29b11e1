"""devinterp-analyze under faults: damaged files, bad settings, kill -9, concurrent analyses, a
run still training. Killable processes are forks of one preloaded server (tests/fault_injection.py)."""
import json
import random
import shutil
import time

import pandas as pd
import pytest

from devinterp.cli import analyze as analyze_cli
from devinterp.store import checkpoints
from devinterp.analysis import analyze
from devinterp.callbacks import GradsCallback, LossCallback, WeightsCallback
from devinterp.store import read_metrics
from devinterp.store.results import LOCKS_DIRNAME, ResultStore
from devinterp.cli.train import compose_train_config, run
from tests.helpers import one_torch_thread
from tests.fault_injection import (assert_untouched, cli_main, damage_one_of_each, digest, exit_code, kill,
                                   posthoc, result_keys, start, train_run, wait_until)

# 11 checkpoints of a tiny model: 33 results of the kill test's callbacks, about a second of work.
LONGER_RUN = ["steps=60", "checkpoints.log=0", "checkpoints.linear=11", "progress=false", "task.vocab_size=16",
              "task.seq_len=16", "task.eval_size=32", "batch_size=8", "model.d_model=16", "model.n_heads=2",
              "train_sample_size=64", "callbacks=[]"]


def run_analyze(monkeypatch, *args) -> int:
    return exit_code(monkeypatch, analyze_cli.main, "devinterp-analyze", *args)


def callback_rows(run_dir) -> pd.DataFrame:
    frame = read_metrics(run_dir, latest_only=False)
    frame = frame[frame.callback != "train"]
    return frame.sort_values(["step", "name", "callback", "settings"]).reset_index(drop=True)


def assert_stored_once(run_dir):
    keys = result_keys(run_dir)
    assert len(keys) == len(set(keys)), f"results stored twice: {sorted(k for k in keys if keys.count(k) > 1)}"
    rows = callback_rows(run_dir)
    assert not rows.duplicated(["step", "name", "callback", "settings"]).any()


def test_damaged_files_are_named_and_the_rest_is_measured(small_runs, tmp_path, monkeypatch, capsys):
    """One damaged file of each kind: the two unreadable checkpoints are recorded as failures
    naming their file, everything else is measured, the summary line says so, exit 1."""
    run_dir = shutil.copytree(small_runs[0], tmp_path / "run")
    damaged = damage_one_of_each(run_dir)
    code = run_analyze(monkeypatch, f"run_dir={run_dir}", "callbacks=[loss,weights]", "callbacks.loss.batch_size=7",
                       "progress=false")
    err = capsys.readouterr().err
    assert code == 1
    weights_file, config_file = str(damaged["weights"][0]), str(damaged["config"][0])
    assert f"warning: skipped checkpoint step 4: {weights_file}" in err
    assert f"warning: skipped checkpoint step 10: {config_file}" in err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("devinterp-analyze: 2 callback runs failed (2 checkpoints could not be read: step 4, 10)")
    assert f"{run_dir}/failures/" in summary
    failures = {f["step"]: f for f in ResultStore(run_dir).failures()}
    assert set(failures) == {4, 10} and {f["callback"] for f in failures.values()} == {"loss"}
    assert failures[4]["file"] == weights_file and weights_file in failures[4]["error"]
    assert failures[10]["file"] == config_file
    new_loss = callback_rows(run_dir).query("callback == 'loss' and name == 'eval/loss'").groupby("settings")["step"]
    assert sorted(map(sorted, new_loss.apply(list))) == [[0, 1, 4, 10, 20], [0, 1, 20]]  # live ones; batch 7
    # the damaged weights result part (step 1) was computed again; the bad file stays as it was
    with pytest.warns(match="not a complete Parquet file"):
        assert (1, "weights", WeightsCallback().settings_hash) in ResultStore(run_dir).completed()
    assert_untouched(damaged)


BAD_SETTINGS = [  # every rule is tested in tests/callbacks; here: the command line, before any work
    ("callbacks=[llc]", "callbacks.llc.step_size=-1", "callbacks.llc.step_size=-1"),
    ("callbacks=[llc]", "callbacks.llc.refined=per_neuron", "callbacks.llc.refined='per_neuron'"),
    ("callbacks=[hessian]", "callbacks.hessian.lanczos_steps=2", "callbacks.hessian.lanczos_steps=2"),
]


@pytest.mark.parametrize("selection,setting,named", BAD_SETTINGS)
def test_bad_callback_settings_exit_2_before_any_work(small_runs, monkeypatch, capsys, selection, setting, named):
    run_dir = small_runs[1]
    before = digest(run_dir)
    code = run_analyze(monkeypatch, f"run_dir={run_dir}", selection, setting, "progress=false")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("devinterp-analyze: error: ") and named in err
    assert digest(run_dir) == before  # nothing was written


def kill_test_callbacks():
    return [LossCallback(batch_size=32), WeightsCallback(), GradsCallback(num_samples=32)]


@pytest.fixture(scope="module")
def longer_run(tmp_path_factory):
    """A finished run without callbacks (11 checkpoints) and a copy with its uninterrupted
    analysis (one torch thread, as in the forked children, so results compare bit for bit)."""
    root = tmp_path_factory.mktemp("longer")
    overrides = [*LONGER_RUN, f"run_dir={root / 'run'}"]
    run_dir = run(compose_train_config(overrides), overrides).run_dir
    reference = shutil.copytree(run_dir, root / "reference")
    with one_torch_thread():
        analyze(reference, kill_test_callbacks(), progress=False)
    return run_dir, reference


def assert_same_results(run_dir, reference):
    columns = ["step", "name", "value", "callback", "settings"]
    pd.testing.assert_frame_equal(callback_rows(run_dir)[columns], callback_rows(reference)[columns], check_exact=True)


def test_kill_9_at_10_random_points_then_the_analysis_completes_once(longer_run, tmp_path):
    """Ten analyses killed with SIGKILL, each once a random number of results is stored plus a
    random 0-20 ms (mid-callback, mid-write, mid-claim), then one more run completes: every
    result stored exactly once, bit-identical to an uninterrupted analysis."""
    run, reference = longer_run
    run_dir = shutil.copytree(run, tmp_path / "run")
    log = str(tmp_path / "log.txt")
    total = len(result_keys(reference))
    rng = random.Random(20261201)
    kills = []
    for target in sorted(rng.sample(range(1, total), 10)):
        process = start(posthoc, str(run_dir), kill_test_callbacks(), log)
        assert wait_until(lambda: len(result_keys(run_dir)) >= target, 120, process)
        time.sleep(rng.uniform(0, 0.02))
        kills.append((target, process.is_alive()))
        kill(process)
    assert all(alive for _, alive in kills), f"some analyses finished before their kill: {kills}"
    final = start(posthoc, str(run_dir), kill_test_callbacks(), log)
    final.join()
    assert final.exitcode == 0, (tmp_path / "log.txt").read_text()[-2000:]
    assert_stored_once(run_dir)
    assert len(result_keys(run_dir)) == total
    assert_same_results(run_dir, reference)
    assert not (run_dir / "failures").exists()
    assert list((run_dir / LOCKS_DIRNAME).iterdir()) == []  # locks of killed holders were removed


def test_two_analyses_at_once_store_each_result_once(longer_run, tmp_path):
    """Two `devinterp-analyze` processes on one run: both exit 0 (each waits for what the other
    is computing), every result is stored once, equal to a single analysis."""
    run, reference = longer_run
    run_dir = shutil.copytree(run, tmp_path / "run")
    argv = [f"run_dir={run_dir}", "callbacks=[loss,weights,grads]", "callbacks.loss.batch_size=32",
            "callbacks.grads.num_samples=32", "progress=false"]
    logs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    processes = [start(cli_main, "devinterp.cli.analyze", argv, str(log)) for log in logs]
    assert wait_until(lambda: len(result_keys(run_dir)) >= 1, 120)
    both_running = all(p.is_alive() for p in processes)
    for process in processes:
        process.join()
    assert [p.exitcode for p in processes] == [0, 0], [log.read_text()[-2000:] for log in logs]
    assert both_running, "the two analyses did not overlap"
    assert_stored_once(run_dir)
    assert_same_results(run_dir, reference)


def test_an_analysis_beside_training_sees_complete_checkpoints_and_catches_up(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*LONGER_RUN, "steps=120", "checkpoints.linear=24", f"run_dir={run_dir}"]
    training = start(train_run, compose_train_config(overrides), overrides, str(tmp_path / "train.txt"))
    callbacks = [LossCallback(batch_size=32), WeightsCallback()]
    try:
        assert wait_until(lambda: len(checkpoints.list_checkpoints(run_dir)) >= 3, 120, training)
        # only what has landed so far (a short analysis: on a loaded machine a full one can outlast training)
        landed = [i.step for i in checkpoints.list_checkpoints(run_dir)]
        first = analyze(run_dir, callbacks, steps=landed, progress=False)
        still_training = training.is_alive()
    finally:
        training.join()
    assert training.exitcode == 0
    assert still_training, "training ended before the analysis did: nothing was tested"
    assert first.failures == 0 and len(first.steps_analysed) >= 3
    all_steps = [i.step for i in checkpoints.list_checkpoints(run_dir)]
    assert set(first.steps_analysed) < set(all_steps)
    rest = analyze(run_dir, callbacks, progress=False)  # re-run: catches up
    assert rest.failures == 0 and set(first.steps_analysed) | set(rest.steps_analysed) == set(all_steps)
    assert not set(first.steps_analysed) & set(rest.steps_analysed)
    assert analyze(run_dir, callbacks, progress=False).steps_analysed == []
    assert_stored_once(run_dir)
    stored = {(int(s), c) for s, c in callback_rows(run_dir)[["step", "callback"]].drop_duplicates().to_numpy()}
    assert stored == {(s, c.name) for s in all_steps for c in callbacks}
    assert json.loads((run_dir / "analysis_status.json").read_text())["state"] == "finished"
