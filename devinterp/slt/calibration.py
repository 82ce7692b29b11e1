"""Choosing SGLD settings for `estimate_llc` from the loss's local geometry.

λ̂ is biased three ways by its settings: a step size ε too large for the curvature inflates it
(discretization), a batch too small for ε inflates it (minibatch gradient noise heats the chains),
and too few steps deflate it (the chains have not equilibrated). `calibrate` measures what sets each
bound (`devinterp.slt.geometry`) and applies this rule:

1. nβ = n / log n and localization γ = max(nβ / 100, 5) unless given. (γ biases a direction of
   per-sample curvature h by the factor nβh / (nβh + γ), so it must scale with nβ; 1/100 keeps that
   bias to a few percent on deep linear networks. The floor, the low end of published settings,
   acts below n ≈ 4000: a looser γ let deep networks' chains roam the wide small-n posterior, and
   relaxing that took more than 50 000 steps. Measured on the generated deep linear networks with
   n < 4000: errors of −29 % to +55 % at γ = nβ/100, −9 % to +21 % with the floor (float64 and
   float32).)
2. ε = 1 / (8 κ) with κ = nβ·h + γ and h the top Hessian eigenvalue of L_n: each step moves the
   stiffest direction by 1/16 of its own scale (stationary variance inflated by ≤ 3 %).
3. Batch: the smallest (≥ `min_batch_size`) keeping minibatch gradient noise ≤ 5 % of the injected
   noise; if even `max_batch_size` does not, ε is lowered until it does.
4. Burn-in: 1/(2εγ) steps, half the relaxation time of the localization (no direction relaxes slower;
   measured: λ̂ settles within 0.2–0.3 of it); draws: enough for ESS ≥ 100 and a standard error
   ≤ `target_stderr` × λ̂, judged from the longest probe (step 6).
5. h and the noise are measured at w* and again where probe chains end up (at a singular w* both can
   be far smaller than a short way off); ε and the batch are recomputed until h stops growing (and
   the noise, where it is within a factor 2 of its target). A probe whose chains diverge caps ε at a
   quarter of its step size.
6. Localization check: two more probes, at γ and 3γ, each sized for a 5 % standard error (the one
   at γ also sizes the draws of step 4). Where λ̂ changes by more than 40 % (and by more than twice
   the standard error), the localization rather than the loss confines the chains: `problems` says
   so. The check is coarse: on the generated deep linear networks, accurate estimates moved by
   −34 % to +15 % (probe noise, and biases that partly cancel); it is there for gross cases, such as
   a quartic loss at n = 1e5, where γ ∝ nβ outgrows the posterior's width and λ̂ reads 25 % low from
   healthy chains.

When `max_steps` cannot hold the burn-in at the rule's ε, ε is raised to fit and `problems` says by
how much the rule is exceeded (with a warning); likewise for noise above its target.

The probes are short: run `estimate_llc(model, loss_fn, data, **result.recommended)` for the number
you report.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch.utils.data import Dataset

from devinterp.core.params import ParamSelector
from devinterp.slt.geometry import CURVATURE_SAMPLES, noise_ratio, top_curvature
from devinterp.slt.llc import MIN_ESS, LLCResult, default_nbeta, is_trending, measure_anchor, sample_llc
from devinterp.slt.sampler import FunctionalProblem, LossFn

LOCALIZATION_PER_NBETA = 0.01
MIN_LOCALIZATION = 5.0
STEP_CURVATURE_PRODUCT = 1 / 8  # ε·κ_max
NOISE_TARGET = 0.05
BURNIN_RELAXATIONS = 0.5  # burn-in = this / (εγ) steps
PROBE_CHAINS = 2
PROBE_DRAWS = 200
MAX_ROUNDS = 4
CONVERGED_CHANGE = 0.1  # stop re-measuring once h and the noise grew by less than this (relative)
MIN_DRAWS = 100
DRAW_SAFETY = 1.5  # a probe's ESS per draw is itself a noisy estimate
LOCALIZATION_CHECK_FACTOR = 3.0  # the check probe's γ, as a multiple of the recommended one
LOCALIZATION_TOLERANCE = 0.4  # relative change of λ̂ between γ and the check's γ that flags the estimate
CHECK_STDERR = 0.05  # relative standard error each localization-check probe is sized for


@dataclass(frozen=True)
class CalibrationResult:
    """table: one row per probe round (step_size, batch_size, num_burnin, curvature, noise_scale, and the
    probe's llc, stderr, ess, rhat, trend_z, noise_ratio, num_diverged, localization); the last two rows
    are the localization check's probes, at γ and at LOCALIZATION_CHECK_FACTOR × γ.
    localization_change: λ̂ at that γ over λ̂ at the recommended γ, minus 1 (NaN when either probe gave
    no estimate).
    recommended: keyword arguments for `estimate_llc` (step_size, nbeta, localization, batch_size,
    num_chains, num_draws, num_burnin, sampler, and params when given).
    reason: one sentence saying how the recommendation was chosen.
    problems: which parts of the rule the budget did not allow, and a failed localization check (empty
    when all held)."""

    table: pd.DataFrame
    localization_change: float = math.nan
    recommended: dict = field(default_factory=dict)
    reason: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Choice:
    step_size: float
    batch_size: int
    num_burnin: int
    problems: tuple[str, ...]


def calibrate(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: Dataset,
    *,
    nbeta: float | None = None,
    localization: float | None = None,
    num_chains: int = 4,
    min_batch_size: int = 256,
    max_batch_size: int | None = None,
    max_steps: int = 20_000,
    target_stderr: float = 0.02,
    curvature_samples: int = CURVATURE_SAMPLES,
    sampler: str = "sgld",
    params: ParamSelector = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> CalibrationResult:
    """Recommend `estimate_llc` settings for `model` at its current weights (rule in the module docstring).

    nbeta, localization: fixed values (defaults n / log n and max(nβ / 100, MIN_LOCALIZATION)); ε,
    the batch, burn-in and draws are then chosen. num_chains: chains of the recommended estimate.
    min_batch_size, max_batch_size: the smallest and largest minibatch allowed (default 256 and n, the
    full batch; below a few hundred samples a step of a small model costs about the same whatever its
    batch). max_steps: the most SGLD steps per chain, burn-in included, of the recommended estimate.
    target_stderr: relative standard error the recommended draws aim at. curvature_samples: the
    Hessian's subsample (its HVPs cost most for large models). Cost: a few short probes of 2 chains
    (and two longer ones for the localization check), plus one Lanczos run (≤ 30 Hessian-vector
    products on ≤ 1024 samples) and 256 per-sample gradients per probe.
    """
    n = len(data)
    nbeta = default_nbeta(n) if nbeta is None else float(nbeta)
    if localization is None:
        gamma = max(nbeta * LOCALIZATION_PER_NBETA, MIN_LOCALIZATION)
    else:
        gamma = float(localization)
    max_batch = n if max_batch_size is None else min(int(max_batch_size), n)
    min_batch = min(int(min_batch_size), max_batch)
    if not (nbeta > 0 and gamma > 0):
        raise ValueError(f"calibrate needs positive nbeta and localization, got nbeta={nbeta}, localization={gamma}")
    if max_batch < 1 or max_steps < 2 * MIN_DRAWS or num_chains < 1:
        raise ValueError(f"need max_batch_size >= 1, max_steps >= {2 * MIN_DRAWS}, num_chains >= 1; got "
                         f"{max_batch_size}, {max_steps}, {num_chains}")
    problem = FunctionalProblem(model, loss_fn, params, device)
    anchor = measure_anchor(problem, data, seed)
    curvature = max(top_curvature(problem, data, seed, num_samples=curvature_samples), 0.0)
    noise_scale = anchor.noise_scale

    rows, probe, max_step = [], None, math.inf
    for round_ in range(MAX_ROUNDS):
        choice = _choose(curvature, noise_scale, nbeta, gamma, n, min_batch, max_batch, max_steps, max_step)
        probe, final = sample_llc(problem, data, anchor, num_chains=PROBE_CHAINS, num_draws=PROBE_DRAWS,
                           num_burnin=choice.num_burnin, step_size=choice.step_size, nbeta=nbeta,
                           localization=gamma, batch_size=choice.batch_size, sampler=sampler, seed=seed + round_ + 1,
                           progress=progress)
        d = probe.diagnostics
        rows.append(_table_row(choice, gamma, curvature, noise_scale, probe))
        if d["num_diverged"]:  # the chains met curvature beyond what was measured: a quarter of the step
            max_step = choice.step_size / 4
        if final is None:
            continue
        new_curvature = max(curvature, top_curvature(problem, data, seed, weights=final, num_samples=curvature_samples))
        new_noise = max(noise_scale, d["noise_scale"])
        # Noise growth needs another round only where the noise matters: near its target at this choice.
        noise_matters = noise_ratio(new_noise, choice.step_size, nbeta, choice.batch_size, n) > NOISE_TARGET / 2
        grew = (new_curvature > curvature * (1 + CONVERGED_CHANGE)
                or (noise_matters and new_noise > noise_scale * (1 + CONVERGED_CHANGE)))
        curvature, noise_scale = new_curvature, new_noise
        if not grew and not is_trending(probe.mean, d) and not d["num_diverged"]:
            break

    num_rounds = len(rows)
    choice = _choose(curvature, noise_scale, nbeta, gamma, n, min_batch, max_batch, max_steps, max_step)
    # The localization check: two probes, at γ and 3γ, sized for CHECK_STDERR each; the one at γ is also
    # the longest probe, so the estimate's draws are sized from it.
    check_draws = _size_draws(probe, PROBE_CHAINS, CHECK_STDERR, max_steps - choice.num_burnin)
    check_choice = _choose(curvature, noise_scale, nbeta, LOCALIZATION_CHECK_FACTOR * gamma, n, min_batch, max_batch,
                           max_steps, max_step)
    checks = []
    pairs = [(gamma, choice), (LOCALIZATION_CHECK_FACTOR * gamma, check_choice)]
    for offset, (this_gamma, this_choice) in enumerate(pairs):
        result, _ = sample_llc(problem, data, anchor, num_chains=PROBE_CHAINS,
                               num_draws=max(check_draws, PROBE_DRAWS),
                               num_burnin=this_choice.num_burnin, step_size=this_choice.step_size, nbeta=nbeta,
                               localization=this_gamma, batch_size=this_choice.batch_size, sampler=sampler,
                               seed=seed + MAX_ROUNDS + 1 + offset, progress=progress)
        rows.append(_table_row(this_choice, this_gamma, curvature, noise_scale, result))
        checks.append(result)
    probe, check = checks
    num_draws = _size_draws(probe, num_chains, target_stderr, max_steps - choice.num_burnin)
    recommended = dict(step_size=choice.step_size, nbeta=nbeta, localization=gamma, batch_size=choice.batch_size,
                       num_chains=num_chains, num_draws=num_draws, num_burnin=choice.num_burnin, sampler=sampler)
    if params is not None:
        recommended["params"] = params
    reason = (f"ε = 1/(8(nβ·h + γ)) with top curvature h = {curvature:.4g} over {num_rounds} probe round(s), "
              f"batch {choice.batch_size} for minibatch noise ≤ {NOISE_TARGET:.0%} of the injected noise, "
              f"burn-in {BURNIN_RELAXATIONS}/(εγ) = {choice.num_burnin} steps")
    problems = list(choice.problems)
    change = check.mean / probe.mean - 1 if probe.mean > 0 and math.isfinite(check.mean) else math.nan
    if _localization_dominated(probe, check):
        problems.append(f"λ̂ changes by {change:+.0%} when the localization triples (γ {gamma:.3g} → "
                        f"{LOCALIZATION_CHECK_FACTOR * gamma:.3g}): "
                        "the localization, not the loss, confines the chains, and λ̂ is largely set by γ "
                        "(compare estimates at γ/3 and 3γ before reading it as the model's)")
    if problems:
        warnings.warn("calibrate: " + "; ".join(problems), RuntimeWarning, stacklevel=2)
    return CalibrationResult(table=pd.DataFrame(rows), localization_change=change, recommended=recommended,
                             reason=reason, problems=problems)


def _table_row(choice: _Choice, gamma: float, curvature: float, noise_scale: float, probe: LLCResult) -> dict:
    """One row of `CalibrationResult.table`: a probe's settings and what it measured."""
    d = probe.diagnostics
    return dict(step_size=choice.step_size, batch_size=choice.batch_size, num_burnin=choice.num_burnin,
                curvature=curvature, noise_scale=noise_scale, llc=probe.mean, stderr=probe.stderr, ess=d["ess"],
                rhat=d["rhat"], trend_z=d["trend_z"], noise_ratio=d["noise_ratio"], num_diverged=d["num_diverged"],
                localization=gamma)


def _localization_dominated(probe: LLCResult, check: LLCResult) -> bool:
    """Whether λ̂ at the check's γ differs from λ̂ at γ by more than LOCALIZATION_TOLERANCE (relative) and by
    more than twice the two probes' combined standard error."""
    if not (probe.mean > 0 and math.isfinite(check.mean)):
        return False
    difference = abs(check.mean - probe.mean)
    finite = math.isfinite(probe.stderr) and math.isfinite(check.stderr)
    stderr = math.hypot(probe.stderr, check.stderr) if finite else 0.0
    return difference > LOCALIZATION_TOLERANCE * probe.mean and difference > 2 * stderr


def _choose(curvature: float, noise_scale: float, nbeta: float, gamma: float, n: int, min_batch: int,
            max_batch: int, max_steps: int, max_step: float) -> _Choice:
    """Steps 2–4 of the rule for the measured curvature and noise (and at most `max_step`, a quarter of a
    step size at which probe chains diverged)."""
    problems = []
    step_size = min(STEP_CURVATURE_PRODUCT / (nbeta * curvature + gamma), max_step)
    batch = _batch_for(noise_scale, step_size, nbeta, n, min_batch, max_batch)
    if batch is None:  # lower ε until the largest batch keeps the noise at its target
        batch = max_batch
        step_size = NOISE_TARGET * 4 * batch / (nbeta**2 * noise_scale * (n - batch) / (n - 1))
    longest_burnin = max_steps - MIN_DRAWS
    if BURNIN_RELAXATIONS / (step_size * gamma) > longest_burnin:
        raised = BURNIN_RELAXATIONS / (gamma * longest_burnin)
        kappa = nbeta * curvature + gamma
        problems.append(f"step size raised from {step_size:.3g} to {raised:.3g} to fit burn-in into max_steps="
                        f"{max_steps}: ε·κ_max = {raised * kappa:.2g} > {STEP_CURVATURE_PRODUCT:.3g} "
                        "(discretization may inflate λ̂; raise max_steps or localization)")
        step_size = raised
        # the larger step carries more minibatch noise: the batch is chosen again for it
        batch = _batch_for(noise_scale, step_size, nbeta, n, min_batch, max_batch)
        if batch is None:
            batch = max_batch
            problems.append(f"minibatch noise {noise_ratio(noise_scale, step_size, nbeta, batch, n):.2g}× the "
                            f"injected noise at the largest batch {batch} (target {NOISE_TARGET}): λ̂ inflated by "
                            "about as much; raise max_batch_size or max_steps")
    num_burnin = min(math.ceil(BURNIN_RELAXATIONS / (step_size * gamma)), longest_burnin)
    return _Choice(step_size, batch, num_burnin, tuple(problems))


def _batch_for(noise_scale: float, step_size: float, nbeta: float, n: int, min_batch: int,
               max_batch: int) -> int | None:
    """The smallest power of two ≥ `min_batch` (or n) whose noise ratio is ≤ NOISE_TARGET; None above max_batch."""
    sizes = [2**k for k in range(int(math.log2(n)) + 1) if min_batch <= 2**k < n] + [n]
    for batch in [min_batch] + sizes:
        if batch > max_batch:
            return None
        if noise_ratio(noise_scale, step_size, nbeta, batch, n) <= NOISE_TARGET:
            return batch
    return None


def _size_draws(probe: LLCResult, num_chains: int, target_stderr: float, max_draws: int) -> int:
    """Draws per chain so the estimate reaches ESS ≥ MIN_ESS and stderr ≤ target_stderr·|λ̂|, judged
    from the probe's ESS per draw and draw-to-draw spread (assumed the same for the estimate)."""
    d = probe.diagnostics
    probe_draws = d["num_draws"] * d["num_chains"]
    ess = d["ess"] if math.isfinite(d["ess"]) and d["ess"] > 0 else 1.0
    wanted_ess = MIN_ESS
    if math.isfinite(probe.stderr) and probe.mean > 0:
        spread = probe.stderr * math.sqrt(ess)
        wanted_ess = max(wanted_ess, (spread / (target_stderr * probe.mean)) ** 2)
    draws = math.ceil(DRAW_SAFETY * wanted_ess * probe_draws / ess / num_chains)
    return int(min(max(draws, MIN_DRAWS), max(max_draws, MIN_DRAWS)))
