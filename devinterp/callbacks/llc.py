"""`llc`: the local learning coefficient at a checkpoint (see devinterp.slt.estimate_llc).

Data: the first `num_samples` sequences of the run's fixed training sample (n = num_samples, so
the default nβ is n / log n). Loss: mean next-token cross-entropy in nats.
Optionally the weight-refined LLC per layer (`blocks.<l>.*`) or per attention head (that head's
slices of QKV and output projection; attention-only model), with the same settings.

Settings: with `step_size: auto` (the default) the run is calibrated once (`devinterp.slt.calibrate`
within the budget `max_batch_size`, `max_steps`, at the given nbeta and localization) and every
checkpoint of the run uses the stored result, so all are comparable. The reference checkpoint is,
post hoc over a finished run, the last due checkpoint; live (and following a run still training),
the first due checkpoint after the training loss has left its initial plateau (fallen by
PLATEAU_DROP of its initial value), or the last due one if it never does; with `reference: last`, the
last due one (a run whose loss falls from the first steps, like a language model's, is otherwise
calibrated on a barely trained model). Checkpoints before it are measured once it is calibrated.
Settings given as numbers are used as given (batch_size, num_draws, num_burnin also with
`step_size: auto`); with an explicit step_size, those left `auto` take FIXED_DEFAULTS. The record, with
the calibration's reason and problems, is `calibration/llc-<settings hash>.json` in the run directory.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from torch.utils.data import TensorDataset

from devinterp.callbacks.base import (Callback, CallbackContext, CallbackOutput, Deferred, StageCurve, positive,
                                      require)
from devinterp.models import head_parameter_masks
from devinterp.slt import calibrate, estimate_llc
from devinterp.slt.llc import PRECONDITIONERS
from devinterp.slt.sampler import SAMPLERS
from devinterp.store import checkpoints
from devinterp.store.calibration import read_calibration, write_calibration

AUTO = "auto"
FIXED_DEFAULTS = {"batch_size": 16, "num_burnin": 0, "num_draws": 100}
PLATEAU_DROP = 0.05
PLATEAU_WINDOW = 3  # checkpoints whose train losses are averaged (median) at either end
REFINED_MODES = ("none", "per_layer", "per_head")
REFERENCES = ("early", "last")


def next_token_loss(model, batch):
    """Mean next-token loss of a batch (tokens,) or (tokens, labels) (labels: see Task.labels)."""
    return model(batch[0], labels=batch[-1]).loss


@dataclass
class LLCSettings:
    num_chains: int = 4
    num_draws: Any = AUTO  # "auto" or a positive int
    num_burnin: Any = AUTO  # "auto" or an int >= 0
    step_size: Any = AUTO  # "auto" or a positive float
    nbeta: Optional[float] = None  # default n / log n with n = num_samples
    localization: float = 100.0
    batch_size: Any = AUTO  # "auto" or a positive int
    max_batch_size: int = 64  # auto: largest minibatch the calibration (and the noise check) may choose
    max_steps: int = 400  # auto: most SGLD steps per chain (burn-in + draws)
    sampler: str = "lm_sgld"  # or sgld, rmsprop_sgld (devinterp.slt.sampler)
    preconditioner: str = "diagonal"  # or none (devinterp.slt.preconditioning)
    num_samples: int = 1024
    refined: str = "none"  # none | per_layer | per_head
    reference: str = "early"  # live: calibrate on the first checkpoint past the initial plateau, or the last

    def __post_init__(self):
        # YAML reads 1e-3 as a string: numbers given as strings become numbers (validate() checks them).
        for key in ("step_size", "batch_size", "num_draws", "num_burnin"):
            value = getattr(self, key)
            if isinstance(value, str) and value != AUTO:
                try:
                    number = float(value)
                except ValueError:
                    continue
                setattr(self, key, number if key == "step_size" or number != int(number) else int(number))

    def validate(self) -> None:
        def auto_or(ok, key, why):
            value = getattr(self, key)
            require(value == AUTO or (not isinstance(value, (str, bool)) and ok(value)), key, value, why + ' (or "auto")')

        whole = lambda v: isinstance(v, int) or (isinstance(v, float) and v == int(v))  # noqa: E731
        auto_or(positive, "step_size", "must be a positive number")
        auto_or(lambda v: positive(v) and whole(v), "batch_size", "must be a positive integer")
        auto_or(lambda v: positive(v) and whole(v), "num_draws", "must be a positive integer")
        auto_or(lambda v: whole(v) and v >= 0, "num_burnin", "must be an integer >= 0")
        for key in ("num_chains", "num_samples", "max_batch_size"):
            require(positive(getattr(self, key)), key, getattr(self, key), "must be a positive integer")
        require(self.max_steps >= 200, "max_steps", self.max_steps, "must be >= 200 (burn-in and 100 draws)")
        require(self.nbeta is None or positive(self.nbeta), "nbeta", self.nbeta, "must be positive or null")
        require(self.localization >= 0, "localization", self.localization, "must be >= 0")
        require(self.localization > 0 or not self.auto, "localization", self.localization,
                'must be > 0 with step_size "auto" (calibration scales the step to it)')
        require(self.sampler in SAMPLERS, "sampler", self.sampler, f"not one of {', '.join(SAMPLERS)}")
        require(self.preconditioner in PRECONDITIONERS, "preconditioner", self.preconditioner,
                f"not one of {', '.join(PRECONDITIONERS)}")
        require(self.preconditioner == "none" or self.sampler != "rmsprop_sgld", "preconditioner",
                self.preconditioner, "needs sampler sgld or lm_sgld (rmsprop_sgld brings its own)")
        require(self.refined in REFINED_MODES, "refined", self.refined, f"not one of {', '.join(REFINED_MODES)}")
        require(self.reference in REFERENCES, "reference", self.reference, f"not one of {', '.join(REFERENCES)}")

    @property
    def auto(self) -> bool:
        return self.step_size == AUTO


class LLCCallback(Callback):
    """Scalars: `llc/mean`, `llc/std` (chain-to-chain), `llc/stderr`, `llc/init_loss`, the health verdict
    `llc/healthy` (1: no bias check failed) and `llc/precise` (1: ESS high enough; see
    `devinterp.slt.llc`) and what they rest on: `llc/rhat`, `llc/ess`, `llc/trend`, `llc/trend_z`,
    `llc/num_diverged`, `llc/noise_inflation`, `llc/fraction_below_init`, `llc/mean_distance`; the step used,
    `llc/step_size` and `llc/step_halvings` (`estimate_llc`'s stability retries), the burn-in run,
    `llc/num_burnin` (with `num_burnin: auto`, from the calibration's `min_burnin` up to its `num_burnin`, where
    the trace settles: `estimate_llc`'s settled burn-in), and the batch,
    `llc/batch_size` (with `batch_size: auto`, a checkpoint noisier than the calibrated one is measured again
    at a larger batch, up to `max_batch_size`: `estimate_llc`'s noise check); with `step_size: auto`,
    `llc/end_step_curvature`, ε·κ_P where a chain ended (above 2 the draws are taken again at a smaller step:
    `estimate_llc`'s step check); refined:
    `llc/layer<l>/mean|std|healthy|precise` or `llc/L<l>H<h>/...`.
    Arrays: `llc/loss_trace` (chains, draws), `llc/per_chain`."""

    name = "llc"
    Settings = LLCSettings
    stage_curve = StageCurve("llc/mean", "llc/std", "llc/healthy")

    def __init__(self, schedule=None, **settings):
        super().__init__(schedule, **settings)
        self._calibrations: dict = {}  # run directory (None: in memory only) -> its calibration record

    def settings_for(self, ctx: CallbackContext) -> dict:
        """The `estimate_llc` settings at this checkpoint: explicit, or the run's calibration."""
        c = self.config
        common = dict(num_chains=c.num_chains, nbeta=c.nbeta, localization=c.localization, sampler=c.sampler,
                      preconditioner=c.preconditioner)
        if not c.auto:
            explicit = {key: FIXED_DEFAULTS[key] if getattr(c, key) == AUTO else getattr(c, key)
                        for key in FIXED_DEFAULTS}
            return {**common, **explicit, "step_size": c.step_size}
        record = self.calibration(ctx)
        chosen = dict(record["settings"])
        for key in ("batch_size", "num_draws", "num_burnin"):
            if getattr(c, key) != AUTO:
                chosen[key] = getattr(c, key)
        if c.num_burnin != AUTO:  # a burn-in given as a number is run as given
            chosen.pop("min_burnin", None)
        if c.batch_size == AUTO:  # a checkpoint noisier than the calibrated one gets a larger batch
            chosen["max_batch_size"] = c.max_batch_size
        return {**common, **chosen, "step_check": True}

    def calibration(self, ctx: CallbackContext) -> dict:
        """The run's calibration record, made at this checkpoint if it is the reference one."""
        record = self._calibrations.get(ctx.run_dir)
        if record is None and ctx.run_dir is not None:
            record = read_calibration(ctx.run_dir, self.name, self.settings_hash)
        if record is None:
            if ctx.run_dir is not None and not is_reference_step(ctx, self.config.reference):
                raise Deferred("the LLC's calibration waits for its reference checkpoint")
            record = self._calibrate(ctx)
            if ctx.run_dir is not None:
                record = write_calibration(ctx.run_dir, self.name, self.settings_hash, record)
        self._calibrations[ctx.run_dir] = record
        return record

    def _calibrate(self, ctx: CallbackContext) -> dict:
        c = self.config
        fixed_batch = None if c.batch_size == AUTO else c.batch_size
        result = calibrate(ctx.model, next_token_loss, self._data(ctx), nbeta=c.nbeta, localization=c.localization,
                           num_chains=c.num_chains, min_batch_size=fixed_batch or min(16, c.max_batch_size),
                           max_batch_size=fixed_batch or c.max_batch_size, max_steps=c.max_steps,
                           curvature_samples=min(c.num_samples, 4 * (fixed_batch or c.max_batch_size)),
                           sampler=c.sampler, preconditioner=c.preconditioner, seed=ctx.seed, device=ctx.device)
        rec = result.recommended
        settings = {key: rec[key] for key in ("step_size", "batch_size", "num_draws", "num_burnin", "min_burnin",
                                              "nbeta", "stability_retries")}
        return {"reference_step": ctx.step, "settings": settings, "localization": rec["localization"],
                "localization_change": result.localization_change,
                "step_halving_change": result.step_halving_change, "reason": result.reason,
                "problems": result.problems, "table": result.table.to_dict(orient="records")}

    def _data(self, ctx: CallbackContext) -> TensorDataset:
        tokens = ctx.train_tokens[: self.config.num_samples].cpu()
        return TensorDataset(tokens, ctx.task.labels(tokens))

    def _estimate(self, ctx: CallbackContext, settings: dict, params=None):
        return estimate_llc(ctx.model, next_token_loss, self._data(ctx), params=params, seed=ctx.seed,
                            device=ctx.device, **settings)

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        settings = self.settings_for(ctx)
        result = self._estimate(ctx, settings)
        d = result.diagnostics
        scalars = {"llc/mean": result.mean, "llc/std": result.std, "llc/stderr": result.stderr,
                   "llc/init_loss": result.init_loss, "llc/healthy": float(result.healthy),
                   "llc/precise": float(result.precise)}
        for key in ("rhat", "ess", "trend", "trend_z", "num_diverged", "noise_inflation", "fraction_below_init",
                    "mean_distance", "step_size", "step_halvings", "batch_size", "num_burnin"):
            scalars[f"llc/{key}"] = float(d[key])
        if "end_step_curvature" in d:
            scalars["llc/end_step_curvature"] = float(d["end_step_curvature"])
        arrays = {"llc/loss_trace": np.asarray(result.loss_trace), "llc/per_chain": np.asarray(result.per_chain)}
        for label, params in self._refined_selectors(ctx.model):
            refined = self._estimate(ctx, settings, params)
            scalars[f"llc/{label}/mean"] = refined.mean
            scalars[f"llc/{label}/std"] = refined.std
            scalars[f"llc/{label}/healthy"] = float(refined.healthy)
            scalars[f"llc/{label}/precise"] = float(refined.precise)
        return CallbackOutput(scalars, arrays)

    def _refined_selectors(self, model):
        if self.config.refined == "per_layer":
            layers = model.config.n_layers if hasattr(model.config, "n_layers") else model.config.n_layer
            prefix = "blocks" if hasattr(model, "blocks") else "transformer.h"
            return [(f"layer{l}", f"{prefix}.{l}.*") for l in range(layers)]
        if self.config.refined == "per_head":
            if not hasattr(model, "blocks"):
                raise TypeError("callbacks.llc.refined=per_head needs the attention-only model")
            return [(f"L{l}H{h}", head_parameter_masks(model, l, h))
                    for l in range(model.config.n_layers) for h in range(model.config.n_heads)]
        return []


def is_reference_step(ctx: CallbackContext, reference: str = "early") -> bool:
    """Whether `ctx.step` is the checkpoint the run's LLC is calibrated on (module docstring); `reference`
    "last" makes a live run wait for its last due checkpoint too."""
    if ctx.run_finished:
        saved = {info.step for info in checkpoints.list_checkpoints(ctx.run_dir)}
        return ctx.step == max((s for s in ctx.due_steps if s in saved), default=ctx.step)
    if ctx.step >= max(ctx.due_steps, default=ctx.step):
        return True
    if reference == "last":
        return False
    losses = [info.train_loss for info in checkpoints.list_checkpoints(ctx.run_dir)
              if info.train_loss is not None and info.step <= ctx.step]
    return left_initial_plateau(losses)


def left_initial_plateau(train_losses: list[float]) -> bool:
    """Whether the latest train losses (median of PLATEAU_WINDOW) lie PLATEAU_DROP below the first ones."""
    if len(train_losses) < 2 * PLATEAU_WINDOW:
        return False
    start = statistics.median(train_losses[:PLATEAU_WINDOW])
    latest = statistics.median(train_losses[-PLATEAU_WINDOW:])
    return latest <= start - PLATEAU_DROP * abs(start)
