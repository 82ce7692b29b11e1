"""Model outputs across checkpoints: the raw material of essential dynamics."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from devinterp.store import checkpoints
from devinterp.store.run_dir import EVAL_TOKENS_FILE


@dataclass(frozen=True)
class CheckpointOutputs:
    steps: np.ndarray  # (n,) the checkpoints that could be loaded
    outputs: np.ndarray  # (n, features)
    skipped: list[checkpoints.CheckpointError] = field(default_factory=list)  # those that could not


@torch.no_grad()
def checkpoint_outputs(run_dir, steps: list[int] | None = None, num_examples: int = 32,
                       device: str = "cpu", progress: bool = False) -> CheckpointOutputs:
    """Each checkpoint's next-token log-probabilities on the first `num_examples` sequences of
    the run's fixed eval set, flattened (float32) (for a model that is not a language model: the
    log-softmax of its logits). A checkpoint that cannot be loaded is skipped and listed in `skipped`;
    ValueError if none loads or a model gives no logits."""
    if steps is None:
        steps = [info.step for info in checkpoints.list_checkpoints(run_dir)]
    tokens = load_file(f"{run_dir}/{EVAL_TOKENS_FILE}")["tokens"][:num_examples].to(device)
    loaded, rows, skipped = [], [], []
    for step in tqdm(steps, desc="outputs", unit="ckpt", disable=not progress):
        try:
            model = checkpoints.load(run_dir, step, device)
        except checkpoints.CheckpointError as e:
            skipped.append(e)
            continue
        logits = getattr(model(tokens), "logits", None)
        if not isinstance(logits, torch.Tensor):
            raise ValueError(f"the model saved at step {step} ({type(model).__name__}) gives no logits")
        loaded.append(step)
        rows.append(logits.log_softmax(-1).float().flatten().cpu().numpy())
    if not rows:
        raise ValueError("no checkpoint could be loaded")
    return CheckpointOutputs(np.asarray(loaded), np.stack(rows), skipped)
