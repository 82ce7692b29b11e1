"""Synthetic training runs with known stage boundaries, for tests and benchmarks.

A curve is given by knots (step_k, value_k). Between consecutive knots it moves from one value
to the next along a cosine ease in x = ln(step + 1),
``v(u) = v_k + (v_{k+1} - v_k) (1 - cos(pi u)) / 2`` with u the position between the knots in x,
so its derivative in log-step is exactly zero at every knot: the interior knots are the true
critical points, i.e. the true stage boundaries. Before the first knot and after the last the
curve is constant.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from devinterp.transitions.smoothing import log_step


def checkpoint_steps(total: int = 2000, n_log: int = 60, n_linear: int = 40) -> np.ndarray:
    """Step 0, plus ~n_log log-spaced steps in [1, total], plus n_linear evenly spaced steps
    (total/n_linear, ..., total); sorted and unique (rounding merges a few early log steps)."""
    log_steps = np.round(np.logspace(0.0, np.log10(total), n_log)).astype(np.int64)
    lin_steps = np.round(np.linspace(total / n_linear, total, n_linear)).astype(np.int64)
    return np.unique(np.concatenate([[0], log_steps, lin_steps]))


def eased_curve(steps, knot_steps: Sequence[float], knot_values: Sequence[float]) -> np.ndarray:
    """Piecewise cosine-eased curve through the knots (see module docstring)."""
    kx = log_step(knot_steps)
    kv = np.asarray(knot_values, dtype=float)
    if len(kx) != len(kv) or len(kx) < 2 or np.any(np.diff(kx) <= 0):
        raise ValueError("need >= 2 knots with strictly increasing steps and one value each")
    x = np.clip(log_step(steps), kx[0], kx[-1])
    k = np.clip(np.searchsorted(kx, x, side="right") - 1, 0, len(kx) - 2)
    u = (x - kx[k]) / (kx[k + 1] - kx[k])
    return kv[k] + (kv[k + 1] - kv[k]) * 0.5 * (1.0 - np.cos(np.pi * u))


@dataclass(frozen=True)
class SyntheticRun:
    steps: np.ndarray
    llc: np.ndarray  # noisy observation
    llc_true: np.ndarray
    llc_std: np.ndarray  # the noise std actually used (what a chain spread would report)
    loss: np.ndarray
    loss_true: np.ndarray
    boundaries: np.ndarray  # true interior boundary steps
    types: tuple[str, ...]  # true stage types, one more than boundaries

    def wide(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"llc/mean": self.llc, "llc/std": self.llc_std, "eval/loss": self.loss},
            index=pd.Index(self.steps, name="step"),
        )

    def long(self) -> pd.DataFrame:
        w = self.wide()
        return w.reset_index().melt(id_vars="step", var_name="name", value_name="value")


def make_run(
    knot_steps: Sequence[int],
    llc_values: Sequence[float],
    loss_values: Sequence[float],
    types: Sequence[str],
    *,
    llc_noise: float,
    loss_noise: float = 0.01,
    seed: int,
    steps=None,
) -> SyntheticRun:
    """A run whose LLC and loss follow eased curves through the same knots, plus Gaussian noise
    of std `llc_noise` / `loss_noise` (numpy default_rng(seed)). `types` has one entry per
    knot interval; the true boundaries are the interior knots."""
    if len(types) != len(knot_steps) - 1:
        raise ValueError("types needs one entry per interval between knots")
    steps = checkpoint_steps() if steps is None else np.asarray(steps, dtype=np.int64)
    rng = np.random.default_rng(seed)
    llc_true = eased_curve(steps, knot_steps, llc_values)
    loss_true = eased_curve(steps, knot_steps, loss_values)
    return SyntheticRun(
        steps=steps,
        llc=llc_true + llc_noise * rng.standard_normal(len(steps)),
        llc_true=llc_true,
        llc_std=np.full(len(steps), float(llc_noise)),
        loss=loss_true + loss_noise * rng.standard_normal(len(steps)),
        loss_true=loss_true,
        boundaries=np.asarray(knot_steps[1:-1], dtype=np.int64),
        types=tuple(types),
    )


# Named scenarios (knots, LLC values, loss values, true types), shared by tests and benchmarks.
# LLC values are in the units of the noise levels used with them (llc_noise ~ 0.3-1).
SCENARIOS: dict[str, tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...], tuple[str, ...]]] = {
    # rise, fall with the loss nearly flat, rise again
    "A-B-A": ((0, 150, 600, 2000), (2.0, 12.0, 7.0, 14.0), (8.0, 4.0, 3.9, 3.0), ("A", "B", "A")),
    # induction-bump-like: rise, a type-B dip, a rise, then a plateau to the end
    "A-B-A-flat": ((0, 80, 250, 900, 2000), (1.0, 8.0, 5.0, 12.0, 12.0), (7.0, 4.0, 3.97, 3.0, 2.98),
                   ("A", "B", "A", "other")),
    # pure noise around a constant LLC
    "flat": ((0, 2000), (5.0, 5.0), (3.0, 3.0), ("other",)),
}


def make_scenario(name: str, *, llc_noise: float, seed: int, loss_noise: float = 0.01, steps=None) -> SyntheticRun:
    """`make_run` for one of `SCENARIOS`."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {sorted(SCENARIOS)}")
    knots, llc_values, loss_values, types = SCENARIOS[name]
    return make_run(knots, llc_values, loss_values, types, llc_noise=llc_noise, loss_noise=loss_noise,
                    seed=seed, steps=steps)
