"""Benchmark: the adaptive LLC schedule against measuring every checkpoint.

    python scripts/bench_adaptive.py RUN_DIR [RUN_DIR ...] [--csv out.csv] [--budget 0.35] [--initial 10] [--stride 1]

Each RUN_DIR must hold the LLC at every saved checkpoint (the reference: e.g. `devinterp-analyze
run_dir=... callbacks.llc.schedule.checkpoint_stride=1`), or with `--stride k` at every k-th one and the
last (then those are the run's checkpoints for both schedules). Runs of one experiment (seeds) are given
together: their stage tables mark each other's stages robust or fragile, as the report does.

For each run the adaptive schedule (`devinterp.transitions.adaptive`) is replayed on the stored
values: the steps it chooses are a pure function of the values at the steps chosen before, and an
LLC estimate depends only on (checkpoint, settings, run seed, step), so the replay chooses and sees
exactly what an adaptive analysis of the run would (`--verify DIR` checks this on a copy of one run
without its LLC results, by running the analysis for real). Both tables come from the report's own
stage detection (`devinterp.views.report.build.find_stages`, the chain-spread and seed marks).

Per run it prints the dense and the adaptive stage tables and the verdict: same stages and types,
every boundary within one saved checkpoint of the reference's, the same robust/fragile marks, and
the adaptive schedule's share of the reference's LLC estimates (target <= 35 %).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from devinterp.store import checkpoints
from devinterp.store.adaptive import read_adaptive_file
from devinterp.transitions.adaptive import HEALTHY, STD, VALUE, AdaptiveSettings, adaptive_rounds
from devinterp.transitions.robustness import ROBUSTNESS_COLUMN, mark_chain_spread, mark_robustness
from devinterp.views.report.build import DEFAULT_LOSS, find_stages, read_run_llc

LLC, LLC_STD, LLC_HEALTHY = "llc/mean", "llc/std", "llc/healthy"


@dataclass
class Tables:
    run_dir: Path
    checkpoint_steps: list[int]
    rounds: list[list[int]]
    dense: pd.DataFrame
    adaptive: pd.DataFrame
    uniform: pd.DataFrame  # every k-th checkpoint (and the last), k chosen for about as many estimates as adaptive
    uniform_steps: list[int]
    dense_estimates: int


def llc_curve(metrics: pd.DataFrame) -> pd.DataFrame:
    wide = metrics[metrics["name"].isin([LLC, LLC_STD, LLC_HEALTHY])].pivot_table(
        index="step", columns="name", values="value", aggfunc="last")
    return wide.rename(columns={LLC: VALUE, LLC_STD: STD, LLC_HEALTHY: HEALTHY})


def stage_tables(run_dir: Path, settings: AdaptiveSettings, stride: int, uniform_stride: int | None) -> Tables:
    notes: list[str] = []
    run = read_run_llc(run_dir, LLC, None, notes)
    saved = [info.step for info in checkpoints.list_checkpoints(run_dir)]
    steps = sorted({*saved[::stride], saved[-1]})
    curve = llc_curve(run.metrics)
    curve = curve[curve.index.isin(steps)]
    missing = sorted(set(steps) - set(curve.index))
    if missing:
        sys.exit(f"{run_dir}: no LLC at checkpoints {missing[:10]}: measure every checkpoint first")
    rounds = adaptive_rounds(steps, curve, settings)
    chosen = set().union(*map(set, rounds))
    is_llc = run.metrics["name"].str.startswith("llc/")
    dense_metrics = run.metrics[~is_llc | run.metrics["step"].isin(steps)]
    adaptive_metrics = run.metrics[~is_llc | run.metrics["step"].isin(chosen)]
    uniform_stride = uniform_stride or max(round(len(steps) / len(chosen)), 1)
    uniform_steps = sorted({*steps[::uniform_stride], steps[-1]})
    uniform_metrics = run.metrics[~is_llc | run.metrics["step"].isin(uniform_steps)]

    def marked(metrics, **kwargs):
        stages = find_stages(metrics, LLC, DEFAULT_LOSS, LLC_STD, [], **kwargs)
        return stages if stages.empty else mark_chain_spread(stages, metrics, LLC_STD)

    return Tables(run_dir, steps, rounds, marked(dense_metrics), marked(adaptive_metrics, point_steps=steps),
                  marked(uniform_metrics), uniform_steps, len(curve))


def with_seed_marks(tables: list[Tables]) -> None:
    """Mark each run's stages robust or fragile against the other runs' tables of the same kind."""
    for kind in ("dense", "adaptive", "uniform"):
        marked = {}
        for t in tables:
            others = {o.run_dir.name: getattr(o, kind) for o in tables if o is not t}
            own = getattr(t, kind)
            marked[t.run_dir] = mark_robustness(own, others, "seeds") if others and not own.empty else own
        for t in tables:
            setattr(t, kind, marked[t.run_dir])


def verdict(t: Tables, table: pd.DataFrame) -> dict:
    """`table` against the dense one: same stage types, largest boundary distance (in saved checkpoints), same marks."""
    index = {s: i for i, s in enumerate(t.checkpoint_steps)}
    same_types = list(t.dense["type"]) == list(table["type"])
    distances = [abs(index[int(a)] - index[int(b)]) for a, b in zip(t.dense["end_step"][:-1], table["end_step"][:-1])]
    marks = lambda stages: [str(v) for v in stages.get(ROBUSTNESS_COLUMN, pd.Series(dtype=str))]  # noqa: E731
    return {"stages": summary(table), "same_types": same_types,
            "max_boundary_distance": max(distances, default=0) if same_types else None,
            "same_marks": marks(t.dense) == marks(table)}


def compare(t: Tables) -> dict:
    """One row of the benchmark: the adaptive and the uniform tables against the dense one."""
    chosen = len(set().union(*map(set, t.rounds)))
    adaptive, uniform = verdict(t, t.adaptive), verdict(t, t.uniform)
    return {
        "run": t.run_dir.name, "checkpoints": len(t.checkpoint_steps), "dense_estimates": t.dense_estimates,
        "adaptive_estimates": chosen, "share": chosen / t.dense_estimates, "rounds": len(t.rounds),
        "dense_stages": summary(t.dense), **{f"adaptive_{k}": v for k, v in adaptive.items()},
        "uniform_estimates": len(t.uniform_steps), **{f"uniform_{k}": v for k, v in uniform.items()},
    }


def summary(stages: pd.DataFrame) -> str:
    marks = stages.get(ROBUSTNESS_COLUMN, pd.Series([""] * len(stages)))
    return ", ".join(f"{s.type} {s.start_step}-{s.end_step}" + (f" ({m})" if m else "")
                     for s, m in zip(stages.itertuples(), marks)) or "none"


def verify(run_dir: Path, expected: list[list[int]], overrides: list[str]) -> bool:
    """Run an adaptive analysis for real on a copy of `run_dir` without its LLC results; True when it
    measures exactly the replayed steps."""
    copy = Path(tempfile.gettempdir()) / f"bench_adaptive_{run_dir.name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*-cb-llc-*", "llc-*", "calibration", "adaptive"))
    shutil.copytree(run_dir / "calibration", copy / "calibration")  # the same settings as the reference
    subprocess.run([sys.executable, "-m", "devinterp.cli.analyze", f"run_dir={copy}", "callbacks=[llc]",
                    "callbacks.llc.schedule=adaptive", *overrides], check=True)
    return read_adaptive_file(next((copy / "adaptive").glob("llc-*.json"))).rounds == expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--initial", type=int, default=AdaptiveSettings.initial)
    parser.add_argument("--budget", type=float, default=AdaptiveSettings.budget)
    parser.add_argument("--z-change", type=float, default=AdaptiveSettings.z_change)
    parser.add_argument("--stride", type=int, default=1,
                        help="treat every k-th saved checkpoint (and the last) as the run's checkpoints")
    parser.add_argument("--uniform-stride", type=int,
                        help="the uniform schedule's stride (default: about as many estimates as adaptive)")
    parser.add_argument("--verify", type=Path, help="one of RUN_DIRS to check by a real adaptive analysis")
    parser.add_argument("--set", nargs="*", default=[], help="LLC overrides of --verify's analysis (callbacks.llc.*)")
    args = parser.parse_args()
    settings = AdaptiveSettings(initial=args.initial, budget=args.budget, z_change=args.z_change)
    tables = [stage_tables(run_dir, settings, args.stride, args.uniform_stride) for run_dir in args.run_dirs]
    with_seed_marks(tables)
    rows = [compare(t) for t in tables]
    for t, row in zip(tables, rows):
        print(f"\n== {row['run']}: {row['adaptive_estimates']} of {row['dense_estimates']} estimates "
              f"({row['share']:.0%}) in {row['rounds']} rounds {[len(r) for r in t.rounds]}")
        print(f"   dense:    {row['dense_stages']}")
        for kind in ("adaptive", "uniform"):
            label = kind if kind == "adaptive" else f"uniform ({row['uniform_estimates']} checkpoints)"
            print(f"   {label}: {row[kind + '_stages']}\n      same stages and types: {row[kind + '_same_types']}; "
                  f"largest boundary distance: {row[kind + '_max_boundary_distance']} checkpoint(s); "
                  f"same marks: {row[kind + '_same_marks']}")
    if args.csv:
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    if args.verify:
        expected = next(t.rounds for t in tables if t.run_dir == args.verify)
        print(f"\nreal adaptive analysis of {args.verify.name} measures the replayed steps: "
              f"{verify(args.verify, expected, args.set)}")


if __name__ == "__main__":
    main()
