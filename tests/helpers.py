"""Small helpers shared by tests in several packages."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput, StageCurve
from devinterp.store import read_metrics


@contextmanager
def one_torch_thread():
    """Run the block with one torch thread, restoring the caller's count after: for tiny models (threads
    only add overhead) and for results compared bit for bit with forked one-thread children."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def callback_rows(run_dir: Path) -> pd.DataFrame:
    """The run's callback metrics (training rows dropped) as step, name, value, callback, in a fixed order."""
    frame = read_metrics(run_dir)
    frame = frame[frame.callback != "train"]
    return frame.sort_values(["step", "name"]).reset_index(drop=True)[["step", "name", "value", "callback"]]


def run_app(monkeypatch, main, *argv: str) -> int:
    """Run a command-line app's `main` with `argv` (program name first) and return its exit code."""
    monkeypatch.setattr("sys.argv", list(argv))
    try:
        main()
    except SystemExit as e:
        return e.code or 0
    return 0


class CurveCallback(Callback):
    """A callback whose curve is known: an A-B-A shape in ln(step + 1) (up to step `peak`, down to `dip`,
    up again), plus noise of std 0.3 seeded by the step: what adaptive schedules are tested on without
    the cost of an LLC."""

    name = "curve"
    stage_curve = StageCurve("curve/value", "curve/std")
    knots = ((0, 1.0), (20, 10.0), (80, 6.0), (300, 14.0))

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        x = np.log1p([k for k, _ in self.knots])
        value = float(np.interp(np.log1p(ctx.step), x, [v for _, v in self.knots]))
        noise = float(np.random.default_rng(ctx.seed).normal(0.0, 0.3))
        return CallbackOutput({"curve/value": value + noise, "curve/std": 0.3})
