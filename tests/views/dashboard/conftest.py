"""Shared helpers for the dashboard tests: synthetic run directories in the real layout.

`write_synthetic_run` writes what a finished training run plus a post-hoc analysis would leave
(config.yaml, status.json, one metrics part file per checkpoint named and typed as
`MetricsWriter` does, checkpoints/index.json, report/stages.csv) without training, saving
weights or fsyncing, so tests can build a ~100-checkpoint run in well under a second.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from devinterp.store import write_status
from devinterp.store import metrics as store
from devinterp.store.metrics import METRICS_DIRNAME
from devinterp.training.schedule import checkpoint_schedule

LAYERS, HEADS = 2, 4


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def synthetic_metrics(step: int, seed: int = 0) -> dict[str, float]:
    """Plausible metrics of a run with an induction bump around step 400 (A) then a B stage."""
    rng = np.random.default_rng(seed * 100_003 + step)
    bump = sigmoid((step - 400) / 40)
    metrics = {
        "eval/loss": 4.17 - 0.3 * (1 - np.exp(-step / 150)) - 1.7 * bump + 0.01 * rng.normal(),
        "eval/loss_repeated": 4.17 - 0.2 * (1 - np.exp(-step / 150)) - 3.9 * bump,
        "eval/loss_random": 4.17 - 0.05 * (1 - np.exp(-step / 150)),
        "eval/icl_score": -3.5 * bump + 0.02 * rng.normal(),
        "llc/mean": 20 + 60 * bump - 15 * sigmoid((step - 900) / 80) + rng.normal(),
        "llc/std": 2 + 3 * bump,
        "llc/healthy": float(step % 7 != 3),  # some estimates fail a health check
        "hessian/top_1": 5 + 40 * np.exp(-((step - 420) / 60) ** 2) + 0.5 * rng.normal(),
        "hessian/trace": 300 + 900 * bump + 5 * rng.normal(),
    }
    for layer in range(LAYERS):
        for head in range(HEADS):
            strength = bump if (layer, head) in {(1, 0), (1, 2)} else 0.05
            prev = sigmoid((step - 350) / 40) if (layer, head) == (0, 1) else 0.05
            metrics[f"induction/prefix_matching/L{layer}H{head}"] = 0.9 * strength + 0.02 * rng.random()
            metrics[f"induction/previous_token/L{layer}H{head}"] = 0.9 * prev + 0.02 * rng.random()
    return metrics


def write_part(run_dir: Path, rows: list[tuple[int, str, float]]) -> None:
    store.write_part(run_dir, rows, callback="train", settings="")


def write_synthetic_run(run_dir: Path, steps: int = 2000, n_log: int = 50, n_linear: int = 60,
                        state: str = "finished", seed: int = 0, stages: bool = True) -> list[int]:
    """Write a synthetic run; returns its checkpoint steps (about n_log + n_linear of them)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"name: synthetic\nseed: {seed}\nsteps: {steps}\n")
    schedule = checkpoint_schedule(steps, n_log, n_linear)
    (run_dir / METRICS_DIRNAME).mkdir()
    index = []
    train_steps = set(range(0, steps, 5))
    done = 0
    for ckpt in schedule:
        rows = []
        for step in sorted(s for s in train_steps if done <= s < ckpt):
            rows += [(step, "train/loss", synthetic_metrics(step, seed)["eval/loss"] + 0.03), (step, "train/lr", 1e-3)]
        done = ckpt
        rows += [(ckpt, name, value) for name, value in synthetic_metrics(ckpt, seed).items()]
        write_part(run_dir, rows)  # one part file per checkpoint, as the trainer does
        index.append({"step": ckpt, "path": f"checkpoints/step_{ckpt:07d}", "train_loss": None,
                      "wall_time": ckpt / 40, "bytes": 573549})
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "index.json").write_text(json.dumps(index))
    if stages:
        (run_dir / "report").mkdir()
        (run_dir / "report" / "stages.csv").write_text(
            "start_step,end_step,type\n0,300,other\n300,520,A\n520,1100,B\n1100,2000,other\n")
    write_status(run_dir, state, steps)
    return schedule


@pytest.fixture
def synthetic_run(tmp_path):
    """Factory: synthetic_run(name, **kwargs) -> run directory under tmp_path/'runs'."""
    def make(name: str = "synthetic/seed0", **kwargs) -> Path:
        run_dir = tmp_path / "runs" / name
        write_synthetic_run(run_dir, **kwargs)
        return run_dir

    return make

