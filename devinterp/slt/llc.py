"""Local learning coefficient (LLC) estimation by SGLD on the localized tempered posterior.

Conventions (Lau et al. 2023, arXiv 2308.12108):

    λ̂(w*) = nβ · ( E_w[L_n(w)] − L_n(w*) ),
    p(w) ∝ exp( −nβ L_n(w) − (γ/2) ‖w − w*‖² ),

sampled with SGLD, w ← w − (ε/2) P ⊙ (nβ ∇L_batch(w) + γ (w − w*)) + √(εP) ⊙ noise: P = 1 without
a preconditioner, and the noise is N(0, I), or for the `lm_sgld` sampler the mean of two consecutive
draws (see `devinterp.slt.sampler`).

- L_n is the mean of `loss_fn` over the dataset, in the units `loss_fn` returns (nats for a negative
  log-likelihood). For λ̂ to estimate the learning coefficient λ, `loss_fn` must be the per-sample
  negative log-likelihood: e.g. ½‖y − f(x)‖²/σ² for Gaussian regression, not `F.mse_loss` (which
  divides by the output dimension and drops the ½).
- nβ defaults to n / log n with **n = len(data), the number of samples in the dataset** (β = 1/log n,
  Watanabe's WBIC temperature). The devinterp library's `default_nbeta` uses the *batch* size
  instead; pass `nbeta=` explicitly to match it.
- L_n(w*) (`init_loss`) is the mean of the per-sample losses at w* over the whole dataset (forward
  only; in fixed batches when `loss_fn` is not a mean over samples).
- E_w[L_n(w)] is the mean over post-burn-in draws of the read-out loss (see `devinterp.slt.sampler`):
  the loss of the forward pass that gives the gradient, i.e. before the update, with the same
  minibatch's loss at w* as a control variate (recording it after the update on the same minibatch
  biases λ̂ downward).
- The estimate is the mean over chains of per-chain estimates; `std` is their sample standard
  deviation (ddof = 1, NaN with a single surviving chain); `stderr` the standard error of the
  mean from the effective sample size.

The health verdict tells a **biased** estimate (`problems`: the number is off, whatever its error bar)
from an **imprecise** one (`imprecision`: a wide error bar, which `stderr` states). `healthy` means
not biased. Biased, each check with its threshold (set on real checkpoints against a long reference
run, `scripts/bench_llc_reference.py`): a diverged chain; chains that disagree (R̂ > MAX_RHAT); traces
still moving (halves differ by more than MAX_TREND of λ̂ and TREND_Z standard errors: not
equilibrated); minibatch gradient noise that can add more than MAX_NOISE_INFLATION of λ̂ (hot chains;
`devinterp.slt.geometry.noise_inflation`); λ̂ < 0 (the sampled loss below L_n(w*): w* is not a local minimum). Imprecise: ESS below
MIN_ESS.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from devinterp.core.params import ParamSelector
from devinterp.slt import diagnostics as diag
from devinterp.slt.geometry import (NOISE_SAMPLES, drift_curvature, gradient_noise, measured_noise_inflation,
                                    noise_inflation)
from devinterp.slt.preconditioning import curvature_diagonal, diagonal_preconditioner
from devinterp.slt.sampler import FunctionalProblem, LossFn, _collate, _to_device, run_chains

PRECONDITIONERS = ("none", "diagonal")
# R̂ above MAX_RHAT is a bias check. Not the textbook 1.1: for the stiff posteriors of real checkpoints the
# estimates have 4 chains of ~100 draws and an ESS of 7-45, and stationary chains of that shape exceed 1.1 in
# ~80 % of runs (AR(1) chains at ESS ~20: median R̂ 1.17, 90th percentile 1.33), so R̂ > 1.1 restates a low ESS
# (an imprecision) more than it finds bias. Against long references on grokking seeds 0, 1 and 7 (19 estimates,
# `scripts/bench_llc_reference.py`), R̂ > 1.1 flagged 17, 12 of them within 5 % of the reference; R̂ > 1.3
# flags 5, the 3 that read 5-9 % off among them, and passes 2 that read 5.2 % and 5.5 % off.
MAX_RHAT = 1.3
MIN_ESS = 100.0
MAX_TREND = 0.1  # relative to |λ̂|
TREND_Z = 3.0
MAX_NOISE_INFLATION = 0.05  # relative to λ̂
# The noise check (`estimate_llc(max_batch_size=...)`) measures an estimate again at NOISE_CHECK_BATCH_FACTOR
# times the batch where the predicted inflation exceeds the bound, or a third of it where the noise grows
# more than STATE_DEPENDENT_NOISE times from w* to the chains' end: such noise heats the chains by more than
# the prediction (grokking, noise ×600 along the chains: 3x the prediction at step 1200 of seed 0, 4x on
# seed 7), while noise that does not grow stays within it (induction steps 9 and 410, noise ×2.8 and ×1:
# measured 0.7 % and 0.2 % where 2.9 % and 1.5 % were predicted).
NOISE_CHECK_BATCH_FACTOR = 4
STATE_DEPENDENT_NOISE = 10.0
STATE_DEPENDENT_NOISE_GAIN = 3.0
# The step check (`estimate_llc(step_check=True)`): where ε·κ_P at a chain's end exceeds END_STEP_CURVATURE
# (calibration's rule at w*), the draws are taken again at the step that meets it. On grokking checkpoints
# where the chains reach curvature 6-30x that at w* (ε·κ_P 3.5-4.3 there), ε/2 read 8-25 % lower (the seed-7
# step 1200: 315 -> 268, against a long reference's 260); where ε·κ_P stayed below 1.6, within 1 %.
END_STEP_CURVATURE = 2.0
END_CURVATURE_SAMPLES = 256  # the Hessian's subsample there (induction: 2 s against 22 s at 1024, h 4 % higher)
# A first look on fewer samples decides where the check cannot fire: at 9 chain ends (induction seed 0 steps
# 80-2000, grokking seed 1 steps 83-1200) κ_P on 64 samples read 0.99-1.11x that on 256, in 1.1-1.5 s against
# 4.4-6.1 s on induction (1 thread). Where it puts ε·κ_P below half the threshold, it is the value used.
END_CURVATURE_SCREEN_SAMPLES = 64
END_CURVATURE_TOL = 0.05
FULL_LOSS_BATCH = 512  # L_n(w*) batch when loss_fn is not a mean over samples
# Per-sample gradients behind the noise health check of `estimate_llc` (at w* and at a chain's end). The
# check's threshold is more than twice calibration's target, so a rougher estimate than calibration's
# (NOISE_SAMPLES) serves, at a quarter of the per-sample gradients.
HEALTH_NOISE_SAMPLES = 64
# The settled burn-in (`settled_run`): it doubles while the trace's second half reads above the quarter before it
# by more than this, relative.
SETTLED_TOLERANCE = 0.02
SEGMENT_SEED_STRIDE = 7919  # the seeds of a settled run's segments: seed, seed + this, ...


@dataclass(frozen=True)
class LLCResult:
    """Result of `estimate_llc`.

    mean: λ̂ averaged over the chains that did not diverge (NaN, with a warning, if all diverged).
    std: sample standard deviation of the per-chain λ̂ (ddof = 1).
    per_chain: (chains,) per-chain λ̂; NaN for a diverged chain.
    loss_trace: (chains, draws) read-out loss of each post-burn-in draw, an unbiased estimate of
        L_n(w_t) in `loss_fn` units (NaN from the step a chain diverged).
    init_loss: L_n(w*), the loss over the whole dataset at the starting weights.
    nbeta: the nβ used.
    diagnostics: see `estimate_llc`.
    problems: one sentence per failed bias check (module docstring), naming the fix; empty when healthy.
    imprecision: one sentence per failed precision check (low ESS); the estimate is unbiased but its
        error bar (`stderr`) is wide.
    """

    mean: float
    std: float
    per_chain: np.ndarray
    loss_trace: np.ndarray
    init_loss: float
    nbeta: float
    diagnostics: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    imprecision: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """No bias check failed (an imprecise estimate can be healthy)."""
        return not self.problems

    @property
    def precise(self) -> bool:
        return not self.imprecision

    @property
    def stderr(self) -> float:
        """Standard error of `mean` from the pooled draws' spread and their effective sample size."""
        return self.diagnostics.get("stderr", float("nan"))

    @property
    def llc_trace(self) -> np.ndarray:
        """(chains, draws) nβ·(L(w_t) − L_n(w*)): per-draw contributions to λ̂."""
        return self.nbeta * (self.loss_trace - self.init_loss)

    def to_arviz(self):
        """The chains as an ArviZ `InferenceData`: posterior variables `llc` (per-draw contributions)
        and `loss` (read-out loss), dimensions (chain, draw); diverged chains' NaN draws included."""
        return diag._arviz().from_dict(posterior={"llc": self.llc_trace, "loss": self.loss_trace},
                                       attrs={"init_loss": self.init_loss, "nbeta": self.nbeta})


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
    llc_draws = nbeta * (loss_draws[alive] - init_loss)
    nan = float("nan")
    mean = std = fraction_below = mean_distance = stderr = nan
    rhat = ess = trend = trend_z = nan
    distance_per_chain = np.full(loss_draws.shape[0], nan)
    if alive.any():
        mean = float(per_chain[alive].mean())
        std = float(per_chain[alive].std(ddof=1)) if alive.sum() > 1 else nan
        fraction_below = float((llc_draws < 0).mean())
        distance_per_chain = distance_draws.mean(axis=1)
        mean_distance = float(distance_per_chain[alive].mean())
        rhat, ess = diag.rhat(llc_draws), diag.ess(llc_draws)
        trend, trend_z = diag.trend(llc_draws)
        if math.isfinite(ess) and ess > 0:
            stderr = float(llc_draws.std(ddof=1) / math.sqrt(ess))
    diagnostics = {
        "rhat": rhat,
        "ess": ess,
        "stderr": stderr,
        "trend": trend,  # mean of the traces' second half minus the first half's, in λ̂ units
        "trend_z": trend_z,
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


def is_trending(mean: float, diagnostics: Mapping) -> bool:
    """Whether the traces' halves differ by more than MAX_TREND × |λ̂| and TREND_Z standard errors."""
    return abs(diagnostics["trend"]) > MAX_TREND * abs(mean) and abs(diagnostics["trend_z"]) > TREND_Z


def failed_checks(mean: float, stats: Mapping) -> list[str]:
    """The names of the bias checks (module docstring) that `stats` fail: the diagnostics of an estimate,
    or its stored scalars (`llc/rhat`, ... without the prefix); absent statistics pass."""
    get = lambda key: float(stats.get(key, math.nan))  # noqa: E731
    checks = {
        "diverged chains": get("num_diverged") > 0,
        f"R̂ > {MAX_RHAT:g}": get("rhat") > MAX_RHAT,
        "still trending": is_trending(mean, {"trend": get("trend"), "trend_z": get("trend_z")}),
        "minibatch noise above its bound": get("noise_inflation") > MAX_NOISE_INFLATION,
        "negative LLC": mean < 0,
    }
    return [name for name, failed in checks.items() if failed]


def health_problems(mean: float, diagnostics: dict, num_chains: int) -> tuple[list[str], list[str]]:
    """(bias problems, imprecision): the failed health checks (module docstring), one sentence each with
    its fix."""
    d = diagnostics
    problems = []
    if d["all_diverged"]:
        problems.append(f"all {num_chains} chains diverged, so the LLC is NaN: lower step_size or raise "
                        "localization (`calibrate` chooses them)")
    elif d["num_diverged"]:
        steps = d["diverged_at_step"][d["diverged"]].tolist()
        problems.append(f"{d['num_diverged']} of {num_chains} chains diverged (at steps {steps}) and were "
                        "excluded: lower step_size")
    if d["rhat"] > MAX_RHAT:
        problems.append(f"chains disagree (R̂ = {d['rhat']:.2f} > {MAX_RHAT}): not equilibrated; add burn-in "
                        "(num_burnin) or chains")
    if is_trending(mean, d):
        direction = "rising" if d["trend"] > 0 else "falling"
        problems.append(f"traces still {direction} (second half {d['trend']:+.3g} from the first, "
                        f"z = {d['trend_z']:.1f}): not equilibrated; add burn-in (num_burnin) or raise step_size")
    if d["negative_llc"]:
        problems.append(f"negative LLC ({mean:.4g}): the sampled loss fell below L_n(w*) "
                        f"({d['fraction_below_init']:.0%} of draws); w* is not a local minimum (train further) "
                        "or the chains are still descending (more burn-in, smaller step_size)")
    if d.get("noise_inflation", 0.0) > MAX_NOISE_INFLATION:
        problems.append(f"minibatch gradient noise can inflate λ̂ by up to {d['noise_inflation']:.0%} (> "
                        f"{MAX_NOISE_INFLATION:.0%}): it heats the chains; raise batch_size or lower step_size")
    imprecision = []
    if not d["ess"] >= MIN_ESS and not d["all_diverged"]:
        imprecision.append(f"effective sample size {d['ess']:.0f} < {MIN_ESS:.0f} (R̂ {d['rhat']:.2f}): the error "
                           f"bar (stderr {d['stderr']:.3g}) is wide; run more draws or chains")
    return problems, imprecision


def estimate_llc(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: Dataset,
    *,
    num_chains: int = 4,
    num_draws: int = 200,
    num_burnin: int = 0,
    min_burnin: int | None = None,
    step_size: float = 1e-3,
    nbeta: float | None = None,
    localization: float = 100.0,
    batch_size: int = 32,
    sampler: str = "lm_sgld",
    preconditioner: str = "none",
    stability_retries: int = 0,
    max_batch_size: int | None = None,
    step_check: bool = False,
    params: ParamSelector = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    grad_norm: bool = False,
    progress: bool = False,
) -> LLCResult:
    """Estimate the local learning coefficient of `model` at its current weights w*.

    model: any `torch.nn.Module`; it is deep-copied, put in eval mode and never modified.
    loss_fn: `loss_fn(model, batch) -> scalar tensor`, the mean loss (per-sample negative
        log-likelihood, see the module docstring) over `batch`, as produced by the default collate.
    data: a `Dataset`; n = len(data). Each chain draws its own shuffled minibatches of `batch_size`
        (the whole dataset, shared by all chains, when `batch_size >= n`).
    num_chains, num_draws, num_burnin: chains run num_burnin + num_draws steps; burn-in draws are discarded.
    min_burnin: the settled burn-in (`settled_run`): where given, the burn-in starts at min_burnin steps and
        doubles while the chains' loss trace still rises, up to num_burnin (`diagnostics["num_burnin"]` is
        the burn-in run). `calibrate` recommends it. None (the default): num_burnin steps.
    step_size: SGLD step ε, the step of every coordinate the preconditioner leaves at 1 (for
        `rmsprop_sgld`, ε multiplies its preconditioner 1/(√v + 1) ≤ 1, so it needs larger ε).
    nbeta: inverse temperature times n; default n / log n with n = len(data).
    localization: γ, the strength of the Gaussian pull towards w*.
    sampler: "lm_sgld" (default), "sgld" or "rmsprop_sgld" (`devinterp.slt.sampler`).
    preconditioner: "none" or "diagonal": a fixed diagonal P = γ/(nβ·d + γ) from the curvature
        diagonal d at w* (`devinterp.slt.preconditioning`; 8 Hessian-vector products and 64 per-sample
        gradients on 64 samples), so that stiff coordinates take smaller steps than ε.
    stability_retries: when a chain diverges (ε too large for the curvature the chains meet), run the
        estimate again at ε/2 with twice the burn-in, at most this many times (`diagnostics
        ["step_halvings"]`). Results at different ε estimate the same λ̂.
    max_batch_size: the noise check (`quieter_estimate`): where minibatch noise may inflate λ̂ by more than
        MAX_NOISE_INFLATION, the estimate is run again at 4× the batch (at most this) and its inflation measured
        from the two (`diagnostics["noisy_llc"]`, `["noisy_batch_size"]`, `["measured_noise_inflation"]`);
        the quieter one is returned. None (the default): no check, the batch is used as given.
    step_check: the step check (`finer_estimate`): measure κ_P, the drift's top curvature, where a chain ended
        (Lanczos on END_CURVATURE_SAMPLES samples, or on END_CURVATURE_SCREEN_SAMPLES where those put it below
        half the threshold: `curvature_at_end`); where ε·κ_P exceeds END_STEP_CURVATURE, continue the chains
        at the step that meets it and return that estimate (`diagnostics["coarse_llc"]`, `["coarse_step_size"]`;
        `["end_step_curvature"]` is ε·κ_P at the chain's end either way). Off by default.
    params: restrict sampling to some weights (the weight-refined LLC): names, glob patterns or
        per-tensor boolean masks, see `devinterp.core.params`. The others stay at w*.
    seed: seeds the sampler's own generators (noise and minibatch order); global RNG state is untouched.
    device: where to sample; default the model's device.
    grad_norm: also compute ‖∇L_n(w*)‖ (`diagnostics["init_grad_norm"]`; one more pass over the data).
    progress: show a tqdm progress bar over steps.

    `diagnostics` holds: rhat, ess, stderr, trend / trend_z (see `devinterp.slt.diagnostics`; computed on
    the per-draw contributions nβ(L − L_n(w*))), fraction_below_init (fraction of draws with loss below
    L_n(w*)), diverged / num_diverged / diverged_at_step / all_diverged (the rule is in
    `devinterp.slt.sampler`; a diverged chain is stopped and excluded from the mean), mean_distance
    (mean ‖w − w*‖ over draws and chains), negative_llc, noise_init (tr √PΣ√P of the per-sample gradients at
    w*), noise (the larger of that and the same at a chain's final weights) and noise_inflation (what that
    noise can add to λ̂, relative to λ̂; see `devinterp.slt.geometry`),
    noisy_llc / noisy_batch_size / measured_noise_inflation / predicted_noise_inflation (where the noise
    check ran: the first estimate and its batch, and the inflation at the returned batch measured from the
    two and predicted), end_step_curvature / coarse_llc / coarse_step_size (the step check: ε·κ_P where a
    chain ended, and where it continued at a smaller step, the estimate and step before), control_variate
    (whether the read-out used per-sample losses at w*), vectorized / fallback_reason
    (whether chains ran in one vmapped computation or a loop, and why vmap failed if it did;
    `devinterp.slt.sampler.vmap_pays_off`), step_halvings, init_grad_norm when asked, and the settings
    used (step_size is the one of the final run). A RuntimeWarning lists the failed health checks.
    """
    validate_settings(num_chains, num_draws, num_burnin, step_size, localization, batch_size)
    if min_burnin is not None and not 0 < min_burnin:
        raise ValueError(f"min_burnin must be a positive number of steps or None, got {min_burnin}")
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner={preconditioner!r} is not one of {PRECONDITIONERS}")
    nbeta = default_nbeta(len(data)) if nbeta is None else float(nbeta)
    if nbeta <= 0:
        raise ValueError(f"nbeta must be positive, got {nbeta}")

    problem = FunctionalProblem(model, loss_fn, params, device)
    scale = None
    if preconditioner == "diagonal":
        scale = diagonal_preconditioner(curvature_diagonal(problem, data, seed), nbeta, localization).to(problem.dtype)
    anchor = measure_anchor(problem, data, seed, noise_samples=HEALTH_NOISE_SAMPLES if batch_size < len(data) else 0,
                            preconditioner=scale)

    def sample(batch: int, step: float = step_size, burnin: int = num_burnin, initial_weights: torch.Tensor | None = None,
               draws: int = num_draws, settle_from: int | None = min_burnin) -> tuple[LLCResult, torch.Tensor | None]:
        for halvings in range(stability_retries + 1):
            result, final = sample_llc(problem, data, anchor, num_chains=num_chains, num_draws=draws,
                                       num_burnin=burnin * 2**halvings, step_size=step / 2**halvings, nbeta=nbeta,
                                       min_burnin=None if settle_from is None else settle_from * 2**halvings,
                                       localization=localization, batch_size=batch, sampler=sampler, seed=seed,
                                       noise_samples=HEALTH_NOISE_SAMPLES, preconditioner=scale,
                                       initial_weights=initial_weights, progress=progress)
            if not result.diagnostics["num_diverged"]:
                break
        result.diagnostics.update(step_halvings=halvings, preconditioner=preconditioner)
        return result, final

    result, final = sample(batch_size)
    if max_batch_size is not None:
        result, final = quieter_estimate(result, final, sample, min(max_batch_size, len(data)))
    if step_check and final is not None:
        at_end = functools.partial(drift_curvature, problem, data, seed, nbeta, localization,
                                   weights=problem.unflatten(final[0]), preconditioner=scale, tol=END_CURVATURE_TOL)
        result = finer_estimate(result, final, sample, curvature_at_end(at_end, result.diagnostics["step_size"]))
    if grad_norm:
        result.diagnostics["init_grad_norm"] = problem.grad_norm(data, FULL_LOSS_BATCH)
    if result.problems:
        warnings.warn("estimate_llc: the estimate is not healthy: " + "; ".join(result.problems) + ".",
                      RuntimeWarning, stacklevel=2)
    return result


def quieter_estimate(result: LLCResult, final: torch.Tensor | None, sample,
                     max_batch_size: int) -> tuple[LLCResult, torch.Tensor | None]:
    """The noise check of `estimate_llc(max_batch_size=...)`: where the predicted minibatch-noise inflation
    may exceed MAX_NOISE_INFLATION (times STATE_DEPENDENT_NOISE_GAIN where the noise is state-dependent:
    module constants), the estimate again at NOISE_CHECK_BATCH_FACTOR × the batch (at most
    `max_batch_size`; `sample(batch)` runs it with the same seed), its own inflation then measured from
    the two (`devinterp.slt.geometry.measured_noise_inflation`) as well as predicted, and the larger
    counted when it is significant (twice its standard error). Returns the estimate and its chains' final
    states (`sample_llc`): `result` and `final` themselves where the check is not due."""
    d = result.diagnostics
    batch, n = d["batch_size"], d["n"]
    state_dependent = d["noise"] > STATE_DEPENDENT_NOISE * d["noise_init"]
    possible = d["noise_inflation"] * (STATE_DEPENDENT_NOISE_GAIN if state_dependent else 1.0)
    # a negative λ̂ is biased whatever the batch: a quieter one would only read lower
    if not (possible > MAX_NOISE_INFLATION and batch < max_batch_size and result.mean > 0):
        return result, final
    quiet, quiet_final = sample(min(NOISE_CHECK_BATCH_FACTOR * batch, max_batch_size))
    q = quiet.diagnostics
    if not math.isfinite(quiet.mean) or quiet.mean == 0:
        return quiet, quiet_final
    measured = measured_noise_inflation(result.mean, batch, quiet.mean, q["batch_size"], n) / abs(quiet.mean)
    drop_stderr = math.hypot(result.stderr, quiet.stderr)
    stderr = measured_noise_inflation(drop_stderr, batch, 0.0, q["batch_size"], n) / abs(quiet.mean)
    q.update(noisy_llc=result.mean, noisy_batch_size=batch, measured_noise_inflation=measured,
             predicted_noise_inflation=q["noise_inflation"])
    if measured > 2 * stderr:
        q["noise_inflation"] = max(q["noise_inflation"], measured)
    return judged_again(quiet), quiet_final


def curvature_at_end(curvature, step: float) -> float:
    """κ_P where a chain ended, for the step check: `curvature(num_samples)` on END_CURVATURE_SCREEN_SAMPLES, or,
    where that puts ε·κ_P (ε = `step`) above half of END_STEP_CURVATURE (near where the check fires), on
    END_CURVATURE_SAMPLES."""
    screened = curvature(num_samples=END_CURVATURE_SCREEN_SAMPLES)
    if step * screened <= END_STEP_CURVATURE / 2:
        return screened
    return curvature(num_samples=END_CURVATURE_SAMPLES)


def finer_estimate(result: LLCResult, final: torch.Tensor, sample, end_curvature: float) -> LLCResult:
    """The step check of `estimate_llc(step_check=True)`: where ε·κ_P at a chain's end (`end_curvature`, κ_P of
    `devinterp.slt.geometry.drift_curvature`) exceeds END_STEP_CURVATURE, the chains continue from their final
    states (`final`) at ε' = END_STEP_CURVATURE/κ_P, for a burn-in of a quarter of the draws and then ε/ε'
    times the draws (the same span of SGLD time), and that continuation is the estimate (`sample(batch, step,
    burnin, initial_weights, draws)` runs it). The burn-in at ε has relaxed the slow directions; the draws at
    ε' sample the stiff ones the chains found without the discretization bias of ε there. A noise inflation
    measured at ε (`quieter_estimate`) is carried over, scaled by ε'/ε. Where ε is fine, `result` with
    `end_step_curvature` added to its diagnostics."""
    d = {**result.diagnostics, "end_step_curvature": result.diagnostics["step_size"] * end_curvature}
    step = d["step_size"]
    if not (d["end_step_curvature"] > END_STEP_CURVATURE and math.isfinite(result.mean)):
        return dataclasses.replace(result, diagnostics=d)
    fine_step = END_STEP_CURVATURE / end_curvature
    draws = math.ceil(d["num_draws"] * step / fine_step)
    fine, _ = sample(d["batch_size"], fine_step, d["num_draws"] // 4, final, draws, settle_from=None)
    f = fine.diagnostics
    carried = {key: d[key] for key in ("noisy_llc", "noisy_batch_size", "predicted_noise_inflation") if key in d}
    if "measured_noise_inflation" in d:
        carried["measured_noise_inflation"] = d["measured_noise_inflation"] * fine_step / step
    f.update(carried, coarse_llc=result.mean, coarse_step_size=step, end_step_curvature=d["end_step_curvature"],
             noise_inflation=max(f["noise_inflation"], d["noise_inflation"] * fine_step / step))
    return judged_again(fine)


def judged_again(result: LLCResult) -> LLCResult:
    """`result` with its health verdict recomputed from its (updated) diagnostics."""
    problems, imprecision = health_problems(result.mean, result.diagnostics, result.diagnostics["num_chains"])
    return dataclasses.replace(result, problems=problems, imprecision=imprecision)


def sample_llc(problem: FunctionalProblem, data: Dataset, anchor: "Anchor", *, num_chains: int, num_draws: int,
               num_burnin: int, step_size: float, nbeta: float, localization: float, batch_size: int,
               sampler: str, seed: int, noise_samples: int = NOISE_SAMPLES, preconditioner: torch.Tensor | None = None,
               initial_weights: torch.Tensor | None = None, min_burnin: int | None = None,
               progress: bool = False) -> tuple[LLCResult, torch.Tensor | None]:
    """The sampling part of `estimate_llc`, for a prepared problem, its anchor and its preconditioner P (a
    flat tensor, or None), shared by `calibrate`'s probes; settings already validated. No warning: the
    problems are in the result. Also returns the chains' final flat states, the diverged ones replaced
    by the first that did not diverge (None if all did). noise_samples: per-sample gradients for the
    noise scale at that chain's final weights (minibatches only). min_burnin: the settled burn-in
    (`settled_run`); None: a fixed burn-in of num_burnin steps."""
    def chains(num_steps: int, weights: torch.Tensor | None, segment: int):
        return run_chains(problem, data, num_chains=num_chains, num_steps=num_steps, step_size=step_size, nbeta=nbeta,
                          localization=localization, init_loss=anchor.init_loss, batch_size=batch_size,
                          sampler=sampler, seed=seed + SEGMENT_SEED_STRIDE * segment,
                          sample_losses=anchor.sample_losses, preconditioner=preconditioner, initial_weights=weights,
                          progress=progress)

    run, num_burnin = settled_run(chains, anchor.init_loss, num_burnin, num_draws, min_burnin, initial_weights)
    mean, std, per_chain, diagnostics = summarize_chains(
        run.loss_trace[:, num_burnin:].numpy(), run.distance_trace[:, num_burnin:].numpy(), run.diverged_at.numpy(),
        anchor.init_loss, nbeta)
    alive = np.flatnonzero(run.diverged_at.numpy() < 0)
    final = None if not len(alive) else run.final_weights[torch.as_tensor(alive)[torch.arange(num_chains) % len(alive)]]
    noise = anchor.noise
    if batch_size < len(data) and final is not None:  # the noise where a chain ended up, too (`devinterp.slt.geometry`)
        noise = max(noise, gradient_noise(problem, data, seed=seed + 1, weights=problem.unflatten(final[0]),
                                          num_samples=noise_samples, preconditioner=preconditioner))
    inflation = noise_inflation(noise, step_size, nbeta, batch_size, len(data))
    diagnostics.update(
        noise_init=anchor.noise, noise=noise, noise_inflation=inflation / abs(mean) if mean else math.inf,
        control_variate=anchor.sample_losses is not None, vectorized=run.vectorized,
        fallback_reason=run.fallback_reason, n=len(data), nbeta=nbeta, step_size=step_size,
        localization=localization, batch_size=min(batch_size, len(data)), num_chains=num_chains, num_draws=num_draws,
        num_burnin=num_burnin, sampler=sampler, num_sampled_params=problem.num_sampled)
    problems, imprecision = health_problems(mean, diagnostics, num_chains)
    result = LLCResult(mean=mean, std=std, per_chain=per_chain, loss_trace=run.loss_trace[:, num_burnin:].numpy(),
                       init_loss=anchor.init_loss, nbeta=nbeta, diagnostics=diagnostics, problems=problems,
                       imprecision=imprecision)
    return result, final


def settled_run(chains, init_loss: float, num_burnin: int, num_draws: int, min_burnin: int | None,
                initial_weights: torch.Tensor | None):
    """(run, burn-in): the chains of `chains(num_steps, initial_weights, segment)` (a `ChainRun`) through a
    burn-in and then `num_draws` steps. A fixed burn-in of `num_burnin` steps where `min_burnin` is None (or
    not below it). The settled burn-in: first `min_burnin` steps; then, while the trace L − L_n(w*) since
    the start still rises over its second half by more than SETTLED_TOLERANCE of its level and two standard
    errors (`diagnostics.still_rising`), as many steps again, up to `num_burnin` steps; no further once a chain has
    diverged. A burn-in that does not double costs at most min_burnin/num_burnin of the fixed one's."""
    if min_burnin is None or min_burnin >= num_burnin:
        return chains(num_burnin + num_draws, initial_weights, 0), num_burnin
    run = chains(min_burnin, initial_weights, 0)
    segment = 1
    while (not bool((run.diverged_at >= 0).any())
           and (longer := longer_burnin(run.loss_trace.numpy() - init_loss, num_burnin)) is not None):
        run = run.then(chains(longer - run.loss_trace.shape[1], run.final_weights, segment))
        segment += 1
    burnin = run.loss_trace.shape[1]
    return run.then(chains(num_draws, run.final_weights, segment)), burnin


def longer_burnin(trace: np.ndarray, num_burnin: int) -> int | None:
    """The settled burn-in's next length, given the (chains, steps) trace L − L_n(w*) of the burn-in so far:
    twice as long, at most `num_burnin`, while the trace still rises (`diagnostics.still_rising` at
    SETTLED_TOLERANCE); None once it has settled or reached `num_burnin`."""
    steps = trace.shape[1]
    if steps >= num_burnin or not diag.still_rising(trace, SETTLED_TOLERANCE):
        return None
    return min(2 * steps, num_burnin)


@dataclass(frozen=True)
class Anchor:
    """What the sampler needs to know about w*: L_n(w*), the per-sample losses for the read-out's
    control variate (None when `loss_fn` is not a mean over samples or vmap cannot run the model),
    and the per-sample gradient noise tr(√PΣ√P) (`devinterp.slt.geometry`; 0 when not measured)."""

    init_loss: float
    sample_losses: torch.Tensor | None
    noise: float


def measure_anchor(problem: FunctionalProblem, data: Dataset, seed: int, noise_samples: int = NOISE_SAMPLES,
                   preconditioner: torch.Tensor | None = None) -> Anchor:
    """Forward passes at w* (no gradients but the noise subsample's: `noise_samples` per-sample gradients,
    none when 0, e.g. at full batch where the noise does not matter; scaled by the preconditioner's √P
    when there is one): see `Anchor`."""
    try:
        sample_losses = problem.sample_losses(data)
    except Exception:  # noqa: BLE001 - vmap cannot run this model: no control variate
        sample_losses = None
    if sample_losses is not None and not _is_sample_mean(problem, data, sample_losses):
        sample_losses = None
    if sample_losses is not None:
        init_loss = float(sample_losses.mean())
    else:
        init_loss = problem.full_loss(data, FULL_LOSS_BATCH)
    if not math.isfinite(init_loss):
        raise ValueError(f"loss at the starting weights is not finite ({init_loss})")
    noise = 0.0
    if noise_samples:
        noise = gradient_noise(problem, data, seed=seed, num_samples=noise_samples, preconditioner=preconditioner)
    return Anchor(init_loss, sample_losses, noise)


def _is_sample_mean(problem: FunctionalProblem, data: Dataset, sample_losses: torch.Tensor) -> bool:
    """Whether `loss_fn` on a batch equals the mean of its per-sample losses (e.g. not for token means
    over sequences with different numbers of scored tokens)."""
    count = min(len(data), 64)
    with torch.no_grad():
        batch_loss = float(problem.loss(problem.w_star, _to_device(_collate(data, torch.arange(count)), problem.device)))
    expected = float(sample_losses[:count].mean())
    tolerance = 1e-4 if problem.dtype == torch.float32 else 1e-9
    return abs(batch_loss - expected) <= tolerance * max(1.0, abs(expected))


def validate_settings(num_chains, num_draws, num_burnin, step_size, localization, batch_size) -> None:
    """Raise ValueError naming the first invalid SGLD setting."""
    if num_chains < 1 or num_draws < 1 or num_burnin < 0 or batch_size < 1:
        raise ValueError(
            f"need num_chains >= 1, num_draws >= 1, num_burnin >= 0, batch_size >= 1; got "
            f"{num_chains}, {num_draws}, {num_burnin}, {batch_size}"
        )
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if not localization >= 0:
        raise ValueError(f"localization must be non-negative, got {localization}")
