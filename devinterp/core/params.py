"""Parameter selectors shared by the LLC estimator and the Hessian code.

A selector names which weights an analysis acts on:
- `None`: every parameter of the model, entirely;
- a string or a sequence of strings: parameter names or `fnmatch` glob patterns
  (e.g. `"blocks.0.*"`), each of which must match at least one parameter;
- a mapping `{name: bool tensor}` of per-tensor masks with the parameter's shape
  (e.g. one attention head's rows of a fused QKV matrix: see
  `devinterp.models.attention_only.head_parameter_masks`).

`select_parameters` resolves any of these to `{name: bool mask}` in the model's parameter order,
containing only parameters with at least one selected entry.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

import torch

ParamSelector = None | str | Sequence[str] | Mapping[str, torch.Tensor]


def select_parameters(model: torch.nn.Module, params: ParamSelector = None) -> dict[str, torch.Tensor]:
    named = dict(model.named_parameters())
    if params is None:
        return {name: torch.ones_like(p, dtype=torch.bool) for name, p in named.items()}
    if isinstance(params, Mapping):
        masks = {}
        for name, mask in params.items():
            if name not in named:
                raise KeyError(f"params: no parameter named {name!r} in {type(model).__name__}")
            mask = torch.as_tensor(mask, dtype=torch.bool, device=named[name].device)
            if mask.shape != named[name].shape:
                raise ValueError(
                    f"params: mask for {name!r} has shape {tuple(mask.shape)}, "
                    f"parameter has {tuple(named[name].shape)}"
                )
            masks[name] = mask
        order = list(named)
        return {n: masks[n] for n in sorted(masks, key=order.index) if masks[n].any()}
    patterns = [params] if isinstance(params, str) else list(params)
    if not patterns:
        raise ValueError("params: empty selector (use None for all parameters)")
    selected = set()
    for pattern in patterns:
        matches = [n for n in named if fnmatch.fnmatchcase(n, pattern)]
        if not matches:
            raise KeyError(f"params: pattern {pattern!r} matches no parameter of {type(model).__name__}")
        selected.update(matches)
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in named.items() if n in selected}
