"""A model measured with its own loss function, as the callbacks see it.

The callbacks compute every loss as `model(inputs, labels=labels).loss` (the Hugging Face convention:
the mean next-token cross-entropy of a causal language model; see `devinterp.callbacks.llc.next_token_loss`).
A run that brings its own `loss_fn(model, batch)` (`devinterp.Monitor(loss_fn=...)`: a custom loss, a
model that is not a language model) is measured through `CustomLossModel`, whose forward returns that
loss: the LLC, the Hessian and the gradients then see the user's loss, unchanged. `batch` is the pair
`(inputs, labels)` of rows of the run's data; labels are the inputs themselves when the data has none.

The wrapper holds the model as its submodule `model`, so its parameter names carry the prefix `model.`;
`prefixed` gives the step-0 weights the same names. It has no logits: callbacks that need them
(`loss`'s per-token scores, `induction`) take the loss-only path or say that they do not apply.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from hydra.utils import get_method

LossFn = Callable[[torch.nn.Module, tuple], torch.Tensor]
PREFIX = "model."


@dataclass
class LossOutput:
    """What `CustomLossModel.forward` returns: the loss, and no logits."""

    loss: torch.Tensor
    logits: None = None


class CustomLossModel(torch.nn.Module):
    """`model` with its loss function: `forward(inputs, labels)` returns `loss_fn(model, (inputs, labels))`."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None, **_ignored) -> LossOutput:
        return LossOutput(self.loss_fn(self.model, (inputs, inputs if labels is None else labels)))


def with_loss(model: torch.nn.Module, loss_fn: LossFn | None) -> torch.nn.Module:
    """The model as the callbacks measure it: itself, or wrapped with its own loss function."""
    return model if loss_fn is None else CustomLossModel(model, loss_fn)


def prefixed(state: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """Weights named as the wrapper names them (`model.<name>`)."""
    return None if state is None else {PREFIX + name: value for name, value in state.items()}


@torch.no_grad()
def batched_loss(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """The mean of `model(inputs, labels=labels).loss` over batches of `batch_size` rows, each weighted by
    its rows (the loss of a model with its own loss function over a whole set: mean per row)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    for chunk, chunk_labels in zip(inputs.split(batch_size), labels.split(batch_size)):
        total += float(model(chunk.to(device), labels=chunk_labels.to(device)).loss) * len(chunk)
    model.train(was_training)
    return total / max(len(inputs), 1)


def loss_fn_name(loss_fn: LossFn | None) -> str | None:
    """How a run's config names its loss function: `module.qualname` when importing that finds this very
    function (post-hoc analysis then measures with it too); None for none. A lambda, a closure or a
    function of `__main__` has no such name: ValueError says so."""
    if loss_fn is None:
        return None
    module, qualname = getattr(loss_fn, "__module__", None), getattr(loss_fn, "__qualname__", "")
    name = f"{module}.{qualname}"
    if module and module != "__main__" and "<" not in qualname:
        try:
            if import_loss_fn(name) is loss_fn:
                return name
        except ValueError:
            pass
    raise ValueError(f"loss_fn={loss_fn!r}: not importable by name ({name}); define it at the top level of a module")


def import_loss_fn(name: str) -> LossFn:
    """The loss function a run's config names (`loss_fn_name`); ValueError if it cannot be imported."""
    try:
        return get_method(name)
    except Exception as e:  # ImportError, AttributeError, ... (hydra wraps them)
        raise ValueError(f"loss_fn={name}: cannot be imported ({str(e).splitlines()[0][:160]})") from None
