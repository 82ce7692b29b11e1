"""`grads`: gradient norm of the loss on the context's fixed training sample."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput, positive, require
from devinterp.callbacks.custom_loss import CustomLossModel
from devinterp.callbacks.weights import grouped_norms
from devinterp.tasks.base import IGNORE_INDEX
from devinterp.callbacks.token_scores import DEFAULT_EVAL_BATCH


@dataclass
class GradsSettings:
    num_samples: int = 256  # training sequences the loss is averaged over
    batch_size: int = DEFAULT_EVAL_BATCH  # sequences per forward+backward pass (the gradient is the same)

    def validate(self) -> None:
        require(positive(self.num_samples), "num_samples", self.num_samples, "must be a positive integer")


class GradsCallback(Callback):
    """`grads/norm` and per-layer `grads/norm/<group>` of the mean next-token loss (nats, over the
    tokens the task scores) over the first `num_samples` sequences of the fixed training sample,
    accumulated over batches of `batch_size` (each weighted by its share of the scored tokens; by its share
    of the rows where the labels are not per token, e.g. a model measured with its own loss function). The
    model's `.grad` fields are left untouched."""

    name = "grads"
    Settings = GradsSettings

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        tokens = ctx.train_tokens[: self.config.num_samples]
        named = [(n, p) for n, p in ctx.model.named_parameters() if p.requires_grad]
        labels = ctx.task.labels(tokens)
        per_token = not isinstance(ctx.model, CustomLossModel) and labels.dim() == 2 and labels.shape == tokens.shape
        weights = (labels[:, 1:] != IGNORE_INDEX).sum(1) if per_token else torch.ones(len(labels))
        total_weight = weights.sum().clamp(min=1)
        totals = [torch.zeros_like(p) for _, p in named]
        for chunk, chunk_labels, chunk_weights in zip(tokens.split(self.config.batch_size),
                                                      labels.split(self.config.batch_size),
                                                      weights.split(self.config.batch_size)):
            chunk, chunk_labels = chunk.to(ctx.device), chunk_labels.to(ctx.device)
            share = float(chunk_weights.sum() / total_weight)
            if share == 0:
                continue
            with torch.enable_grad():
                loss = ctx.model(chunk, labels=chunk_labels).loss * share
                grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True, materialize_grads=True)
            for total, grad in zip(totals, grads):
                total += grad
        return CallbackOutput(grouped_norms({n: g for (n, _), g in zip(named, totals)}, "grads"))
