"""Model outputs across checkpoints: the raw material of essential dynamics."""
from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from devinterp import checkpoints
from devinterp.store.run_dir import EVAL_TOKENS_FILE


@torch.no_grad()
def checkpoint_outputs(run_dir, steps: list[int] | None = None, num_examples: int = 32,
                       device: str = "cpu", progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(steps (n,), outputs (n, features)): each checkpoint's next-token log-probabilities on the
    first `num_examples` sequences of the run's fixed eval set, flattened (float32)."""
    if steps is None:
        steps = [info.step for info in checkpoints.list_checkpoints(run_dir)]
    tokens = load_file(f"{run_dir}/{EVAL_TOKENS_FILE}")["tokens"][:num_examples].to(device)
    rows = []
    for step in tqdm(steps, desc="outputs", unit="ckpt", disable=not progress):
        model = checkpoints.load(run_dir, step, device)
        rows.append(model(tokens).logits.log_softmax(-1).float().flatten().cpu().numpy())
    return np.asarray(steps), np.stack(rows)
