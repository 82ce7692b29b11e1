"""`llc`: the local learning coefficient at a checkpoint (see devinterp.slt.estimate_llc).

Data: the first `num_samples` sequences of the run's fixed training sample (n = num_samples, so
the default nβ is n / log n). Loss: mean next-token cross-entropy in nats.
Optionally the weight-refined LLC per layer (`blocks.<l>.*`) or per attention head (that head's
slices of QKV and output projection; attention-only model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from torch.utils.data import TensorDataset

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput


def next_token_loss(model, batch):
    """Mean next-token loss of a batch (tokens,) or (tokens, labels) (labels: see Task.labels)."""
    return model(batch[0], labels=batch[-1]).loss


@dataclass
class LLCSettings:
    num_chains: int = 4
    num_draws: int = 100
    num_burnin: int = 0
    step_size: float = 1e-3
    nbeta: Optional[float] = None  # default n / log n with n = num_samples
    localization: float = 100.0
    batch_size: int = 16
    sampler: str = "sgld"  # or rmsprop_sgld
    num_samples: int = 1024
    refined: str = "none"  # none | per_layer | per_head


class LLCCallback(Callback):
    """Scalars: `llc/mean`, `llc/std` (chain-to-chain), `llc/init_loss`, and diagnostics
    `llc/rhat`, `llc/ess`, `llc/fraction_below_init`, `llc/num_diverged`, `llc/mean_distance`;
    refined: `llc/layer<l>/mean|std` or `llc/L<l>H<h>/mean|std`.
    Arrays: `llc/loss_trace` (chains, draws), `llc/per_chain`."""

    name = "llc"
    Settings = LLCSettings

    def __init__(self, schedule=None, **settings):
        super().__init__(schedule, **settings)
        if self.config.refined not in ("none", "per_layer", "per_head"):
            from devinterp.config import ConfigError

            raise ConfigError(f"callbacks.llc.refined={self.config.refined!r}: not one of none, per_layer, per_head")

    def _estimate(self, ctx: CallbackContext, params=None):
        from devinterp.slt import estimate_llc

        c = self.config
        tokens = ctx.train_tokens[: c.num_samples].cpu()
        data = TensorDataset(tokens, ctx.task.labels(tokens))
        return estimate_llc(ctx.model, next_token_loss, data, num_chains=c.num_chains, num_draws=c.num_draws,
                            num_burnin=c.num_burnin, step_size=c.step_size, nbeta=c.nbeta,
                            localization=c.localization, batch_size=c.batch_size, sampler=c.sampler,
                            params=params, seed=ctx.seed, device=ctx.device)

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        result = self._estimate(ctx)
        d = result.diagnostics
        scalars = {"llc/mean": result.mean, "llc/std": result.std, "llc/init_loss": result.init_loss,
                   "llc/rhat": d["rhat"], "llc/ess": d["ess"], "llc/fraction_below_init": d["fraction_below_init"],
                   "llc/num_diverged": d["num_diverged"], "llc/mean_distance": d["mean_distance"]}
        arrays = {"llc/loss_trace": np.asarray(result.loss_trace), "llc/per_chain": np.asarray(result.per_chain)}
        for label, params in self._refined_selectors(ctx.model):
            refined = self._estimate(ctx, params)
            scalars[f"llc/{label}/mean"] = refined.mean
            scalars[f"llc/{label}/std"] = refined.std
        return CallbackOutput(scalars, arrays)

    def _refined_selectors(self, model):
        if self.config.refined == "per_layer":
            layers = model.config.n_layers if hasattr(model.config, "n_layers") else model.config.n_layer
            prefix = "blocks" if hasattr(model, "blocks") else "transformer.h"
            return [(f"layer{l}", f"{prefix}.{l}.*") for l in range(layers)]
        if self.config.refined == "per_head":
            from devinterp.models import head_parameter_masks

            if not hasattr(model, "blocks"):
                raise TypeError("callbacks.llc.refined=per_head needs the attention-only model")
            return [(f"L{l}H{h}", head_parameter_masks(model, l, h))
                    for l in range(model.config.n_layers) for h in range(model.config.n_heads)]
        return []
