import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

# Under pytest-xdist (`make test` runs one worker per core) each worker gets its share of the cores:
# torch's default of one thread per core in every worker would oversubscribe the machine.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def pytest_collection_modifyitems(items):
    """Slow tests first, the longest (`@pytest.mark.slow(seconds=...)`, as measured in `make test`)
    leading, so parallel workers start on them and none is left running alone at the end."""
    def order(item):
        slow = item.get_closest_marker("slow")
        return (slow is None, -(slow.kwargs.get("seconds", 0) if slow else 0))

    items.sort(key=order)


# Small, fast training configs shared by the trainer and CLI tests.
TINY = ["steps=30", "checkpoints.log=4", "checkpoints.linear=4", "progress=false",
        "task.vocab_size=16", "task.seq_len=16", "task.eval_size=32", "batch_size=8",
        "model.d_model=16", "model.n_heads=2"]


@pytest.fixture
def tiny_overrides(tmp_path):
    return [*TINY, f"runs_root={tmp_path / 'runs'}"]


# A short run with its checkpoints, the same config twice: with the default callbacks live
# (results and arrays stored) and with none (for post-hoc analysis). Shared by the post-hoc,
# report, dashboard and fault-injection tests; tests copy a run before changing anything.
SMALL_RUN = ["steps=20", "checkpoints.log=3", "checkpoints.linear=3", "progress=false", "task.vocab_size=16",
             "task.seq_len=16", "task.eval_size=32", "batch_size=8", "model.d_model=16", "model.n_heads=2",
             "train_sample_size=64"]
SMALL_RUN_CALLBACKS = ["callbacks=[loss,induction,weights,grads]", "callbacks.induction.num_sequences=16",
                       "callbacks.grads.num_samples=32"]


@pytest.fixture(scope="session")
def small_runs(tmp_path_factory):
    """(live run, bare run): run directories not to be modified (copy them first)."""
    from devinterp.cli.train import compose_train_config, run

    root = tmp_path_factory.mktemp("small_runs")
    runs = []
    for name, callbacks in (("live", SMALL_RUN_CALLBACKS), ("bare", ["callbacks=[]"])):
        overrides = [*SMALL_RUN, *callbacks, f"run_dir={root / name}"]
        runs.append(run(compose_train_config(overrides), overrides).run_dir)
    return tuple(runs)


@pytest.fixture
def tmpfs(tmp_path):
    """Factory: tmpfs(size) -> a freshly mounted tmpfs directory (skips the test if mounting is
    not permitted, e.g. not root); unmounted afterwards."""
    from tests.fault_injection import Mount

    mounts = []

    def make(size: str = "8m") -> "Mount":
        mount = Mount(tmp_path / f"tmpfs{len(mounts)}", size)
        if mount.skip_reason:
            pytest.skip(mount.skip_reason)
        mounts.append(mount)
        return mount

    yield make
    for mount in mounts:
        mount.unmount()
