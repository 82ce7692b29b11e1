"""How reproducible a stage table is: the tables of re-measured curves.

A stage boundary found from noisy LLC estimates has a positional uncertainty of its own: measured again
(new chains, same checkpoints), the curve would scatter by its noise and the boundary could land a few
checkpoints away. `remeasured_tables` imitates that: each replicate draws the noise-free curve from the
smoother's posterior at every measured step, adds each point's noise (its moderated std,
`detect.moderated_spread`, and the fitted excess), and cuts the result into stages with
`detect_transitions`, as the report does. `boundary_ranges` says, per boundary of a reference table,
where the replicates with the same stage types put it.

Used to judge a cheaper schedule (`adaptive`) fairly: asking it to reproduce a boundary more precisely than
the dense table reproduces itself asks it to reproduce noise.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from devinterp.transitions.detect import detect_transitions, fit_llc_curve, moderated_spread
from devinterp.transitions.smoothing import log_step


def remeasured_tables(curve: pd.DataFrame, count: int, rng: np.random.Generator, *, llc: str, llc_std: str,
                      llc_healthy: str | None = None) -> list[pd.DataFrame]:
    """The stage tables (`detect_transitions`, LLC only) of `count` re-measured versions of `curve` (indexed by
    step; columns `llc`, `llc_std` and optionally `llc_healthy`)."""
    columns = {"llc": llc, "llc_std": llc_std, "llc_healthy": llc_healthy}
    curve = curve.sort_index().rename_axis("step")
    fit = fit_llc_curve(curve, **columns).fit
    noise = np.sqrt(fit.fitted_noise_var + moderated_spread(curve.index, curve[llc_std]) ** 2)
    draws = fit.sample(log_step(curve.index), count, rng)
    draws += noise * rng.standard_normal(draws.shape)
    return [detect_transitions(curve.assign(**{llc: draw}), loss=None, **columns) for draw in draws]


def boundary_ranges(reference: pd.DataFrame, tables: Sequence[pd.DataFrame], steps: Sequence[int],
                    coverage: float = 0.8) -> list[tuple[int, int]]:
    """Per boundary of `reference` (a stage table), the central `coverage` of its position among the `tables`
    with the same stage types, as indices into `steps` (the saved checkpoints; a position between them
    counts as the nearest). With no such table, the reference's own position."""
    alike = [t for t in tables if list(t["type"]) == list(reference["type"])]
    tail = (1 - coverage) / 2
    ranges = []
    for k, boundary in enumerate(reference["end_step"].iloc[:-1]):
        positions = ([nearest_checkpoint(steps, t["end_step"].iloc[k]) for t in alike]
                     or [nearest_checkpoint(steps, boundary)])
        ranges.append((int(np.floor(np.quantile(positions, tail))), int(np.ceil(np.quantile(positions, 1 - tail)))))
    return ranges


def nearest_checkpoint(steps: Sequence[int], step) -> int:
    """The index into `steps` (the saved checkpoints) of the one nearest to `step`, which need not be one."""
    return int(np.argmin(np.abs(np.asarray(steps, dtype=float) - float(step))))
