"""Local learning coefficient (LLC) estimation by SGLD on the localized tempered posterior.

Conventions (Lau et al. 2023, arXiv 2308.12108):

    λ̂(w*) = nβ · ( E_w[L_n(w)] − L_n(w*) ),
    p(w) ∝ exp( −nβ L_n(w) − (γ/2) ‖w − w*‖² ),

sampled with SGLD, w ← w − (ε/2)(nβ ∇L_batch(w) + γ (w − w*)) + N(0, ε I).

- L_n is the mean of `loss_fn` over the dataset, in the units `loss_fn` returns (nats for a negative
  log-likelihood). For λ̂ to estimate the learning coefficient λ, `loss_fn` must be the per-sample
  negative log-likelihood: e.g. ½‖y − f(x)‖²/σ² for Gaussian regression, not `F.mse_loss` (which
  divides by the output dimension and drops the ½).
- nβ defaults to n / log n with **n = len(data), the number of samples in the dataset** (β = 1/log n,
  Watanabe's WBIC temperature). The devinterp library's `default_nbeta` uses the *batch* size
  instead; pass `nbeta=` explicitly to match it.
- L_n(w*) (`init_loss`) is the loss over the whole dataset, evaluated in fixed sequential batches.
- E_w[L_n(w)] is the mean over post-burn-in draws of the minibatch loss recorded from the same
  forward pass that gives the gradient, i.e. before the update (recording it after the update on the
  same minibatch biases λ̂ downward).
- The estimate is the mean over chains of per-chain estimates; `std` is their sample standard
  deviation (ddof = 1, NaN with a single surviving chain).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from devinterp.params import ParamSelector
from devinterp.slt.diagnostics import effective_sample_size, split_rhat
from devinterp.slt.sampler import FunctionalProblem, LossFn, run_chains


@dataclass(frozen=True)
class LLCResult:
    """Result of `estimate_llc`.

    mean: λ̂ averaged over the chains that did not diverge (NaN, with a warning, if all diverged).
    std: sample standard deviation of the per-chain λ̂ (ddof = 1).
    per_chain: (chains,) per-chain λ̂; NaN for a diverged chain.
    loss_trace: (chains, draws) minibatch loss of each post-burn-in draw, in `loss_fn` units
        (NaN from the step a chain diverged).
    init_loss: L_n(w*), the loss over the whole dataset at the starting weights.
    nbeta: the nβ used.
    diagnostics: see `estimate_llc`.
    """

    mean: float
    std: float
    per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    nbeta: float
    diagnostics: dict = field(default_factory=dict)

    @property
    def llc_trace(self) -> np.ndarray:
        """(chains, draws) nβ·(L_batch(w_t) − L_n(w*)): per-draw contributions to λ̂."""
        return self.nbeta * (self.loss_trace - self.init_loss)


def default_nbeta(n: int) -> float:
    """nβ = n / log n for a dataset of n samples."""
    if n < 2:
        raise ValueError(f"need at least 2 samples for nβ = n / log n, got n={n}")
    return n / math.log(n)


def summarize_chains(
    loss_draws: np.ndarray,
    distance_draws: np.ndarray,
    diverged_at: np.ndarray,
    init_loss: float,
    nbeta: float,
) -> tuple[float, float, np.ndarray, dict]:
    """λ̂ mean, std, per-chain values and diagnostics from post-burn-in draws of a group of chains."""
    diverged = diverged_at >= 0
    alive = ~diverged
    per_chain = np.full(loss_draws.shape[0], np.nan)
    per_chain[alive] = nbeta * (loss_draws[alive].mean(axis=1) - init_loss)
    alive_draws = loss_draws[alive]
    if alive.any():
        mean = float(per_chain[alive].mean())
        std = float(per_chain[alive].std(ddof=1)) if alive.sum() > 1 else float("nan")
        fraction_below = float((alive_draws < init_loss).mean())
        distance_per_chain = distance_draws.mean(axis=1)
        mean_distance = float(distance_per_chain[alive].mean())
    else:
        mean = std = fraction_below = mean_distance = float("nan")
        distance_per_chain = np.full(loss_draws.shape[0], np.nan)
    diagnostics = {
        "rhat": split_rhat(alive_draws) if alive.sum() > 0 else float("nan"),
        "ess": effective_sample_size(alive_draws) if alive.sum() > 0 else float("nan"),
        "fraction_below_init": fraction_below,
        "diverged": diverged,
        "num_diverged": int(diverged.sum()),
        # step index counted from the first step (burn-in included); -1: never diverged
        "diverged_at_step": diverged_at,
        "all_diverged": bool(diverged.all()),
        "mean_distance": mean_distance,
        "mean_distance_per_chain": distance_per_chain,
        "negative_llc": bool(mean < 0) if not math.isnan(mean) else False,
    }
    return mean, std, per_chain, diagnostics


def estimate_llc(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: Dataset,
    *,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin: int = 0,
    step_size: float = 1e-3,
    nbeta: float | None = None,
    localization: float = 100.0,
    batch_size: int = 32,
    sampler: str = "sgld",
    params: ParamSelector = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> LLCResult:
    """Estimate the local learning coefficient of `model` at its current weights w*.

    model: any `torch.nn.Module`; it is deep-copied, put in eval mode and never modified.
    loss_fn: `loss_fn(model, batch) -> scalar tensor`, the mean loss (per-sample negative
        log-likelihood, see the module docstring) over `batch`, as produced by the default collate.
    data: a `Dataset`; n = len(data). Each chain draws its own shuffled minibatches of `batch_size`
        (the whole dataset, shared by all chains, when `batch_size >= n`).
    num_chains, num_draws, num_burnin: chains run num_burnin + num_draws steps; burn-in draws are discarded.
    step_size: SGLD step ε (for `rmsprop_sgld`, ε multiplies the preconditioner 1/(√v + 1) ≤ 1, so it
        needs larger ε than plain SGLD).
    nbeta: inverse temperature times n; default n / log n with n = len(data).
    localization: γ, the strength of the Gaussian pull towards w*.
    sampler: "sgld" or "rmsprop_sgld" (RMSprop-preconditioned SGLD, Li et al. 2016; the second-moment
        average v is of the drift nβ∇L + γ(w − w*), decay 0.999, Adam-style bias correction, no Γ
        correction term: a heuristic, about +10% on a regular quadratic in our tests).
    params: restrict sampling to some weights (the weight-refined LLC): names, glob patterns or
        per-tensor boolean masks, see `devinterp.params`. The others stay at w*.
    seed: seeds the sampler's own generators (noise and minibatch order); global RNG state is untouched.
    device: where to sample; default the model's device.
    progress: show a tqdm progress bar over steps.

    `diagnostics` holds: rhat (split-R̂ of the loss traces), ess (effective sample size), fraction_below_init
    (fraction of draws with loss < L_n(w*): a sign w* is not a minimum or the chain is still descending),
    diverged / num_diverged / diverged_at_step / all_diverged (a chain whose loss becomes non-finite or
    explodes is stopped and excluded from the mean), mean_distance (mean ‖w − w*‖ over draws and chains),
    negative_llc, init_grad_norm (‖∇L_n(w*)‖ over sampled weights; it should be ~0 at a minimizer),
    vectorized / fallback_reason (whether chains ran in one vmapped computation), and the settings used.
    """
    _validate(num_chains, num_draws, num_burnin, step_size, localization, batch_size)
    n = len(data)
    nbeta = default_nbeta(n) if nbeta is None else float(nbeta)
    if nbeta <= 0:
        raise ValueError(f"nbeta must be positive, got {nbeta}")

    problem = FunctionalProblem(model, loss_fn, params, device)
    init_loss, init_grad_norm = problem.full_loss_and_grad_norm(data, batch_size)
    if not math.isfinite(init_loss):
        raise ValueError(f"loss at the starting weights is not finite ({init_loss})")
    run = run_chains(
        problem,
        data,
        num_chains=num_chains,
        num_steps=num_burnin + num_draws,
        step_size=step_size,
        nbeta=nbeta,
        localization=localization,
        init_loss=init_loss,
        batch_size=batch_size,
        sampler=sampler,
        seed=seed,
        progress=progress,
    )
    loss_draws = run.loss_trace[:, num_burnin:].numpy()
    mean, std, per_chain, diagnostics = summarize_chains(
        loss_draws,
        run.distance_trace[:, num_burnin:].numpy(),
        run.diverged_at.numpy(),
        init_loss,
        nbeta,
    )
    diagnostics.update(
        init_grad_norm=init_grad_norm,
        vectorized=run.vectorized,
        fallback_reason=run.fallback_reason,
        n=n,
        nbeta=nbeta,
        step_size=step_size,
        localization=localization,
        batch_size=min(batch_size, n),
        sampler=sampler,
        num_sampled_params=problem.num_sampled,
    )
    _warn_about(diagnostics, num_chains, mean)
    return LLCResult(
        mean=mean,
        std=std,
        per_chain=per_chain,
        loss_trace=loss_draws,
        init_loss=init_loss,
        nbeta=nbeta,
        diagnostics=diagnostics,
    )


def _validate(num_chains, num_draws, num_burnin, step_size, localization, batch_size) -> None:
    if num_chains < 1 or num_draws < 1 or num_burnin < 0 or batch_size < 1:
        raise ValueError(
            f"need num_chains >= 1, num_draws >= 1, num_burnin >= 0, batch_size >= 1; got "
            f"{num_chains}, {num_draws}, {num_burnin}, {batch_size}"
        )
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if not localization >= 0:
        raise ValueError(f"localization must be non-negative, got {localization}")


def _warn_about(diagnostics: dict, num_chains: int, mean: float) -> None:
    if diagnostics["all_diverged"]:
        warnings.warn(
            f"estimate_llc: all {num_chains} chains diverged; the LLC is NaN. Lower step_size "
            "(or raise localization); `calibrate` can choose them.",
            RuntimeWarning,
            stacklevel=3,
        )
    elif diagnostics["num_diverged"]:
        steps = diagnostics["diverged_at_step"][diagnostics["diverged"]].tolist()
        warnings.warn(
            f"estimate_llc: {diagnostics['num_diverged']} of {num_chains} chains diverged (at steps {steps}) "
            "and were excluded from the estimate. Consider a smaller step_size.",
            RuntimeWarning,
            stacklevel=3,
        )
    if diagnostics["negative_llc"]:
        warnings.warn(
            f"estimate_llc: negative LLC estimate ({mean:.4g}): the sampled loss fell below L_n(w*) "
            f"(fraction of draws below it: {diagnostics['fraction_below_init']:.2f}). w* is probably not a "
            "local minimum (train further), or the chains are still descending (more burn-in / smaller step).",
            RuntimeWarning,
            stacklevel=3,
        )
