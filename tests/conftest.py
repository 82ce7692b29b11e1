import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

# Small, fast training configs shared by the trainer and CLI tests.
TINY = ["steps=30", "checkpoints.log=4", "checkpoints.linear=4", "progress=false",
        "task.vocab_size=16", "task.seq_len=16", "task.eval_size=32", "batch_size=8",
        "model.d_model=16", "model.n_heads=2"]


@pytest.fixture
def tiny_overrides(tmp_path):
    return [*TINY, f"runs_root={tmp_path / 'runs'}"]
