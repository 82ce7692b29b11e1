"""Choosing SGLD hyperparameters for `estimate_llc` by a cheap grid sweep.

λ̂ depends strongly on the step size ε: too small and the chains have not left w* (λ̂ too low, traces
still rising), too large and discretization bias inflates λ̂ until chains diverge. Between the two, a
sound estimate sits on a *plateau* where λ̂ hardly changes with ε. `calibrate` runs every grid cell
(ε × nβ × γ) as its own group of chains, all cells in one vectorized SGLD run, and picks:

1. A cell is **stable** when none of its chains diverged, its λ̂ is positive and finite, and its
   split-R̂ is at most `max_rhat` (or undefined).
2. Within each (nβ, γ) group, step sizes are sorted; two neighbouring stable cells **agree** when their
   λ̂ differ by at most `plateau_tolerance` (relative to the larger) or by at most twice their combined
   standard error. A **plateau** is a maximal run of neighbouring cells that agree pairwise.
3. Among the (nβ, γ) groups that have a plateau, prefer (in this order) the smallest localization γ
   (γ biases λ̂ downward, by 1/(1 + γ/(nβ h)) in a regular direction of curvature h), then the longest
   plateau, then nβ closest to n / log n; recommend the largest step size of that group's longest
   plateau (ties: the plateau at larger step sizes), since larger steps mix faster.
4. Without any plateau (no two neighbours agree) it falls back to the largest stable step size, and
   without any stable cell to the smallest step size of the grid, with a warning either way.

The λ̂ values in the table come from few draws: use them to choose hyperparameters, then run
`estimate_llc(model, loss_fn, data, **result.recommended)` for the number you report.
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch.utils.data import Dataset

from devinterp.params import ParamSelector
from devinterp.slt.llc import _validate, default_nbeta, summarize_chains
from devinterp.slt.sampler import FunctionalProblem, LossFn, run_chains

DEFAULT_STEP_SIZES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


@dataclass(frozen=True)
class CalibrationResult:
    """table: one row per grid cell (step_size, nbeta, localization, llc, std, rhat, ess, num_diverged,
    fraction_below_init, mean_distance, stable, on_plateau, recommended).
    recommended: keyword arguments for `estimate_llc` (step_size, nbeta, localization, batch_size,
    sampler, and params when given).
    reason: one sentence saying how the recommendation was chosen."""

    table: pd.DataFrame
    recommended: dict = field(default_factory=dict)
    reason: str = ""


def calibrate(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: Dataset,
    *,
    step_sizes: Sequence[float] = DEFAULT_STEP_SIZES,
    nbetas: Sequence[float | None] = (None,),
    localizations: Sequence[float] = (100.0,),
    num_chains: int = 2,
    num_draws: int = 100,
    num_burnin: int = 0,
    batch_size: int = 32,
    sampler: str = "sgld",
    params: ParamSelector = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    plateau_tolerance: float = 0.1,
    max_rhat: float = 1.2,
    progress: bool = False,
) -> CalibrationResult:
    """Sweep step_sizes × nbetas × localizations and recommend `estimate_llc` keyword arguments.

    `nbetas` entries of None mean n / log n with n = len(data). All cells run together as
    len(grid) × num_chains chains of one vectorized SGLD run of num_burnin + num_draws steps, so memory
    grows with the grid size. The selection rule is stated in the module docstring.
    """
    step_sizes = sorted(float(s) for s in step_sizes)
    if not step_sizes or not nbetas or not localizations:
        raise ValueError("step_sizes, nbetas and localizations must each list at least one value")
    for step_size, localization in itertools.product(step_sizes, localizations):
        _validate(num_chains, num_draws, num_burnin, step_size, localization, batch_size)
    n = len(data)
    nbeta_values = [default_nbeta(n) if nb is None else float(nb) for nb in nbetas]
    cells = list(itertools.product(nbeta_values, [float(g) for g in localizations], step_sizes))

    problem = FunctionalProblem(model, loss_fn, params, device)
    init_loss, _ = problem.full_loss_and_grad_norm(data, batch_size)
    chain_values = [value for cell in cells for value in [cell] * num_chains]
    run = run_chains(
        problem,
        data,
        num_chains=len(chain_values),
        num_steps=num_burnin + num_draws,
        step_size=[c[2] for c in chain_values],
        nbeta=[c[0] for c in chain_values],
        localization=[c[1] for c in chain_values],
        init_loss=init_loss,
        batch_size=batch_size,
        sampler=sampler,
        seed=seed,
        progress=progress,
    )
    loss_draws = run.loss_trace[:, num_burnin:].numpy()
    distance_draws = run.distance_trace[:, num_burnin:].numpy()
    diverged_at = run.diverged_at.numpy()

    rows = []
    for index, (nbeta, localization, step_size) in enumerate(cells):
        chains = slice(index * num_chains, (index + 1) * num_chains)
        mean, std, _, diag = summarize_chains(
            loss_draws[chains], distance_draws[chains], diverged_at[chains], init_loss, nbeta
        )
        stable = (
            diag["num_diverged"] == 0
            and math.isfinite(mean)
            and mean > 0
            and not (diag["rhat"] > max_rhat)  # NaN R̂ (constant traces) does not disqualify
        )
        rows.append(
            dict(
                step_size=step_size,
                nbeta=nbeta,
                localization=localization,
                llc=mean,
                std=std,
                rhat=diag["rhat"],
                ess=diag["ess"],
                num_diverged=diag["num_diverged"],
                fraction_below_init=diag["fraction_below_init"],
                mean_distance=diag["mean_distance"],
                stable=stable,
            )
        )
    table = pd.DataFrame(rows)
    table["on_plateau"] = False
    table["recommended"] = False

    choice, reason = _choose(table, num_chains, plateau_tolerance, default_nbeta(n))
    table.loc[choice, "recommended"] = True
    row = table.loc[choice]
    recommended = dict(
        step_size=float(row.step_size),
        nbeta=float(row.nbeta),
        localization=float(row.localization),
        batch_size=batch_size,
        sampler=sampler,
    )
    if params is not None:
        recommended["params"] = params
    return CalibrationResult(table=table, recommended=recommended, reason=reason)


def _agree(a: pd.Series, b: pd.Series, num_chains: int, tolerance: float) -> bool:
    if not (a.stable and b.stable):
        return False
    difference = abs(a.llc - b.llc)
    if difference <= tolerance * max(abs(a.llc), abs(b.llc)):
        return True
    stderr = [s / math.sqrt(num_chains) for s in (a["std"], b["std"]) if math.isfinite(s)]
    return len(stderr) == 2 and difference <= 2 * math.hypot(*stderr)


def _choose(table: pd.DataFrame, num_chains: int, tolerance: float, default: float) -> tuple[int, str]:
    """Index of the recommended row (marking `on_plateau` in place) and the reason, per the module rule."""
    candidates = []  # ((-localization, plateau length, -|log nbeta/default|, largest step), row index)
    for (nbeta, localization), group in table.groupby(["nbeta", "localization"], sort=False):
        group = group.sort_values("step_size")
        indices = list(group.index)
        run: list[int] = []
        for i, index in enumerate(indices):
            if i > 0 and run and _agree(table.loc[run[-1]], table.loc[index], num_chains, tolerance):
                run.append(index)
            else:
                run = [index]
            if len(run) >= 2:
                table.loc[run, "on_plateau"] = True
                key = (-localization, len(run), -abs(math.log(nbeta / default)), table.loc[index, "step_size"])
                candidates.append((key, index))
    if candidates:
        key, index = max(candidates, key=lambda c: c[0])
        row = table.loc[index]
        return index, (
            f"largest step size of the longest λ̂ plateau ({key[1]} step sizes agreeing within the tolerance) "
            f"at nbeta={row.nbeta:.4g}, localization={row.localization:.4g}"
        )
    stable = table[table.stable]
    if len(stable):
        index = stable.sort_values(["step_size", "localization"], ascending=[False, True]).index[0]
        reason = "no plateau found: largest stable step size (widen or refine the step-size grid, or add draws)"
    else:
        index = table.sort_values(["step_size", "localization"]).index[0]
        reason = "no stable cell: smallest step size of the grid (try smaller step sizes or larger localization)"
    warnings.warn(f"calibrate: {reason}", RuntimeWarning, stacklevel=3)
    return index, reason
