"""A real (short) run without an LLC, and synthetic LLC series of known shape written into copies of it."""
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from devinterp.store import MetricsWriter
from devinterp.cli.train import compose_train_config, run


def write_synthetic_llc(run_dir, settings: str, fall: bool = True, noise_seed: int = 0) -> list[int]:
    """An LLC series (callback llc, this settings hash) at every checkpoint, the way the llc callback
    writes it: a rise (type A) until step ~40, then, if `fall`, a fall (type B) around step 150 while
    `synthetic/loss` is flat. Returns the steps."""
    steps = sorted(pd.read_json(run_dir / "checkpoints" / "index.json")["step"])
    x = np.log1p(steps)
    llc = 10 + 20 / (1 + np.exp(-(x - math.log(15)) * 4)) - (12 / (1 + np.exp(-(x - math.log(150)) * 4)) if fall else 0)
    loss = 3 - 2 / (1 + np.exp(-(x - math.log(15)) * 4))  # falls during the rise, flat during the fall
    writer = MetricsWriter(run_dir, callback="llc", settings=settings)
    rng = np.random.default_rng(noise_seed)
    for step, value, loss_value in zip(steps, llc, loss):
        writer.add(step, {"llc/mean": value + rng.normal(0, 0.2), "llc/std": 0.4, "synthetic/loss": loss_value})
    writer.flush()
    return steps


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A 400-step run with the loss and induction callbacks (no LLC). Do not modify: copy it."""
    root = tmp_path_factory.mktemp("runs")
    overrides = ["steps=400", "checkpoints.log=25", "checkpoints.linear=15", "progress=false", "task.vocab_size=16",
                 "task.seq_len=16", "task.eval_size=32", "batch_size=8", "model.d_model=16", "model.n_heads=2",
                 "callbacks=[loss,induction]", f"run_dir={root / 'run'}"]
    return run(compose_train_config(overrides), overrides).run_dir


@pytest.fixture(scope="module")
def run_with_llc(trained_run, tmp_path_factory):
    """A copy of `trained_run` with one synthetic LLC series (settings 'synthetic': A then B)."""
    run_dir = tmp_path_factory.mktemp("with_llc") / "run"
    shutil.copytree(trained_run, run_dir)
    write_synthetic_llc(run_dir, "synthetic")
    return run_dir
