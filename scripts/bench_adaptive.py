"""Benchmark: the adaptive LLC schedule against measuring every checkpoint.

    python scripts/bench_adaptive.py RUN_DIR [RUN_DIR ...] [--csv out.csv] [--budget 0.35] [--initial 10] [--stride 1]

Each RUN_DIR must hold the LLC at every saved checkpoint (the reference: e.g. `devinterp-analyze
run_dir=... callbacks.llc.schedule.checkpoint_stride=1`), or with `--stride k` at every k-th one and the
last (then those are the run's checkpoints for both schedules). Runs of one experiment (seeds) are given
together: their stage tables mark each other's stages robust or fragile, as the report does.

For each run the adaptive schedule (`devinterp.transitions.adaptive`) is replayed on the stored
values: the steps it chooses are a pure function of the values at the steps chosen before, and an
LLC estimate depends only on (checkpoint, settings, run seed, step), so the replay chooses and sees
exactly what an adaptive analysis of the run would (`--verify DIR [--callbacks grokking]` checks this on a
copy of one run without its LLC results, by running the analysis for real). Both tables come from the report's own
stage detection (`devinterp.views.report.build.find_stages`, the chain-spread and seed marks).

Per run it prints the dense and the adaptive stage tables and the verdict: same stages and types,
every boundary within one saved checkpoint of the reference's, the same robust/fragile marks, and
the adaptive schedule's share of the reference's LLC estimates (target <= 35 %).

It also says how reproducible the dense table is itself: the share of REPLICATES re-measured dense
curves (draws from the smoother's posterior at every checkpoint plus each point's measured noise) whose
stage table passes the same verdict against it (types and boundaries). Where that share is low, the
dense table's details are noise, and no schedule can be asked to reproduce them. With `--random N` it
also replays N random schedules of the adaptive one's size (its round 0, then checkpoints drawn at
random) and says how often their tables have the dense one's types, meet the target, and lie within the
re-measured ranges: what choosing the refinements is worth on that run.

    python scripts/bench_adaptive.py --synthetic A-B-A:0.3:10-21 A-B-A-flat:0.6:10-21 [...]

replays it on generated runs instead (`devinterp.transitions.synthetic`: scenario, LLC noise, seeds), whose
true stages are known: one line per scenario and noise level says how often the adaptive and the uniform
tables agree with the dense one, how often re-measured dense tables do, and how far the dense and the
adaptive boundaries lie from the true ones (in saved checkpoints, where the types are the true ones).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from devinterp.store import checkpoints
from devinterp.store.adaptive import read_adaptive_file
from devinterp.transitions.adaptive import HEALTHY, STD, VALUE, AdaptiveSettings, adaptive_rounds
from devinterp.transitions.replicates import boundary_ranges, nearest_checkpoint, remeasured_tables
from devinterp.transitions.synthetic import make_scenario
from devinterp.transitions.robustness import ROBUSTNESS_COLUMN, mark_chain_spread, mark_robustness
from devinterp.views.report.build import DEFAULT_LOSS, find_stages, read_run_llc

LLC, LLC_STD, LLC_HEALTHY = "llc/mean", "llc/std", "llc/healthy"
REPLICATES = 40


@dataclass
class Tables:
    run_dir: Path
    checkpoint_steps: list[int]
    curve: pd.DataFrame  # the LLC at every checkpoint (VALUE, STD, HEALTHY; index: step)
    rounds: list[list[int]]
    dense: pd.DataFrame
    adaptive: pd.DataFrame
    uniform: pd.DataFrame  # every k-th checkpoint (and the last), k chosen for about as many estimates as adaptive
    uniform_steps: list[int]
    dense_estimates: int
    metrics: pd.DataFrame  # the run's metrics (long), the LLC at every one of checkpoint_steps
    truth: pd.DataFrame | None = None  # the true stages of a generated run (end_step, type)

    @property
    def adaptive_steps(self) -> set[int]:
        return set().union(*map(set, self.rounds))


def llc_curve(metrics: pd.DataFrame) -> pd.DataFrame:
    wide = metrics[metrics["name"].isin([LLC, LLC_STD, LLC_HEALTHY])].pivot_table(
        index="step", columns="name", values="value", aggfunc="last")
    return wide.rename(columns={LLC: VALUE, LLC_STD: STD, LLC_HEALTHY: HEALTHY})


def run_tables(run_dir: Path, settings: AdaptiveSettings, stride: int, uniform_stride: int | None) -> Tables:
    """The tables of a run measured at every checkpoint (or every `stride`-th and the last)."""
    run = read_run_llc(run_dir, LLC, None, [])
    saved = [info.step for info in checkpoints.list_checkpoints(run_dir)]
    steps = sorted({*saved[::stride], saved[-1]})
    missing = sorted(set(steps) - set(llc_curve(run.metrics).index))
    if missing:
        sys.exit(f"{run_dir}: no LLC at checkpoints {missing[:10]}: measure every checkpoint first")
    return stage_tables(run_dir, steps, run.metrics, settings, uniform_stride)


def synthetic_tables(scenario: str, noise: float, seed: int, settings: AdaptiveSettings) -> Tables:
    """The tables of a generated run (`devinterp.transitions.synthetic`), with its true stages."""
    run = make_scenario(scenario, llc_noise=noise, seed=seed)
    tables = stage_tables(Path(f"{scenario}@{noise}#{seed}"), [int(s) for s in run.steps], run.long(), settings, None)
    tables.truth = pd.DataFrame({"end_step": [*run.boundaries, int(run.steps[-1])], "type": run.types})
    return tables


def stage_tables(name: Path, steps: list[int], metrics: pd.DataFrame, settings: AdaptiveSettings,
                 uniform_stride: int | None) -> Tables:
    """Replay the adaptive schedule on `metrics` (long: step, name, value) measured at every one of `steps`,
    and find the stages of the dense, adaptive and uniform subsets."""
    curve = llc_curve(metrics)
    curve = curve[curve.index.isin(steps)]
    rounds = adaptive_rounds(steps, curve, settings)
    chosen = set().union(*map(set, rounds))
    uniform_stride = uniform_stride or max(round(len(steps) / len(chosen)), 1)
    uniform_steps = sorted({*steps[::uniform_stride], steps[-1]})
    return Tables(name, steps, curve, rounds, marked_stages(llc_at(metrics, steps)),
                  marked_stages(llc_at(metrics, chosen), point_steps=steps),
                  marked_stages(llc_at(metrics, uniform_steps)), uniform_steps, len(curve), metrics)


def llc_at(metrics: pd.DataFrame, steps) -> pd.DataFrame:
    """`metrics` with the LLC kept only at `steps` (every other metric everywhere)."""
    return metrics[~metrics["name"].str.startswith("llc/") | metrics["step"].isin(steps)]


def marked_stages(metrics: pd.DataFrame, **kwargs) -> pd.DataFrame:
    """The report's stage table of `metrics`, with the chain-spread marks."""
    stages = find_stages(metrics, LLC, DEFAULT_LOSS, LLC_STD, [], **kwargs)
    return stages if stages.empty else mark_chain_spread(stages, metrics, LLC_STD)


def random_subsets(t: Tables, count: int, ranges: list[tuple[int, int]], rng: np.random.Generator) -> dict:
    """How often `count` random schedules of the adaptive one's size (its round 0 plus checkpoints drawn
    at random) have the dense table's types, meet the target, and land within its re-measured ranges:
    what choosing the refinements well is worth on this run."""
    first = set(t.rounds[0])
    size = len(t.adaptive_steps)
    rest = [s for s in t.checkpoint_steps if s not in first]
    same_types = agree = within = 0
    for _ in range(count):
        chosen = first | set(rng.choice(rest, size - len(first), replace=False).tolist())
        table = marked_stages(llc_at(t.metrics, chosen), point_steps=t.checkpoint_steps)
        row = verdict(t, table)
        same_types += row["same_types"]
        agree += agrees(row)
        within += within_ranges(t, table, ranges)
    return {"random_same_types": same_types / count, "random_agree": agree / count,
            "random_within_ranges": within / count}


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


def verdict(t: Tables, table: pd.DataFrame, reference: pd.DataFrame | None = None) -> dict:
    """`table` against `reference` (the dense table by default): same stage types, largest boundary distance
    (in saved checkpoints), same marks."""
    reference = t.dense if reference is None else reference
    same_types = list(reference["type"]) == list(table["type"])
    distances = [abs(nearest_checkpoint(t.checkpoint_steps, a) - nearest_checkpoint(t.checkpoint_steps, b))
                 for a, b in zip(reference["end_step"][:-1], table["end_step"][:-1])]
    marks = lambda stages: [str(v) for v in stages.get(ROBUSTNESS_COLUMN, pd.Series(dtype=str))]  # noqa: E731
    return {"stages": summary(table), "same_types": same_types,
            "max_boundary_distance": max(distances, default=0) if same_types else None,
            "same_marks": marks(reference) == marks(table)}


def agrees(row: dict) -> bool:
    """The target, from a `verdict` row: the dense table's types, every boundary within one saved checkpoint."""
    return row["same_types"] and row["max_boundary_distance"] <= 1


def within_ranges(t: Tables, table: pd.DataFrame, ranges: list[tuple[int, int]]) -> bool:
    """Same types as the dense table, and every boundary within one checkpoint of its replicates' range."""
    positions = [nearest_checkpoint(t.checkpoint_steps, b) for b in table["end_step"][:-1]]
    return list(t.dense["type"]) == list(table["type"]) and all(
        lo - 1 <= position <= hi + 1 for position, (lo, hi) in zip(positions, ranges))


def compare(t: Tables, random_schedules: int = 0) -> dict:
    """One row of the benchmark: the adaptive and the uniform tables (and `random_schedules` random ones of
    the same size) against the dense one."""
    chosen = len(t.adaptive_steps)
    adaptive, uniform = verdict(t, t.adaptive), verdict(t, t.uniform)
    replicates = remeasured_tables(t.curve, REPLICATES, np.random.default_rng(0), llc=VALUE, llc_std=STD,
                                   llc_healthy=HEALTHY if HEALTHY in t.curve else None)
    ranges = boundary_ranges(t.dense, replicates, t.checkpoint_steps)
    truth = {} if t.truth is None else {f"{kind}_vs_truth_max_distance": verdict(t, table, t.truth)["max_boundary_distance"]
                                        for kind, table in (("dense", t.dense), ("adaptive", t.adaptive))}
    return {
        "run": t.run_dir.name, "checkpoints": len(t.checkpoint_steps), "dense_estimates": t.dense_estimates,
        "adaptive_estimates": chosen, "share": chosen / t.dense_estimates, "rounds": len(t.rounds),
        "dense_stages": summary(t.dense), **{f"adaptive_{k}": v for k, v in adaptive.items()},
        "uniform_estimates": len(t.uniform_steps), **{f"uniform_{k}": v for k, v in uniform.items()},
        "adaptive_agrees": agrees(adaptive), "uniform_agrees": agrees(uniform),
        "dense_replicates_agreeing": float(np.mean([agrees(verdict(t, r)) for r in replicates])), **truth,
        "dense_boundary_ranges": " ".join(f"{t.checkpoint_steps[lo]}-{t.checkpoint_steps[hi]}" for lo, hi in ranges),
        "adaptive_within_ranges": within_ranges(t, t.adaptive, ranges),
        "uniform_within_ranges": within_ranges(t, t.uniform, ranges),
        **(random_subsets(t, random_schedules, ranges, np.random.default_rng(1)) if random_schedules else {}),
    }


def summary(stages: pd.DataFrame) -> str:
    marks = stages.get(ROBUSTNESS_COLUMN, pd.Series([""] * len(stages)))
    return ", ".join(f"{s.type} {s.start_step}-{s.end_step}" + (f" ({m})" if m else "")
                     for s, m in zip(stages.itertuples(), marks)) or "none"


def verify(run_dir: Path, expected: list[list[int]], callbacks: str, overrides: list[str]) -> bool:
    """Run an adaptive analysis for real on a copy of `run_dir` without its LLC results; True when it
    measures exactly the replayed steps."""
    copy = Path(tempfile.gettempdir()) / f"bench_adaptive_{run_dir.name}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*-cb-llc-*", "llc-*", "calibration", "adaptive"))
    shutil.copytree(run_dir / "calibration", copy / "calibration")  # the same settings as the reference
    subprocess.run([sys.executable, "-m", "devinterp.cli.analyze", f"run_dir={copy}", f"callbacks={callbacks}",
                    "callbacks.llc.schedule=adaptive", *overrides], check=True)
    return read_adaptive_file(next((copy / "adaptive").glob("llc-*.json"))).rounds == expected


def print_run(t: Tables, row: dict) -> None:
    print(f"\n== {row['run']}: {row['adaptive_estimates']} of {row['dense_estimates']} estimates "
          f"({row['share']:.0%}) in {row['rounds']} rounds {[len(r) for r in t.rounds]}")
    print(f"   dense:    {row['dense_stages']}\n      re-measured, {row['dense_replicates_agreeing']:.0%} of "
          f"{REPLICATES} dense tables agree with it; their boundaries (central 80 %): "
          f"{row['dense_boundary_ranges'] or 'none'}")
    for kind in ("adaptive", "uniform"):
        label = kind if kind == "adaptive" else f"uniform ({row['uniform_estimates']} checkpoints)"
        print(f"   {label}: {row[kind + '_stages']}\n      same stages and types: {row[kind + '_same_types']}; "
              f"largest boundary distance: {row[kind + '_max_boundary_distance']} checkpoint(s); "
              f"same marks: {row[kind + '_same_marks']}; within the re-measured range: {row[kind + '_within_ranges']}")
    if "random_agree" in row:
        print(f"   random schedules of the same size (round 0 + random checkpoints): {row['random_same_types']:.0%} "
              f"have the same types, {row['random_agree']:.0%} meet the target, {row['random_within_ranges']:.0%} "
              "are within the re-measured ranges")


def print_synthetic(rows: pd.DataFrame) -> None:
    """One line per scenario and noise level: how often each table agrees with the dense one, and how far
    the dense and adaptive boundaries are from the true ones (in saved checkpoints; types must match)."""
    rows = rows.assign(case=rows["run"].str.split("#").str[0])
    summary = rows.groupby("case", sort=False).agg(
        runs=("run", "size"), share=("share", "mean"), adaptive_agrees=("adaptive_agrees", "sum"),
        uniform_agrees=("uniform_agrees", "sum"), replicates_agree=("dense_replicates_agreeing", "mean"),
        adaptive_within_ranges=("adaptive_within_ranges", "sum"),
        dense_true_types=("dense_vs_truth_max_distance", "count"),
        adaptive_true_types=("adaptive_vs_truth_max_distance", "count"),
        dense_truth_median=("dense_vs_truth_max_distance", "median"),
        adaptive_truth_median=("adaptive_vs_truth_max_distance", "median"),
        dense_truth_max=("dense_vs_truth_max_distance", "max"),
        adaptive_truth_max=("adaptive_vs_truth_max_distance", "max"))
    print(summary.round(2).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="*", type=Path)
    parser.add_argument("--synthetic", nargs="*", default=[], metavar="SCENARIO:NOISE:FIRST-LAST",
                        help="generated runs instead, e.g. A-B-A-flat:0.6:10-21 (seeds 10 to 21)")
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--initial", type=int, default=AdaptiveSettings.initial)
    parser.add_argument("--budget", type=float, default=AdaptiveSettings.budget)
    parser.add_argument("--z-change", type=float, default=AdaptiveSettings.z_change)
    parser.add_argument("--stride", type=int, default=1,
                        help="treat every k-th saved checkpoint (and the last) as the run's checkpoints")
    parser.add_argument("--uniform-stride", type=int,
                        help="the uniform schedule's stride (default: about as many estimates as adaptive)")
    parser.add_argument("--random", type=int, default=0, metavar="N",
                        help="also replay N random schedules of the adaptive one's size per run (a baseline)")
    parser.add_argument("--verify", type=Path, help="one of RUN_DIRS to check by a real adaptive analysis")
    parser.add_argument("--callbacks", default="[llc]",
                        help="the callbacks of --verify's analysis: those the run's LLC was measured with (e.g. grokking)")
    parser.add_argument("--set", nargs="*", default=[], help="LLC overrides of --verify's analysis (callbacks.llc.*)")
    args = parser.parse_args()
    if not args.run_dirs and not args.synthetic:
        parser.error("give RUN_DIRS or --synthetic")
    settings = AdaptiveSettings(initial=args.initial, budget=args.budget, z_change=args.z_change)
    tables = [run_tables(run_dir, settings, args.stride, args.uniform_stride) for run_dir in args.run_dirs]
    with_seed_marks(tables)
    for case in args.synthetic:
        scenario, noise, seeds = case.split(":")
        first, last = map(int, seeds.split("-"))
        tables += [synthetic_tables(scenario, float(noise), seed, settings) for seed in range(first, last + 1)]
    rows = [compare(t, args.random) for t in tables]
    for t, row in zip(tables, rows):
        if t.truth is None:
            print_run(t, row)
    if args.synthetic:
        print_synthetic(pd.DataFrame([row for t, row in zip(tables, rows) if t.truth is not None]))
    if args.csv:
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    if args.verify:
        expected = next(t.rounds for t in tables if t.run_dir == args.verify)
        print(f"\nreal adaptive analysis of {args.verify.name} measures the replayed steps: "
              f"{verify(args.verify, expected, args.callbacks, args.set)}")


if __name__ == "__main__":
    main()
