"""`hessian`: the loss Hessian's extreme eigenvalues, trace and near-zero spectral mass
(see devinterp.hessian.hessian_spectrum), on the first `num_samples` sequences of the run's
fixed training sample, split into batches of `batch_size` (loss: mean next-token cross-entropy
over the tokens the task scores, nats; eigenvalues in nats per unit parameter squared).

Cost per checkpoint, in Hessian-vector products: the Lanczos steps until the top eigenvalues have
converged (<= lanczos_steps; 13-30 on the default induction run) + trace_probes; with density_probes=1
the density comes from that same Lanczos run at no extra cost (each further probe costs
lanczos_steps - 1). On the default induction run that is ~40% of what a separate 30-step density
probe and the residual-based stopping rule cost (scripts/bench_hessian.py measures it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from devinterp.callbacks.base import Callback, CallbackContext, CallbackOutput, StageCurve, positive, require
from devinterp.callbacks.llc import next_token_loss
from devinterp.hessian import hessian_spectrum


@dataclass
class HessianSettings:
    top_k: int = 3
    bottom_k: int = 1
    trace_probes: int = 5
    density: bool = True
    density_probes: int = 1  # the first probe is the eigenvalue run itself (free)
    lanczos_steps: int = 30
    tol: float = 1e-3  # top eigenvalues: estimated relative error
    bottom_tol: float = 1e-2  # bottom eigenvalues: estimated error relative to the top one (~||H||)
    guard: int = 1  # also converge this many more top values (against a missed eigenvalue)
    num_samples: int = 16
    batch_size: int = 16

    def validate(self) -> None:
        for key in ("top_k", "bottom_k", "trace_probes"):
            require(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        require(self.top_k + self.bottom_k >= 1, "top_k", self.top_k, "top_k and bottom_k cannot both be 0")
        for key in ("lanczos_steps", "num_samples", "batch_size"):
            require(positive(getattr(self, key)), key, getattr(self, key), "must be a positive integer")
        require(not self.density or positive(self.density_probes), "density_probes", self.density_probes,
                "must be positive when density is on")
        require(self.lanczos_steps >= self.top_k + self.bottom_k, "lanczos_steps", self.lanczos_steps,
                f"must be at least top_k + bottom_k = {self.top_k + self.bottom_k}")
        require(positive(self.tol), "tol", self.tol, "must be positive")


class HessianCallback(Callback):
    """Scalars `hessian/top_<i>`, `hessian/bottom_<i>`, `hessian/trace`, `hessian/trace_stderr`,
    `hessian/mass_near_zero`, `hessian/num_hvps`, `hessian/converged`. Arrays: the smoothed
    density (`hessian/density_grid`, `hessian/density`) when `density` is on."""

    name = "hessian"
    Settings = HessianSettings
    stage_curve = StageCurve("hessian/trace", "hessian/trace_stderr")

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        c = self.config
        tokens = ctx.train_tokens[: c.num_samples]
        batches = list(zip(tokens.split(c.batch_size), ctx.task.labels(tokens).split(c.batch_size)))
        result = hessian_spectrum(ctx.model, next_token_loss, batches, top_k=c.top_k, bottom_k=c.bottom_k,
                                  trace_probes=c.trace_probes, density=c.density, density_probes=c.density_probes,
                                  lanczos_steps=c.lanczos_steps, seed=ctx.seed, tol=c.tol, bottom_tol=c.bottom_tol,
                                  guard=c.guard, device=ctx.device)
        summary = result.summary()
        summary.pop("seconds", None)  # timing is not a measurement of the model
        scalars = {f"hessian/{name}": value for name, value in summary.items()}
        arrays = {}
        if result.density is not None:
            arrays = {"hessian/density_grid": np.asarray(result.density.grid),
                      "hessian/density": np.asarray(result.density.values)}
        return CallbackOutput(scalars, arrays)
