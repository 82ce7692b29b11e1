"""Convergence diagnostics for traces of shape (chains, draws), and the health checks of an LLC estimate.

R̂ and ESS are ArviZ's rank-normalized split-R̂ and bulk effective sample size (Vehtari, Gelman,
Simpson, Carpenter & Bürkner 2021), the Bayesian-workflow standard. `trend` compares the two halves
of each chain: a trace still rising (or falling) has not equilibrated, whatever R̂ says when all
chains rise together.
"""
from __future__ import annotations

import logging
import math
import warnings

import numpy as np


def _arviz():
    # ArviZ 0.x announces its refactor on import: a FutureWarning, and INFO lines from arviz.preview
    # ("arviz_base not installed") that a Hydra app would print to the console.
    logging.getLogger("arviz.preview").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz  # inside the warnings filter (see above); also ~1 s, paid only when a trace is diagnosed

    return arviz


def _usable(traces: np.ndarray) -> bool:
    return traces.ndim == 2 and traces.shape[1] >= 4 and np.isfinite(traces).all() and np.ptp(traces) > 0


def rhat(traces: np.ndarray) -> float:
    """Rank-normalized split-R̂ of `traces` (chains, draws); NaN with < 4 draws, non-finite or constant traces."""
    traces = np.asarray(traces, dtype=np.float64)
    if not _usable(traces):
        return float("nan")
    return float(_arviz().rhat(traces, method="rank"))


def ess(traces: np.ndarray) -> float:
    """Bulk effective sample size of `traces` (chains, draws), all chains together; NaN as for `rhat`."""
    traces = np.asarray(traces, dtype=np.float64)
    if not _usable(traces):
        return float("nan")
    return float(_arviz().ess(traces, method="bulk"))


def trend(traces: np.ndarray) -> tuple[float, float]:
    """(difference, z) of the second half's mean minus the first half's, over all chains.

    z divides by the standard error of the difference, each half's from its own ESS; NaN when
    the halves cannot be assessed (too few draws, constant).
    """
    traces = np.asarray(traces, dtype=np.float64)
    half = traces.shape[1] // 2 if traces.ndim == 2 else 0
    if half < 4:
        return float("nan"), float("nan")
    first, second = traces[:, :half], traces[:, -half:]
    difference = float(second.mean() - first.mean())
    variances = [h.var(ddof=1) / e for h, e in ((first, ess(first)), (second, ess(second))) if math.isfinite(e)]
    if len(variances) < 2 or sum(variances) <= 0:
        return difference, float("nan")
    return difference, difference / math.sqrt(sum(variances))


def still_rising(traces: np.ndarray, tolerance: float, z: float = 2.0) -> bool:
    """Whether `traces` (chains, steps from the chains' start) still rise: the mean of their second half exceeds
    the mean of the quarter before it by more than `tolerance` × its magnitude and by more than `z` standard
    errors of the difference (each window's from its ESS; where a window is too short for one, the tolerance
    alone decides). Chains with a non-finite value (diverged) are left out. The windows grow with the trace,
    so a rise too slow to show in a short window shows once the trace is as long as its relaxation time (the
    settled burn-in of `devinterp.slt.llc.settled_run`)."""
    traces = np.asarray(traces, dtype=np.float64)
    traces = traces[np.isfinite(traces).all(axis=1)]
    steps = traces.shape[1]
    if not len(traces) or steps < 4:
        return False
    early, late = traces[:, steps // 4: steps // 2], traces[:, steps // 2:]
    rise = float(late.mean() - early.mean())
    variances = [w.var(ddof=1) / e for w, e in ((early, ess(early)), (late, ess(late))) if math.isfinite(e) and e > 0]
    significant = len(variances) < 2 or rise > z * math.sqrt(sum(variances))
    return rise > tolerance * abs(float(late.mean())) and significant
