"""Per-token evaluation losses and hits (used by the `loss` callback)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from devinterp.tasks.base import IGNORE_INDEX


@dataclass(frozen=True)
class TokenScores:
    """Per-token results, each (examples, seq_len - 1): column t is about predicting token t+1
    from tokens 0..t. `losses`: cross-entropy (nats); `hits`: whether the most likely token is
    the right one; `scored`: whether the task's labels score that token (see Task.labels)."""

    losses: torch.Tensor
    hits: torch.Tensor
    scored: torch.Tensor

    def mean_loss(self) -> float:
        """Mean loss over the scored tokens (nats): the task's loss."""
        return float(self.losses[self.scored].mean())

    def accuracy(self) -> float:
        """Fraction of the scored tokens predicted right (argmax)."""
        return float(self.hits[self.scored].float().mean())

    def loss_by_position(self) -> torch.Tensor:
        """(seq_len - 1,) mean loss of the scored tokens per column; NaN where none is scored."""
        total = torch.where(self.scored, self.losses, 0.0).sum(0)
        count = self.scored.sum(0)
        return torch.where(count > 0, total / count.clamp(min=1), float("nan"))


# Sequences per forward pass. On a CPU larger batches are slower per sequence, not faster: the
# explicit attention's (batch, heads, seq, seq) scores leave the cache (default model, 1 thread:
# batch 256 costs 1.6x batch 64 per sequence). On a GPU, raise it.
DEFAULT_EVAL_BATCH = 64


@torch.inference_mode()  # forward passes only: lets a model pick a fused kernel (models.attention_only)
def token_scores(model: torch.nn.Module, tokens: torch.Tensor, labels: torch.Tensor | None = None,
                 batch_size: int = DEFAULT_EVAL_BATCH) -> TokenScores:
    """Per-token losses and hits of `model` on `tokens`, in batches of `batch_size` sequences (forward
    passes only, without autograd); `labels` (same shape, IGNORE_INDEX where a token is not scored;
    default: `tokens`, every token scored) say which count. The model is put in eval mode and restored."""
    labels = tokens if labels is None else labels
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses, hits = [], []
    for chunk in tokens.split(batch_size):
        chunk = chunk.to(device)
        logits = model(chunk).logits[:, :-1]
        targets = chunk[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        losses.append(loss.view(chunk.shape[0], -1).float().cpu())
        hits.append((logits.argmax(-1) == targets).cpu())
    model.train(was_training)
    return TokenScores(torch.cat(losses), torch.cat(hits), labels[:, 1:] != IGNORE_INDEX)

