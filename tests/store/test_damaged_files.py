"""The store's readers skip and name damaged files; claims make concurrent writers store once."""
import os
import signal
import time

import numpy as np
import pytest

from devinterp.store.metrics import MetricsWriter, metric_parts, read_metrics, read_metrics_and_problems
from devinterp.store.results import LOCKS_DIRNAME, ResultStore
from devinterp.store.unreadable import UnreadableFileError, UnreadableFileWarning
from tests.fault_injection import truncate


def two_parts(run_dir):
    writer = MetricsWriter(run_dir)
    for step in (0, 1):
        writer.add(step, {"a": float(step)})
        writer.flush()
    return metric_parts(run_dir)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_read_metrics_skips_a_damaged_part_naming_it_and_leaves_it(tmp_path, damage):
    first, second = two_parts(tmp_path)
    if damage == "truncate":
        truncate(second)
    else:
        second.write_bytes(b"not parquet at all" if damage == "garbage" else b"")
    content = second.read_bytes()
    with pytest.warns(UnreadableFileWarning, match=second.name):
        frame = read_metrics(tmp_path)
    assert frame["step"].tolist() == [0]
    _, problems = read_metrics_and_problems(tmp_path)
    assert [p.path for p in problems] == [second]
    assert second.read_bytes() == content and metric_parts(tmp_path) == [first, second]


def test_a_damaged_result_part_is_computed_again(tmp_path):
    store = ResultStore(tmp_path)
    store.write(3, "loss", "abc", {"eval/loss": 1.0}, {"eval/loss_by_position": np.arange(3.0)})
    store.write(4, "loss", "abc", {"eval/loss": 2.0}, {})
    assert store.completed() == {(3, "loss", "abc"), (4, "loss", "abc")}
    [part] = [p for p in metric_parts(tmp_path) if p.name.endswith("s0000004.parquet")]
    truncate(part)
    with pytest.warns(UnreadableFileWarning, match=part.name):
        assert store.completed() == {(3, "loss", "abc")}
    with pytest.warns(UnreadableFileWarning):
        assert not store.is_complete(4, "loss", "abc")
    assert store.is_complete(3, "loss", "abc")


def test_damaged_arrays_and_failure_records_are_named(tmp_path):
    store = ResultStore(tmp_path)
    store.write(3, "loss", "abc", {"eval/loss": 1.0}, {"eval/loss_by_position": np.arange(3.0)})
    arrays = tmp_path / "arrays" / "loss-abc" / "step_0000003.npz"
    truncate(arrays)
    with pytest.raises(UnreadableFileError, match="step_0000003.npz"):
        store.load_arrays("loss", "abc", 3)
    with pytest.raises(FileNotFoundError):
        store.load_arrays("loss", "abc", 4)
    store.write_failure(5, "loss", "abc", "boom", "traceback")
    store.write_failure(6, "loss", "abc", "boom", "traceback", file="x/model.safetensors")
    truncate(tmp_path / "failures" / "loss-abc" / "step_0000005.json")
    with pytest.warns(UnreadableFileWarning, match="step_0000005.json"):
        [record] = store.failures()
    assert record["step"] == 6 and record["file"] == "x/model.safetensors"


def test_a_claim_is_exclusive_and_dies_with_its_holder(tmp_path):
    store = ResultStore(tmp_path)
    with store.claim(3, "loss", "abc") as mine:
        assert mine
        with store.claim(3, "loss", "abc") as other:  # another open file: flock excludes it too
            assert not other
        with store.claim(4, "loss", "abc") as different:
            assert different
    assert list((tmp_path / LOCKS_DIRNAME).iterdir()) == []  # lock files are removed when released

    # A holder killed with SIGKILL leaves its lock file but no claim.
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: claim, tell the parent, wait to be killed
        with ResultStore(tmp_path).claim(3, "loss", "abc"):
            os.write(write_fd, b"x")
            time.sleep(60)
        os._exit(0)
    os.read(read_fd, 1)
    with store.claim(3, "loss", "abc") as taken:
        assert not taken
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert (tmp_path / LOCKS_DIRNAME / "loss-abc-s0000003.lock").exists()
    with store.claim(3, "loss", "abc", wait=True) as mine:
        assert mine


def test_writes_name_the_file_they_could_not_write(tmp_path):
    from devinterp.store.atomic import atomic_write_json

    (tmp_path / "ro").mkdir()
    target = tmp_path / "ro" / "missing_dir" / "x.json"  # the temporary cannot be created
    with pytest.raises(OSError) as error:
        atomic_write_json(target, {"a": 1})
    assert str(target) in str(error.value)
    assert list((tmp_path / "ro").iterdir()) == []
