"""`loss`: held-out and training loss, per-position eval loss, the task's own summaries."""
from __future__ import annotations

from dataclasses import dataclass

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput, positive, require
from devinterp.training.evaluate import DEFAULT_EVAL_BATCH, token_losses


@dataclass
class LossSettings:
    batch_size: int = DEFAULT_EVAL_BATCH  # sequences per forward pass (see devinterp.training.evaluate)

    def validate(self) -> None:
        require(positive(self.batch_size), "batch_size", self.batch_size, "must be a positive integer")


class LossCallback(Callback):
    """Scalars (nats): `eval/loss` (mean next-token loss on the fixed eval set), `train/fixed_loss`
    (on the context's fixed training sample), plus the task's summaries (e.g.
    `eval/loss_repeated`, `eval/icl_score`). Array: `eval/loss_by_position` (seq_len - 1,), the
    mean loss of predicting token t+1 at column t."""

    name = "loss"
    Settings = LossSettings

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        eval_losses = token_losses(ctx.model, ctx.eval_tokens, self.config.batch_size)
        train_losses = token_losses(ctx.model, ctx.train_tokens, self.config.batch_size)
        scalars = {
            "eval/loss": float(eval_losses.mean()),
            "train/fixed_loss": float(train_losses.mean()),
            **ctx.task.eval_metrics(eval_losses),
        }
        return CallbackOutput(scalars, {"eval/loss_by_position": eval_losses.mean(0).numpy()})
