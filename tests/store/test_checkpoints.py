"""Damaged checkpoints: `load` names the file, `list_checkpoints` and resume go on, nothing is touched."""
import shutil
import warnings

import pytest
import torch

from devinterp.store import checkpoints
from devinterp.store.metrics import read_metrics
from devinterp.store.unreadable import UnreadableFileWarning
from devinterp.cli.train import compose_train_config, resume_config, run
from tests.fault_injection import digest, truncate

FILES = ["model.safetensors", "config.json", "trainer_state.pt"]


def copy_of(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "run")


@pytest.mark.parametrize("name", FILES)
def test_load_names_the_damaged_file_and_leaves_it(small_runs, tmp_path, name):
    run_dir = copy_of(small_runs[1], tmp_path)
    damaged = run_dir / "checkpoints" / "step_0000004" / name
    content = truncate(damaged)
    before = digest(run_dir)
    with pytest.raises(checkpoints.CheckpointError) as error:
        if name == "trainer_state.pt":
            checkpoints.load_trainer_state(run_dir, 4)
        else:
            checkpoints.load(run_dir, 4)
    assert error.value.path == damaged and error.value.step == 4 and str(damaged) in str(error.value)
    assert len(str(error.value).splitlines()) == 1
    checkpoints.load(run_dir, 10)  # the others still load
    assert [i.step for i in checkpoints.list_checkpoints(run_dir)] == [0, 1, 4, 10, 20]
    assert damaged.read_bytes() == content and digest(run_dir) == before


def test_a_checkpoint_with_unreadable_meta_is_skipped_with_a_warning(small_runs, tmp_path):
    run_dir = copy_of(small_runs[1], tmp_path)
    truncate(run_dir / "checkpoints" / "step_0000010" / "meta.json")
    with pytest.warns(UnreadableFileWarning, match="step_0000010/meta.json"):
        assert [i.step for i in checkpoints.list_checkpoints(run_dir)] == [0, 1, 4, 20]


def test_initial_state_of_a_damaged_step_0_is_none_with_a_warning(small_runs, tmp_path):
    run_dir = copy_of(small_runs[1], tmp_path)
    truncate(run_dir / "checkpoints" / "step_0000000" / "model.safetensors")
    with pytest.warns(UnreadableFileWarning, match="step_0000000/model.safetensors"):
        assert checkpoints.initial_state(run_dir) is None


@pytest.mark.parametrize("name", FILES)
def test_resume_skips_a_damaged_last_checkpoint_and_ends_bit_identical(small_runs, tmp_path, capfd, name):
    """The run's last checkpoint is damaged: resume starts from the one before, says which it
    skipped, trains the missing steps again and ends with the uninterrupted run's weights."""
    reference = small_runs[1]
    run_dir = copy_of(reference, tmp_path)
    damaged = truncate(run_dir / "checkpoints" / "step_0000020" / name)
    latest, skipped = checkpoints.load_latest(run_dir)
    assert latest.step == 10 and [e.step for e in skipped] == [20]
    overrides = ["resume=true", f"run_dir={run_dir}"]
    cfg, merged = resume_config(compose_train_config(overrides), overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreadableFileWarning)  # only the last checkpoint is damaged
        result = run(cfg, merged)
    assert result.steps_trained == 10
    assert f"skipping checkpoint step 20: {run_dir}/checkpoints/step_0000020/{name}" in capfd.readouterr().err
    assert "skipping checkpoint step 20" in (run_dir / "train.log").read_text()
    [kept] = (run_dir / "checkpoints").glob(".replaced-step_0000020-*")  # the damaged one, kept aside
    assert (kept / name).read_bytes() == damaged
    assert [i.step for i in checkpoints.list_checkpoints(run_dir)] == [0, 1, 4, 10, 20]
    for key, value in checkpoints.load(reference, 20).state_dict().items():
        assert torch.equal(checkpoints.load(run_dir, 20).state_dict()[key], value), key
    a, b = read_metrics(run_dir), read_metrics(reference)
    assert a[["step", "name", "value"]].equals(b[["step", "name", "value"]])
