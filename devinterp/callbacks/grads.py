"""`grads`: gradient norm of the loss on the context's fixed training sample."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput
from devinterp.callbacks.weights import grouped_norms


@dataclass
class GradsSettings:
    num_samples: int = 256  # training sequences the loss is averaged over


class GradsCallback(Callback):
    """`grads/norm` and per-layer `grads/norm/<group>` of the mean next-token loss (nats, over the
    tokens the task scores) over the first `num_samples` sequences of the fixed training sample. The model's `.grad` fields
    are left untouched."""

    name = "grads"
    Settings = GradsSettings

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        tokens = ctx.train_tokens[: self.config.num_samples].to(ctx.device)
        named = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad]
        with torch.enable_grad():
            loss = ctx.model(tokens, labels=ctx.task.labels(tokens)).loss
            grads = torch.autograd.grad(loss, [p for _, p in named])
        return CallbackOutput(grouped_norms({n: g for (n, _), g in zip(named, grads)}, "grads"))
