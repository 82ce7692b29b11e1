"""Small helpers shared by tests in several packages."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

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
