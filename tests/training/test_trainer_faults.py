"""Training under faults: kill -9 at random points, a full disk during a checkpoint write."""
import os
import random
import shutil
import time

import torch

from devinterp.store import checkpoints
from devinterp.cli import train as train_cli
from devinterp.store.metrics import read_metrics
from devinterp.store.run_dir import read_status
from devinterp.cli.train import compose_train_config, resume_config, run
from tests.conftest import SMALL_RUN
from tests.fault_injection import exit_code, kill, result_keys, start, train_run, wait_until
from tests.helpers import one_torch_thread

# 16 checkpoints in 60 steps of a tiny model, two cheap live callbacks (results and arrays).
KILL_RUN = ["steps=60", "checkpoints.log=0", "checkpoints.linear=16", "progress=false", "task.vocab_size=16",
            "task.seq_len=16", "task.eval_size=32", "batch_size=8", "model.d_model=16", "model.n_heads=2",
            "train_sample_size=64", "callbacks=[loss,weights]", "callbacks.loss.batch_size=32"]


def assert_same_run(run_dir, reference, last_step):
    a, b = checkpoints.load(run_dir, last_step).state_dict(), checkpoints.load(reference, last_step).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "weights differ"
    columns = ["step", "name", "value", "callback", "settings"]
    pd_a, pd_b = read_metrics(run_dir)[columns], read_metrics(reference)[columns]
    assert pd_a.equals(pd_b), "metrics differ"
    assert read_status(run_dir).state == "finished"
    assert not any(p.name.startswith(".tmp-") for p in (run_dir / "checkpoints").iterdir())


def test_kill_9_at_10_random_points_then_resume_is_bit_identical(tmp_path):
    """Ten SIGKILLs, each once a random number of checkpoints exists plus a random 0-20 ms
    (mid-step, mid-callback, mid-checkpoint write), each followed by `resume=true`."""
    reference = tmp_path / "reference"
    with one_torch_thread():  # as in the forked children: bit-for-bit comparable
        run(compose_train_config([*KILL_RUN, f"run_dir={reference}"]), KILL_RUN)
    run_dir, log = tmp_path / "killed", str(tmp_path / "log.txt")
    fresh = (compose_train_config([*KILL_RUN, f"run_dir={run_dir}"]), KILL_RUN)
    rng = random.Random(1201)
    kills, resume = [], None
    n_checkpoints = len(checkpoints.list_checkpoints(reference))
    for i, target in enumerate(sorted(rng.sample(range(1, n_checkpoints), 10))):
        if i == 1:
            resume = resumed(run_dir)  # what `devinterp-train resume=true run_dir=...` runs
        process = start(train_run, *(fresh if i == 0 else resume), log)
        assert wait_until(lambda: len(checkpoints.list_checkpoints(run_dir)) >= target, 120, process)
        time.sleep(rng.uniform(0, 0.02))
        kills.append((target, process.is_alive()))
        kill(process)
    assert all(alive for _, alive in kills), f"some runs finished before their kill: {kills}"
    final = start(train_run, *resume, log)
    final.join()
    assert final.exitcode == 0, (tmp_path / "log.txt").read_text()[-3000:]
    assert_same_run(run_dir, reference, 60)
    keys = result_keys(run_dir)
    assert len(keys) == len(set(keys)) and keys == result_keys(reference)  # each callback result once


def resumed(run_dir):
    overrides = ["resume=true", f"run_dir={run_dir}"]
    return resume_config(compose_train_config(overrides), overrides)


def fill(directory, leave: int) -> None:
    """Fill the filesystem of `directory` up to `leave` bytes of free space."""
    free = shutil.disk_usage(directory).free
    with open(directory / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def run_train(monkeypatch, *args) -> int:
    return exit_code(monkeypatch, train_cli.main, "devinterp-train", *args)


def test_a_full_disk_during_a_checkpoint_write(tmpfs, small_runs, monkeypatch, capsys):
    """The disk fills up (something else wrote to it) just before checkpoint 10 is written:
    one line naming the checkpoint, exit 1, no partial checkpoint visible; once space is free
    again, resume ends with the weights and metrics of an uninterrupted run."""
    disk = tmpfs("4m").path
    run_dir = disk / "run"
    overrides = [*SMALL_RUN, "callbacks=[]", f"run_dir={run_dir}"]  # the config of small_runs' bare run
    save = checkpoints.save_checkpoint

    def fill_then_save(directory, step, *args, **kwargs):
        if step == 10:
            fill(disk, leave=16 * 1024)  # room for a metrics part, not for a checkpoint
        return save(directory, step, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "save_checkpoint", fill_then_save)
    assert run_train(monkeypatch, *overrides) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"devinterp-train: error: {run_dir}/checkpoints/step_0000010: "
                                               "could not write checkpoint"), err
    assert [i.step for i in checkpoints.list_checkpoints(run_dir)] == [0, 1, 4]
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["index.json", "step_0000000", "step_0000001",
                                                           "step_0000004"]
    monkeypatch.setattr(checkpoints, "save_checkpoint", save)
    (disk / "filler").unlink()
    assert run_train(monkeypatch, "resume=true", f"run_dir={run_dir}") == 0
    assert_same_run(run_dir, small_runs[1], 20)
