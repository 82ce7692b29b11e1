"""Choosing SGLD settings for `estimate_llc` from the loss's local geometry, checked by measurement.

λ̂ is biased three ways by its settings: a step size ε too large inflates it (discretization), a batch
too small for ε inflates it (minibatch gradient noise heats the chains), and too few steps deflate it
(the chains have not equilibrated). On real transformer checkpoints the posterior is stiff (κ_max/γ in
the hundreds, `devinterp.slt.preconditioning`), so plain SGLD cannot be both accurate and equilibrated
within a few hundred steps. `calibrate` therefore uses the `lm_sgld` sampler with the diagonal
preconditioner by default and applies this rule:

1. nβ = n / log n and localization γ = max(nβ / 100, 5) unless given. (γ biases a direction of
   per-sample curvature h by the factor nβh / (nβh + γ), so it must scale with nβ; 1/100 keeps that
   bias to a few percent on deep linear networks. The floor, the low end of published settings,
   acts below n ≈ 4000.)
2. ε = min(s/γ, 2/κ_P): s = εγ is the *flat step*, the fraction by which one step relaxes a
   coordinate that only the localization holds (P = 1 there: it relaxes in 1/s steps); κ_P =
   nβ·h_P + γ is the largest curvature at w* in the preconditioner's metric (h_P the top eigenvalue of
   √P ∇²L √P): `lm_sgld` is stable, and exact on a Gaussian, up to ε·κ < 4. The budget sets the first
   s: the smallest of FLAT_STEPS that leaves 16 relaxations in `max_steps`, at most 0.04 (25 steps per
   relaxation: max_steps 400) and at least 0.005 (the library's default budget). A longer chain gets a
   smaller step: bias that grows as chains drift into regions where P fits less well (a deep linear
   network's scaling valleys: +65 % at s = 0.02 after 10 000 steps, exact at s = 0.005) has less time to
   build up in a short one. (Where the chains go the top curvature can be far larger: 9×
   at the grokking checkpoint 1200. Capping ε by it, as this rule once did, left the chains ~25 %
   short of equilibrium there, while s = 0.04 neither diverged nor moved λ̂ by more than 1.5 %.
   Stability is therefore checked by running: a probe whose chains diverge caps ε at a quarter of
   its step size, and estimates halve ε where a chain diverges. Accuracy there is the estimate's
   step check, `estimate_llc(step_check=True)`: the burn-in runs at ε, and where ε·κ_P at a chain's
   end exceeds 2, the draws are taken again at the step that meets it.)
3. Batch: the smallest power of two (≥ `min_batch_size`) at which minibatch noise can add at most
   NOISE_TARGET = 2 % to λ̂ (`devinterp.slt.geometry.noise_inflation`, from the noise where a probe's
   chains end up and the probe's λ̂; the first probe runs at the smallest batch); if even
   `max_batch_size` does not, ε is lowered until it does.
4. After each probe the batch and ε are chosen again for the noise it measured; a new choice gets
   a new probe.
5. Step-halving check: a second probe at ε/2, continuing the first probe's chains. Discretization
   and minibatch-noise biases both shrink with ε and inflate λ̂, so where λ̂ falls by more than
   BIAS_TOLERANCE (and twice the standard error of the difference), s is halved and 4–5 repeated. Measured on real
   checkpoints (induction, grokking, markov-ICL): s = 0.04 reads 1–3 % above s = 0.01; s = 0.08,
   5–20 % above on markov-ICL.
6. Burn-in: at least BURNIN_RELAXATIONS/s = 200 steps at s = 0.04, and as long as the draws (half of
   the chain) up to SLOW_MODE_RELAXATIONS/s = 800: the slowest modes of real checkpoints relax over
   several hundred steps at s = 0.04 (grokking checkpoint 207: ~400), much slower than the
   localization alone. Draws: enough for ESS ≥ 100 and a standard error ≤ `target_stderr` × λ̂,
   judged from the longest probe. Within `max_steps` both are cut (the burn-in to half of it first).
   That burn-in is a cap: the estimate's burn-in is settled (`min_burnin`, `devinterp.slt.llc.settled_run`),
   from MIN_BURNIN_RELAXATIONS/s = 50 steps at s = 0.04 and as long as the draws (up to
   SLOW_MODE_RELAXATIONS/s), doubling while the trace still rises. Most checkpoints settle well before the
   cap (the presets' 100 draws: 100 of 200); the slow ones run to it (grokking 207 and 1200). The probes
   keep the full burn-in (`_Prober`).
7. Localization check: probes at γ (the last probe, where its draws suffice) and 3γ. Where λ̂ changes
   by more than 30 % (and by more than twice the standard error), the localization rather than the
   loss confines the chains: `problems` says so. The check is coarse, there for gross cases (a quartic
   loss at n = 1e5, where γ ∝ nβ outgrows the posterior's width and λ̂ reads 25 % low from healthy
   chains).

Limits the budget (`max_steps`, `max_batch_size`) forces are named in `problems` with a warning.
The recommendation includes `stability_retries=2`: a checkpoint stiffer than the calibrated one
halves ε where a chain diverges (`estimate_llc`).

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
from devinterp.slt.geometry import CURVATURE_SAMPLES, batch_for_noise, drift_curvature, noise_inflation
from devinterp.slt.llc import MIN_ESS, PRECONDITIONERS, LLCResult, default_nbeta, measure_anchor, sample_llc
from devinterp.slt.preconditioning import curvature_diagonal, diagonal_preconditioner
from devinterp.slt.sampler import FunctionalProblem, LossFn

LOCALIZATION_PER_NBETA = 0.01
MIN_LOCALIZATION = 5.0
FLAT_STEPS = (0.04, 0.02, 0.01, 0.005, 0.0025, 0.00125)  # εγ, tried in this order from the budget's
BUDGET_RELAXATIONS = 16.0  # the first flat step tried is the smallest of FLAT_STEPS >= this / max_steps ...
SMALLEST_FIRST_FLAT_STEP = 0.005  # ... but not below this
STEP_CURVATURE_PRODUCT = 2.0  # ε·κ_P at w*
NOISE_TARGET = 0.02  # the most minibatch noise may add to λ̂, relative
BURNIN_RELAXATIONS = 8.0  # burn-in >= this / (εγ) steps ...
MIN_BURNIN_RELAXATIONS = 2.0  # ... where the trace has not settled sooner (the settled burn-in starts at this / (εγ))
SLOW_MODE_RELAXATIONS = 32.0  # ... and as long as the draws, up to this / (εγ) steps
BIAS_TOLERANCE = 0.02  # relative change of λ̂ between ε and ε/2 that halves the flat step
PROBE_CHAINS = 4
PROBE_DRAWS = 200
MAX_ROUNDS = 6
CONVERGED_CHANGE = 0.1  # stop re-measuring once h and the noise grew by less than this (relative)
MIN_DRAWS = 100
DRAW_SAFETY = 1.5  # a probe's ESS per draw is itself a noisy estimate
LOCALIZATION_CHECK_FACTOR = 3.0  # the check probe's γ, as a multiple of the recommended one
LOCALIZATION_TOLERANCE = 0.3  # relative change of λ̂ between γ and the check's γ that flags the estimate
CHECK_STDERR = 0.03  # relative standard error each localization-check probe is sized for
STABILITY_RETRIES = 2


@dataclass(frozen=True)
class CalibrationResult:
    """table: one row per probe (kind: "probe", "half step", "localization γ" (only where the last probe had
    too few draws to serve as it), "localization 3γ"; step_size, flat_step, batch_size, num_burnin, num_draws,
    curvature (κ_P at w*), and the probe's noise, llc, stderr, ess, rhat, trend_z, noise_inflation,
    num_diverged, localization).
    localization_change: λ̂ at 3γ over λ̂ at the recommended γ, minus 1 (NaN when either probe gave no
    estimate). step_halving_change: λ̂ at ε/2 over λ̂ at the recommended ε, minus 1.
    recommended: keyword arguments for `estimate_llc` (step_size, nbeta, localization, batch_size,
    num_chains, num_draws, num_burnin, sampler, preconditioner, stability_retries, and params when given).
    reason: one sentence saying how the recommendation was chosen.
    problems: which parts of the rule the budget did not allow, and a failed localization check (empty
    when all held)."""

    table: pd.DataFrame
    localization_change: float = math.nan
    step_halving_change: float = math.nan
    recommended: dict = field(default_factory=dict)
    reason: str = ""
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Choice:
    step_size: float
    batch_size: int
    num_burnin: int
    problems: tuple[str, ...]


@dataclass
class _Geometry:
    """What the rule needs to know: κ_P at w*, the per-sample gradient noise tr(√PΣ√P) (the largest seen)
    and λ̂ (the last probe's; None before the first)."""

    curvature: float
    noise: float
    llc: float | None = None


@dataclass(frozen=True)
class _Budget:
    nbeta: float
    gamma: float
    n: int
    min_batch: int
    max_batch: int
    max_steps: int


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
    sampler: str = "lm_sgld",
    preconditioner: str = "diagonal",
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
    Hessian's subsample (its HVPs cost most for large models). sampler, preconditioner: as for
    `estimate_llc`; the rule's ε assumes `lm_sgld`. Cost: a few probes of 4 chains (each 200 draws
    after its burn-in), Lanczos runs (≤ 30 Hessian-vector products on ≤ `curvature_samples` samples)
    at w* and at probes' end states, and 256 per-sample gradients per probe.
    """
    budget, num_chains = _budget(data, nbeta, localization, num_chains, min_batch_size, max_batch_size, max_steps)
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner={preconditioner!r} is not one of {PRECONDITIONERS}")
    problem = FunctionalProblem(model, loss_fn, params, device)
    scale = None
    if preconditioner == "diagonal":
        diagonal = curvature_diagonal(problem, data, seed)
        scale = diagonal_preconditioner(diagonal, budget.nbeta, budget.gamma).to(problem.dtype)
    anchor = measure_anchor(problem, data, seed, preconditioner=scale)
    kappa = drift_curvature(problem, data, seed, budget.nbeta, budget.gamma, num_samples=curvature_samples,
                            preconditioner=scale)
    geometry = _Geometry(kappa, anchor.noise)
    sample = _Prober(problem, data, anchor, budget, sampler, scale, seed, progress)

    rows, flat_index, max_step, probe, half, probed = [], _first_flat_step(max_steps), math.inf, None, None, None
    for _ in range(MAX_ROUNDS):
        choice = probed = _choose(geometry, budget, FLAT_STEPS[flat_index], max_step)
        probe, final = sample(choice, budget.gamma, PROBE_DRAWS)
        rows.append(_table_row("probe", choice, budget.gamma, geometry, probe))
        if probe.diagnostics["num_diverged"]:  # the chains met curvature beyond what was measured
            max_step = choice.step_size / 4
            continue
        geometry.noise = max(geometry.noise, probe.diagnostics["noise"])
        geometry.llc = probe.mean
        if _choose(geometry, budget, FLAT_STEPS[flat_index], max_step) != choice:
            continue
        half_choice = _Choice(choice.step_size / 2, choice.batch_size, choice.num_burnin, choice.problems)
        half, _ = sample(half_choice, budget.gamma, PROBE_DRAWS, initial_weights=final)
        rows.append(_table_row("half step", half_choice, budget.gamma, geometry, half))
        if not _step_matters(probe, half) or flat_index == len(FLAT_STEPS) - 1:
            break
        flat_index += 1

    choice = _choose(geometry, budget, FLAT_STEPS[flat_index], max_step)
    check_choice = _choose(geometry, _scaled_gamma(budget, LOCALIZATION_CHECK_FACTOR), FLAT_STEPS[flat_index], max_step)
    check_draws = max(_size_draws(probe, PROBE_CHAINS, CHECK_STDERR, max_steps), PROBE_DRAWS)
    checks = []
    for kind, gamma, this_choice in [("localization γ", budget.gamma, choice),
                                     ("localization 3γ", LOCALIZATION_CHECK_FACTOR * budget.gamma, check_choice)]:
        if gamma == budget.gamma and this_choice == probed and check_draws == PROBE_DRAWS:
            checks.append(probe)  # the last probe already is this check: the same settings and draws
            continue
        result, _ = sample(this_choice, gamma, check_draws)
        rows.append(_table_row(kind, this_choice, gamma, geometry, result))
        checks.append(result)
    return _result(rows, checks, probe, half, choice, budget, num_chains, target_stderr, sampler, preconditioner,
                   params, geometry)


class _Prober:
    """Runs probes of PROBE_CHAINS chains, each with a fresh seed, after the full burn-in (not the settled one:
    a probe's ESS sizes the estimate's draws, and draws that start while a slow mode still moves read a far
    lower ESS, 55 against 412 on the induction demo's checkpoint 812, so twice the draws)."""

    def __init__(self, problem, data, anchor, budget: _Budget, sampler: str, scale, seed: int, progress: bool):
        self.problem, self.data, self.anchor, self.budget = problem, data, anchor, budget
        self.sampler, self.scale, self.seed, self.progress, self.count = sampler, scale, seed, progress, 0

    def __call__(self, choice: _Choice, gamma: float, num_draws: int,
                 initial_weights: torch.Tensor | None = None) -> tuple[LLCResult, torch.Tensor | None]:
        self.count += 1
        return sample_llc(self.problem, self.data, self.anchor, num_chains=PROBE_CHAINS, num_draws=num_draws,
                          num_burnin=choice.num_burnin, step_size=choice.step_size, nbeta=self.budget.nbeta,
                          localization=gamma, batch_size=choice.batch_size, sampler=self.sampler,
                          seed=self.seed + self.count, preconditioner=self.scale, initial_weights=initial_weights,
                          progress=self.progress)


def _first_flat_step(max_steps: int) -> int:
    """Index into FLAT_STEPS of the first flat step to try: the smallest that leaves BUDGET_RELAXATIONS
    relaxations in max_steps, at least SMALLEST_FIRST_FLAT_STEP."""
    wanted = max(BUDGET_RELAXATIONS / max_steps, SMALLEST_FIRST_FLAT_STEP)
    fitting = [i for i, s in enumerate(FLAT_STEPS) if s >= wanted]
    return fitting[-1] if fitting else 0


def _min_burnin(flat_step: float, num_draws: int, num_burnin: int) -> int:
    """Where the settled burn-in starts: MIN_BURNIN_RELAXATIONS relaxations of the flat step s = εγ, and the
    slow-mode length (`_slow_mode_burnin`); at most the rule's burn-in `num_burnin`."""
    return min(max(math.ceil(MIN_BURNIN_RELAXATIONS / flat_step), _slow_mode_burnin(flat_step, num_draws)), num_burnin)


def _slow_mode_burnin(flat_step: float, num_draws: int) -> int:
    """A burn-in as long as the draws, up to SLOW_MODE_RELAXATIONS relaxations of the flat step s = εγ: a mode
    slow on the draws' time scale may not rise measurably over a shorter one (on generated deep linear networks
    with 1 500–5 600 draws, a settled burn-in from 400 steps read 2–3 % lower than one as long as the draws)."""
    return min(num_draws, math.ceil(SLOW_MODE_RELAXATIONS / flat_step))


def _budget(data, nbeta, localization, num_chains, min_batch_size, max_batch_size, max_steps) -> tuple[_Budget, int]:
    n = len(data)
    nbeta = default_nbeta(n) if nbeta is None else float(nbeta)
    gamma = max(nbeta * LOCALIZATION_PER_NBETA, MIN_LOCALIZATION) if localization is None else float(localization)
    max_batch = n if max_batch_size is None else min(int(max_batch_size), n)
    if not (nbeta > 0 and gamma > 0):
        raise ValueError(f"calibrate needs positive nbeta and localization, got nbeta={nbeta}, localization={gamma}")
    if max_batch < 1 or max_steps < 2 * MIN_DRAWS or num_chains < 1:
        raise ValueError(f"need max_batch_size >= 1, max_steps >= {2 * MIN_DRAWS}, num_chains >= 1; got "
                         f"{max_batch_size}, {max_steps}, {num_chains}")
    return _Budget(nbeta, gamma, n, min(int(min_batch_size), max_batch), max_batch, max_steps), num_chains


def _scaled_gamma(budget: _Budget, factor: float) -> _Budget:
    return _Budget(budget.nbeta, budget.gamma * factor, budget.n, budget.min_batch, budget.max_batch, budget.max_steps)


def _step_matters(probe: LLCResult, half: LLCResult) -> bool:
    """Whether λ̂ at ε/2 lies below λ̂ at ε by more than BIAS_TOLERANCE (relative) and by more than twice the
    standard error of the difference. Both biases that shrink with ε inflate λ̂; a half-step probe reading
    higher has only equilibrated further (it continues the first probe's chains)."""
    if not (math.isfinite(probe.mean) and math.isfinite(half.mean)):
        return True
    difference = probe.mean - half.mean
    finite = math.isfinite(probe.stderr) and math.isfinite(half.stderr)
    stderr = math.hypot(probe.stderr, half.stderr) if finite else 0.0
    return difference > BIAS_TOLERANCE * abs(half.mean) and difference > 2 * stderr


def _result(rows, checks, probe, half, choice, budget: _Budget, num_chains, target_stderr, sampler, preconditioner,
            params, geometry) -> CalibrationResult:
    """The recommendation from the last probes, and what to say about it."""
    at_gamma, at_check = checks
    num_burnin, num_draws = _split_steps(at_gamma, num_chains, target_stderr, choice, budget)
    recommended = dict(step_size=choice.step_size, nbeta=budget.nbeta, localization=budget.gamma,
                       batch_size=choice.batch_size, num_chains=num_chains, num_draws=num_draws, num_burnin=num_burnin,
                       min_burnin=_min_burnin(choice.step_size * budget.gamma, num_draws, num_burnin),
                       sampler=sampler, preconditioner=preconditioner, stability_retries=STABILITY_RETRIES)
    if params is not None:
        recommended["params"] = params
    flat_step = choice.step_size * budget.gamma
    reason = (f"ε = min(s/γ, {STEP_CURVATURE_PRODUCT:g}/κ_P) with flat step s = εγ = {flat_step:.3g} and "
              f"κ_P = {geometry.curvature:.4g} (preconditioner {preconditioner}), batch {choice.batch_size} for "
              f"minibatch noise adding ≤ {NOISE_TARGET:.0%} to λ̂, burn-in {num_burnin} steps "
              f"(≥ {BURNIN_RELAXATIONS:g}/s; from {recommended['min_burnin']} where the trace settles sooner)")
    problems = list(choice.problems)
    change = at_check.mean / at_gamma.mean - 1 if at_gamma.mean > 0 and math.isfinite(at_check.mean) else math.nan
    halving = half.mean / probe.mean - 1 if half is not None and probe.mean > 0 else math.nan
    if half is not None and _step_matters(probe, half):
        problems.append(f"λ̂ still changes by {halving:+.0%} when ε halves at the smallest flat step tried: "
                        "discretization or minibatch noise biases it; raise max_batch_size or max_steps")
    if _localization_dominated(at_gamma, at_check):
        problems.append(f"λ̂ changes by {change:+.0%} when the localization triples (γ {budget.gamma:.3g} → "
                        f"{LOCALIZATION_CHECK_FACTOR * budget.gamma:.3g}): "
                        "the localization, not the loss, confines the chains, and λ̂ is largely set by γ "
                        "(compare estimates at γ/3 and 3γ before reading it as the model's)")
    if problems:
        warnings.warn("calibrate: " + "; ".join(problems), RuntimeWarning, stacklevel=3)
    return CalibrationResult(table=pd.DataFrame(rows), localization_change=change, step_halving_change=halving,
                             recommended=recommended, reason=reason, problems=problems)


def _table_row(kind: str, choice: _Choice, gamma: float, geometry: _Geometry, probe: LLCResult) -> dict:
    """One row of `CalibrationResult.table`: a probe's settings and what it measured."""
    d = probe.diagnostics
    return dict(kind=kind, step_size=choice.step_size, flat_step=choice.step_size * gamma,
                batch_size=choice.batch_size, num_burnin=choice.num_burnin, num_draws=d["num_draws"],
                curvature=geometry.curvature, noise=d["noise"], llc=probe.mean, stderr=probe.stderr, ess=d["ess"],
                rhat=d["rhat"], trend_z=d["trend_z"], noise_inflation=d["noise_inflation"],
                num_diverged=d["num_diverged"], localization=gamma)


def _localization_dominated(probe: LLCResult, check: LLCResult) -> bool:
    """Whether λ̂ at the check's γ differs from λ̂ at γ by more than LOCALIZATION_TOLERANCE (relative) and by
    more than twice the two probes' combined standard error."""
    if not (probe.mean > 0 and math.isfinite(check.mean)):
        return False
    difference = abs(check.mean - probe.mean)
    finite = math.isfinite(probe.stderr) and math.isfinite(check.stderr)
    stderr = math.hypot(probe.stderr, check.stderr) if finite else 0.0
    return difference > LOCALIZATION_TOLERANCE * probe.mean and difference > 2 * stderr


def _choose(geometry: _Geometry, budget: _Budget, flat_step: float, max_step: float) -> _Choice:
    """Steps 2–3 of the rule and the burn-in's relaxations, for the measured geometry, a flat step and at most
    `max_step` (a quarter of a step size at which probe chains diverged)."""
    b = budget
    problems = []
    step_size = min(flat_step / b.gamma, STEP_CURVATURE_PRODUCT / geometry.curvature, max_step)
    batch = _batch_for(geometry, step_size, b)
    if batch is None:  # lower ε until the largest batch keeps the noise at its target
        batch = b.max_batch
        # |λ̂|: a probe of an untrained model can read below L_n(w*), and ε must stay positive
        inflation = noise_inflation(geometry.noise, step_size, b.nbeta, batch, b.n)
        step_size = step_size * NOISE_TARGET * abs(geometry.llc) / inflation
    longest_burnin = b.max_steps - MIN_DRAWS
    if BURNIN_RELAXATIONS / (step_size * b.gamma) > longest_burnin:
        raised = BURNIN_RELAXATIONS / (b.gamma * longest_burnin)
        problems.append(f"step size raised from {step_size:.3g} to {raised:.3g} to fit burn-in into max_steps="
                        f"{b.max_steps}: flat step {raised * b.gamma:.3g}, ε·κ_P = {raised * geometry.curvature:.2g} "
                        "(discretization or noise may bias λ̂; raise max_steps or max_batch_size)")
        step_size = raised
        batch = _batch_for(geometry, step_size, b)  # the larger step carries more minibatch noise
        if batch is None:
            batch = b.max_batch
            inflation = noise_inflation(geometry.noise, step_size, b.nbeta, batch, b.n) / abs(geometry.llc)
            problems.append(f"minibatch noise can inflate λ̂ by up to {inflation:.0%} at the largest batch {batch} "
                            f"(target {NOISE_TARGET:.0%}); raise max_batch_size or max_steps")
    num_burnin = min(math.ceil(BURNIN_RELAXATIONS / (step_size * b.gamma)), longest_burnin)
    return _Choice(step_size, batch, num_burnin, tuple(problems))


def _batch_for(geometry: _Geometry, step_size: float, budget: _Budget) -> int | None:
    """The smallest power of two ≥ the smallest batch (or n) at which the noise can add at most NOISE_TARGET
    of λ̂; the smallest batch before λ̂ is known; None above the largest batch."""
    b = budget
    if geometry.llc is None:
        return b.min_batch
    return batch_for_noise(geometry.noise, step_size, b.nbeta, b.n, NOISE_TARGET * abs(geometry.llc), b.min_batch,
                           b.max_batch)


def _split_steps(probe: LLCResult, num_chains: int, target_stderr: float, choice: _Choice,
                 budget: _Budget) -> tuple[int, int]:
    """(burn-in, draws) per chain: draws for the target (`_size_draws`), burn-in at least the relaxations and
    the slow-mode length (`_slow_mode_burnin`); within max_steps the burn-in is cut to half of it (not
    below the relaxations) and the draws take the rest."""
    draws = _size_draws(probe, num_chains, target_stderr, budget.max_steps)
    burnin = max(choice.num_burnin, _slow_mode_burnin(choice.step_size * budget.gamma, draws))
    if burnin + draws > budget.max_steps:
        burnin = min(max(choice.num_burnin, budget.max_steps // 2), budget.max_steps - MIN_DRAWS)
        draws = budget.max_steps - burnin
    return burnin, draws


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
