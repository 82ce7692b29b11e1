"""Per-token evaluation losses (used by the `loss` callback)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


# Sequences per forward pass. On a CPU larger batches are slower per sequence, not faster: the
# explicit attention's (batch, heads, seq, seq) scores leave the cache (default model, 1 thread:
# batch 256 costs 1.6x batch 64 per sequence). On a GPU, raise it.
DEFAULT_EVAL_BATCH = 64


@torch.no_grad()
def token_losses(model: torch.nn.Module, tokens: torch.Tensor, batch_size: int = DEFAULT_EVAL_BATCH) -> torch.Tensor:
    """Per-token next-token cross-entropy (nats), shape (examples, seq_len - 1): column t is the
    loss of predicting token t+1 from tokens 0..t, in batches of `batch_size` sequences (forward
    passes only, without autograd). The model is put in eval mode and restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for chunk in tokens.split(batch_size):
        chunk = chunk.to(device)
        logits = model(chunk).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="none")
        chunks.append(loss.view(chunk.shape[0], -1).float().cpu())
    model.train(was_training)
    return torch.cat(chunks)
