"""Per-token evaluation losses (used by the `loss` callback)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def token_losses(model: torch.nn.Module, tokens: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Per-token next-token cross-entropy (nats), shape (examples, seq_len - 1): column t is the
    loss of predicting token t+1 from tokens 0..t. The model is put in eval mode and restored."""
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
