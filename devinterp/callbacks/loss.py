"""`loss`: held-out and training loss and accuracy, per-position eval loss, the task's own summaries."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput, positive, require
from devinterp.callbacks.custom_loss import CustomLossModel, batched_loss
from devinterp.callbacks.token_scores import DEFAULT_EVAL_BATCH, token_scores


@dataclass
class LossSettings:
    batch_size: int = DEFAULT_EVAL_BATCH  # sequences per forward pass (see devinterp.callbacks.token_scores)

    def validate(self) -> None:
        require(positive(self.batch_size), "batch_size", self.batch_size, "must be a positive integer")


class LossCallback(Callback):
    """Scalars: `eval/loss` (nats) and `eval/accuracy` on the fixed eval set, `train/fixed_loss` and
    `train/fixed_accuracy` on the context's fixed training sample, each over the tokens the task
    scores (`Task.labels`; accuracy: argmax prediction right), plus the task's summaries of the
    per-token eval losses (e.g. `eval/loss_repeated`, `eval/icl_score`). Array:
    `eval/loss_by_position` (seq_len - 1,), the mean scored loss of predicting token t+1 at column t
    (NaN at a column the task does not score).

    A model measured with its own loss function (`devinterp.callbacks.custom_loss`) gets `eval/loss` and
    `train/fixed_loss` only: that loss's mean over the rows of each set."""

    name = "loss"
    Settings = LossSettings

    def unsupported(self, model: torch.nn.Module, eval_tokens: torch.Tensor) -> str | None:
        if isinstance(model, CustomLossModel):
            return None
        if eval_tokens.is_floating_point() or eval_tokens.dim() != 2:
            return f"its inputs are not rows of token ids (shape {tuple(eval_tokens.shape)}): give a loss_fn"
        with torch.no_grad():
            logits = getattr(model(eval_tokens[:1].to(next(model.parameters()).device)), "logits", None)
        if logits is None or logits.dim() != 3 or logits.shape[1] != eval_tokens.shape[1]:
            shape = "none" if logits is None else tuple(logits.shape)
            return (f"the model's output has no next-token logits (logits: {shape}, inputs "
                    f"{tuple(eval_tokens[:1].shape)}): give a loss_fn to measure its loss")
        return None

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        size = self.config.batch_size
        if isinstance(ctx.model, CustomLossModel):
            return CallbackOutput({
                "eval/loss": batched_loss(ctx.model, ctx.eval_tokens, ctx.task.labels(ctx.eval_tokens), size),
                "train/fixed_loss": batched_loss(ctx.model, ctx.train_tokens, ctx.task.labels(ctx.train_tokens), size),
            })
        evaluation = token_scores(ctx.model, ctx.eval_tokens, ctx.task.labels(ctx.eval_tokens), size)
        training = token_scores(ctx.model, ctx.train_tokens, ctx.task.labels(ctx.train_tokens), size)
        scalars = {
            "eval/loss": evaluation.mean_loss(),
            "eval/accuracy": evaluation.accuracy(),
            "train/fixed_loss": training.mean_loss(),
            "train/fixed_accuracy": training.accuracy(),
            **ctx.task.eval_metrics(evaluation.losses),
        }
        return CallbackOutput(scalars, {"eval/loss_by_position": evaluation.loss_by_position().numpy()})
