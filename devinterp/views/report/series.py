"""The LLC series a report compares: several settings of the LLC within one run, or seed runs.

A run can hold several LLC series: results are stored per (step, callback, settings hash) (see
`devinterp.store.results`), so `devinterp-analyze ... callbacks.llc.localization=30` adds a second
series beside the run's own. An *LLC series* is every row written by one (callback, settings hash)
that wrote the report's LLC metric (`llc/mean`), keyed by its settings hash.

The report's **primary** series (`choose_primary`), whose stages it reports:
1. the one asked for (`llc_settings=<hash>`); an unknown hash is a ValueError naming it;
2. else the run's own: the settings hash of the `llc` callback in the run's `config.yaml` (live);
3. else the auto-calibrated series (a `calibration/llc-<hash>.json` record) with the most steps;
4. else the series with the most steps. Ties go to the series written first (`split_llc_series`'
   order): a run's first analysis, not a later comparison.

`metrics_view` is the metrics table the report reads: one row per (step, name), the primary
series' rows for every name it holds, the newest row otherwise (as `read_metrics` gives).
Another series is *complete* when it has an LLC value at every step the primary has one.

A **multirun** directory (`devinterp-train -m seed=0,1,2`) holds several runs, one per
subdirectory with a `config.yaml` (`seed_runs`); the first in name order is the primary one.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from devinterp.callbacks import build_callbacks
from devinterp.core.errors import ConfigError
from devinterp.store.calibration import read_calibration
from devinterp.store.run_dir import RUN_CONFIG_FILE, read_run_config
from devinterp.store.unreadable import UnreadableFileError

LLC_CALLBACK = "llc"


@dataclass(frozen=True)
class LLCSeries:
    """One LLC series of a run: its rows (long, one per (step, name), the newest) and the steps
    with a finite value of the LLC metric."""

    callback: str
    settings: str
    rows: pd.DataFrame
    steps: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{self.callback}-{self.settings}"


def split_llc_series(metrics: pd.DataFrame, llc: str) -> dict[str, LLCSeries]:
    """The LLC series in a metrics table with every row kept (`read_metrics(latest_only=False)`:
    by step, then in write order), keyed by settings hash, in order of first appearance (so at
    equal first steps, the series written first comes first)."""
    has_llc = metrics[(metrics["name"] == llc) & np.isfinite(metrics["value"])]
    out = {}
    for (callback, settings), llc_rows in has_llc.groupby(["callback", "settings"], sort=False):
        rows = metrics[(metrics["callback"] == callback) & (metrics["settings"] == settings)]
        rows = rows.drop_duplicates(subset=["step", "name"], keep="last").reset_index(drop=True)
        out[str(settings)] = LLCSeries(str(callback), str(settings), rows,
                                       tuple(sorted(int(s) for s in llc_rows["step"].unique())))
    return out


def run_llc_settings(run_dir: Path) -> dict | None:
    """The `llc` callback entry of the run's config.yaml ({_target_, schedule, settings...}), or None."""
    try:
        config = read_run_config(run_dir)
    except (OSError, ValueError, UnreadableFileError):
        return None
    entry = (config.get("callbacks") or {}).get(LLC_CALLBACK)
    return entry if isinstance(entry, dict) else None


def live_settings_hash(run_dir: Path) -> str | None:
    """The settings hash of the run's own `llc` callback (config.yaml), or None if it has none or
    its settings no longer build (an older config)."""
    entry = run_llc_settings(run_dir)
    if entry is None:
        return None
    try:
        return build_callbacks({LLC_CALLBACK: entry})[0].settings_hash
    except ConfigError:
        return None


def calibration_record(run_dir: Path, series: LLCSeries) -> dict | None:
    """The series' calibration record (auto-calibrated series only); None if none or unreadable."""
    try:
        return read_calibration(run_dir, series.callback, series.settings)
    except UnreadableFileError:
        return None


def choose_primary(series: Mapping[str, LLCSeries], requested: str | None, live: str | None,
                   calibrated: set[str]) -> tuple[str, str]:
    """(settings hash, why) of the primary series; see the module docstring for the order."""
    if requested is not None:
        if requested not in series:
            raise ValueError(f"llc_settings={requested!r}: no LLC series with this settings hash; "
                             f"available: {', '.join(sorted(series)) or 'none'}")
        return requested, "chosen with llc_settings="
    if live in series:
        return live, "the run's own llc settings (config.yaml)"
    by_length = sorted(series, key=lambda h: -len(series[h].steps))  # stable: first written first
    auto = [h for h in by_length if h in calibrated]
    if auto:
        return auto[0], "auto-calibrated, the most steps"
    return by_length[0], "the most steps"


def metrics_view(metrics: pd.DataFrame, series: Mapping[str, LLCSeries], primary: str | None) -> pd.DataFrame:
    """One row per (step, name): the primary series' rows for the names it holds, else the newest
    row (rows of other LLC series of those names are dropped). Sorted by step, then name."""
    if primary is None:
        frame = metrics.drop_duplicates(subset=["step", "name"], keep="last")
    else:
        own = series[primary]
        names = set(own.rows["name"])
        other = pd.Series(False, index=metrics.index)
        for s in series.values():
            if s.settings != primary:
                other |= (metrics["callback"] == s.callback) & (metrics["settings"] == s.settings)
        rest = metrics[~(other & metrics["name"].isin(names))]
        rest = rest[~((rest["callback"] == own.callback) & (rest["settings"] == own.settings))]
        frame = pd.concat([rest.drop_duplicates(subset=["step", "name"], keep="last"), own.rows], ignore_index=True)
        frame = frame.drop_duplicates(subset=["step", "name"], keep="last")
    return frame.sort_values(["step", "name"], kind="stable").reset_index(drop=True)


def is_complete(other: LLCSeries, primary: LLCSeries) -> bool:
    return set(primary.steps) <= set(other.steps)


def seed_runs(directory: Path) -> list[Path]:
    """The runs of a multirun directory (subdirectories with a config.yaml), in name order; []
    for a single run (a directory with its own config.yaml)."""
    directory = Path(directory)
    if (directory / RUN_CONFIG_FILE).is_file():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and (p / RUN_CONFIG_FILE).is_file())


def describe_settings(settings: Mapping) -> str:
    """'key=value, ...' in key order, floats with 3 significant digits."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(settings.items()))
