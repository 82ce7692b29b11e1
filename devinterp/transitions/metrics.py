"""Reading metric series out of a run's metrics table.

Two layouts are accepted everywhere in `devinterp.transitions`:

- **long** (as stored by the training pipeline): columns `step`, `name`, `value`; any other
  columns are ignored. When a (step, name) pair occurs more than once, the *last* row wins
  (a re-logged value replaces the earlier one).
- **wide**: a DataFrame indexed by step (or with a `step` column) and one column per metric.
  Duplicate step labels are resolved the same way: the last row wins.

Steps are integer training steps (>= 0). Missing values (NaN) are dropped per metric, so metrics
logged at different checkpoints (e.g. the LLC at fewer steps than the loss) are fine.
The caller's DataFrame is never modified.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import numpy as np
import pandas as pd

LONG_COLUMNS = ("step", "name", "value")


def is_long_format(df: pd.DataFrame) -> bool:
    """True when `df` has the long layout (`step`, `name`, `value` columns)."""
    return all(c in df.columns for c in LONG_COLUMNS)


def to_wide(df: pd.DataFrame) -> pd.DataFrame:
    """Return a wide copy of `df`: float columns per metric, index `step` (int, sorted, unique)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"metrics table must be a pandas DataFrame, got {type(df).__name__}")
    if is_long_format(df):
        long = df.loc[:, list(LONG_COLUMNS)]
        # keep="last": the last logged value of a (step, name) pair wins; stable row order.
        long = long.drop_duplicates(subset=["step", "name"], keep="last")
        wide = long.pivot(index="step", columns="name", values="value")
        wide.columns = [str(c) for c in wide.columns]
    else:
        wide = df.set_index("step") if "step" in df.columns else df.copy()
        wide = wide[~wide.index.duplicated(keep="last")]
    try:
        steps = np.asarray(wide.index, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError("metrics table: steps (index or `step` column) must be numeric") from err
    if np.any(~np.isfinite(steps)) or np.any(steps < 0) or np.any(steps != np.round(steps)):
        raise ValueError("metrics table: steps must be finite non-negative integers")
    wide = wide.set_axis(pd.Index(steps.astype(np.int64), name="step"), axis=0)
    return wide.sort_index()


def metric_names(wide: pd.DataFrame) -> list[str]:
    return [str(c) for c in wide.columns]


def expand_names(wide: pd.DataFrame, patterns: Sequence[str]) -> list[str]:
    """Metric names matching `patterns` (exact names or fnmatch globs), in table order, unique.

    A pattern without glob characters must name an existing metric (ValueError otherwise);
    a glob that matches nothing is silently skipped (optional signals)."""
    names = metric_names(wide)
    out: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            matches = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        elif pattern in names:
            matches = [pattern]
        else:
            raise ValueError(f"metrics table has no metric {pattern!r}; available: {names}")
        out.extend(m for m in matches if m not in out)
    return out


def get_series(wide: pd.DataFrame, name: str, *, what: str = "metric") -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric with NaN/inf rows dropped. ValueError if the metric is absent."""
    if name not in wide.columns:
        raise ValueError(f"{what} column {name!r} not in metrics table; available: {metric_names(wide)}")
    col = pd.to_numeric(wide[name], errors="coerce")
    values = np.asarray(col, dtype=float)
    steps = np.asarray(wide.index, dtype=np.int64)
    keep = np.isfinite(values)
    return steps[keep], values[keep]
