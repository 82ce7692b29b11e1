"""`hessian`: the loss Hessian's extreme eigenvalues, trace and near-zero spectral mass
(see devinterp.hessian.hessian_spectrum), on the first `num_samples` sequences of the run's
fixed training sample, split into batches of `batch_size` (loss: mean next-token cross-entropy
over the tokens the task scores, nats; eigenvalues in nats per unit parameter squared)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput
from devinterp.callbacks.llc import next_token_loss


@dataclass
class HessianSettings:
    top_k: int = 3
    bottom_k: int = 1
    trace_probes: int = 5
    density: bool = True
    density_probes: int = 1
    lanczos_steps: int = 30
    tol: float = 1e-3
    num_samples: int = 16
    batch_size: int = 16


class HessianCallback(Callback):
    """Scalars `hessian/top_<i>`, `hessian/bottom_<i>`, `hessian/trace`, `hessian/trace_stderr`,
    `hessian/mass_near_zero`, `hessian/num_hvps`, `hessian/converged`. Arrays: the smoothed
    density (`hessian/density_grid`, `hessian/density`) when `density` is on."""

    name = "hessian"
    Settings = HessianSettings

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        from devinterp.hessian import hessian_spectrum

        c = self.config
        tokens = ctx.train_tokens[: c.num_samples]
        batches = list(zip(tokens.split(c.batch_size), ctx.task.labels(tokens).split(c.batch_size)))
        result = hessian_spectrum(ctx.model, next_token_loss, batches, top_k=c.top_k, bottom_k=c.bottom_k,
                                  trace_probes=c.trace_probes, density=c.density, density_probes=c.density_probes,
                                  lanczos_steps=c.lanczos_steps, seed=ctx.seed, tol=c.tol, device=ctx.device)
        summary = result.summary()
        summary.pop("seconds", None)  # timing is not a measurement of the model
        scalars = {f"hessian/{name}": value for name, value in summary.items()}
        arrays = {}
        if result.density is not None:
            arrays = {"hessian/density_grid": np.asarray(result.density.grid),
                      "hessian/density": np.asarray(result.density.values)}
        return CallbackOutput(scalars, arrays)
