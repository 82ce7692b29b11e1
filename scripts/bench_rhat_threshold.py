"""The health verdict's R̂ threshold against long references (not a timed test).

Reads the CSVs of `scripts/bench_llc_reference.py` and, for each R̂ threshold, counts what a verdict with
that threshold (and the other bias checks as they are) would say of the estimates there: flagged biased,
flagged and really off (|error| > ERROR_BOUND against the reference), false alarms (flagged, within it),
misses (passed, off) and the healthy share. R̂ is the row's `rhat` (or, in CSVs written before that
column, the value in its `problems` sentence; absent: below every threshold). Then the same count for
chains known to be stationary: AR(1) chains of `--chains` × `--draws` started in equilibrium, at the
autocorrelations `--phis`, so one sees which thresholds R̂ crosses from a low ESS alone.

    .venv/bin/python scripts/bench_rhat_threshold.py scripts/results/llc_reference_*.csv [--thresholds 1.1,1.3]

`scripts/results/llc_reference_*.csv` are the bench's rows behind `devinterp.slt.llc.MAX_RHAT` (grokking seeds
0, 1 and 7 with the step check, post hoc and live, 2026-12-06; the run directories are not shipped).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_llc_reference import ERROR_BOUND  # noqa: E402

from devinterp.slt.diagnostics import ess, rhat  # noqa: E402

OTHER_BIAS_CHECKS = ("diverged", "traces still", "negative LLC", "minibatch gradient noise")


def estimates(paths: list[Path]) -> pd.DataFrame:
    """One row per estimate of every CSV: its error against its run's reference, R̂, other failed checks."""
    rows = []
    for path in paths:
        table = pd.read_csv(path)
        for run, group in table.groupby("run"):
            reference = group[group.method == "reference"].set_index("step").llc
            for _, row in group[(group.method != "reference") & group.step.isin(reference.index)].iterrows():
                problems = str(row.problems) if isinstance(row.problems, str) else ""
                value = row.get("rhat", np.nan)
                if not np.isfinite(value) and (found := re.search(r"R̂ = ([0-9.]+)", problems)):
                    value = float(found.group(1))
                rows.append(dict(file=path.name, method=row.method, step=int(row.step), seed=int(row.seed),
                                 error=row.llc / reference[row.step] - 1, rhat=value,
                                 other=any(check in problems for check in OTHER_BIAS_CHECKS)))
    return pd.DataFrame(rows)


def verdict_counts(table: pd.DataFrame, threshold: float) -> dict:
    flagged = (table.rhat > threshold) | table.other
    off = table.error.abs() > ERROR_BOUND
    return dict(threshold=threshold, flagged=int(flagged.sum()), flagged_and_off=int((flagged & off).sum()),
                false_alarms=int((flagged & ~off).sum()), misses=int((~flagged & off).sum()),
                missed_errors=", ".join(f"{e:+.1%}" for e in table.error[~flagged & off]),
                healthy=f"{int((~flagged).sum())}/{len(table)}",
                healthy_median_error=f"{table.error[~flagged].abs().median():.1%}")


def stationary_rhat(chains: int, draws: int, phi: float, runs: int, seed: int) -> tuple[np.ndarray, float]:
    """R̂ of `runs` sets of unit-variance AR(1) chains started in equilibrium, and their median ESS."""
    rng = np.random.default_rng(seed)
    values, sizes = [], []
    for _ in range(runs):
        x = np.zeros((chains, draws))
        x[:, 0] = rng.standard_normal(chains)
        for t in range(1, draws):
            x[:, t] = phi * x[:, t - 1] + np.sqrt(1 - phi**2) * rng.standard_normal(chains)
        values.append(rhat(x))
        sizes.append(ess(x))
    return np.array(values), float(np.median(sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path, nargs="+")
    parser.add_argument("--thresholds", type=lambda s: [float(x) for x in s.split(",")], default=[1.1, 1.2, 1.3, 1.5])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--phis", type=lambda s: [float(x) for x in s.split(",")], default=[0.8, 0.9, 0.97])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    table = estimates(args.csv)
    print(f"{len(table)} estimates against their references (off: |error| > {ERROR_BOUND:.0%})")
    print(pd.DataFrame([verdict_counts(table, t) for t in args.thresholds]).to_string(index=False))
    print(f"\nstationary AR(1) chains, {args.chains} x {args.draws} draws, {args.runs} runs each: share with R̂ above")
    for phi in args.phis:
        values, size = stationary_rhat(args.chains, args.draws, phi, args.runs, seed=0)
        shares = ", ".join(f"{t:g}: {np.mean(values > t):.0%}" for t in args.thresholds)
        print(f"  φ {phi:g} (median ESS {size:.0f}, median R̂ {np.median(values):.2f}): {shares}")


if __name__ == "__main__":
    main()
