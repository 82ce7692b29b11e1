"""`loss`: held-out and training loss and accuracy, per-position eval loss, the task's own summaries."""
from __future__ import annotations

from dataclasses import dataclass

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput, positive, require
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
    (NaN at a column the task does not score)."""

    name = "loss"
    Settings = LossSettings

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        size = self.config.batch_size
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
