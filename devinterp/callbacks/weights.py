"""`weights`: parameter norms, LayerNorm gains and distance travelled from initialisation."""
from __future__ import annotations

import re

import torch

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput


def parameter_group(name: str) -> str:
    """Group a parameter name by its layer: up to the first numeric component
    ('blocks.0.attn.qkv.weight' -> 'blocks.0'), else its module ('embed.weight' -> 'embed')."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if re.fullmatch(r"\d+", part):
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or name


def grouped_norms(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
    """Global L2 norm (`<prefix>/norm`) and one per layer group (`<prefix>/norm/<group>`)."""
    squares: dict[str, float] = {}
    for name, tensor in tensors.items():
        group = parameter_group(name)
        squares[group] = squares.get(group, 0.0) + float(tensor.double().pow(2).sum())
    out = {f"{prefix}/norm": sum(squares.values()) ** 0.5}
    out.update({f"{prefix}/norm/{group}": value**0.5 for group, value in squares.items()})
    return out


def layer_norm_gains(model: torch.nn.Module) -> dict[str, float]:
    """Mean absolute gain (the elementwise `weight`) of every LayerNorm module, by module name
    (`weights/ln_gain/<module>`), and their mean over modules (`weights/ln_gain`). A LayerNorm
    without a learnable gain is skipped; no LayerNorm at all gives an empty dict."""
    gains = {f"weights/ln_gain/{name}": float(module.weight.detach().abs().mean())
             for name, module in model.named_modules()
             if isinstance(module, torch.nn.LayerNorm) and module.weight is not None}
    if gains:
        gains["weights/ln_gain"] = sum(gains.values()) / len(gains)
    return gains


class WeightsCallback(Callback):
    """`weights/norm`, per-layer `weights/norm/<group>`, LayerNorm gains (`weights/ln_gain`, the
    mean over modules, and `weights/ln_gain/<module>`: see `layer_norm_gains`) and
    `weights/distance_from_init` (L2 distance to the step-0 weights, when the context knows them)."""

    name = "weights"

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        params = {n: p.detach() for n, p in ctx.model.named_parameters()}
        scalars = grouped_norms(params, "weights")
        scalars.update(layer_norm_gains(ctx.model))
        if ctx.initial_state is not None:
            deltas = {n: p - ctx.initial_state[n].to(p.device) for n, p in params.items() if n in ctx.initial_state}
            scalars["weights/distance_from_init"] = grouped_norms(deltas, "d")["d/norm"]
        return CallbackOutput(scalars)
