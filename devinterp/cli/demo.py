"""`make demo`: developmental stages on two small runs, in about 7 minutes on 2 CPU cores.

1. `induction`: the 2-layer attention-only transformer learns induction heads; its LLC rises through
   the loss bump (type A).
2. `grokking`: a 1-layer GPT-2 on modular addition memorises its training pairs (LLC rises: A), then
   generalises while the training loss holds (the LLC falls, B, on seeds 1 and 7; on this seed, 0, it
   alternates between checkpoints after training-loss spikes, and the stage detector may find no
   significant stage: README, "Two commands").

The two runs train at the same time, each in its own process with half the cores (models this small
gain little from a second thread), with the study callbacks live on leaner schedules than their presets
(DEMO_RUNS). The induction run shows its progress bar; the grokking run logs to its run directory. Each
is then reported (`devinterp-report`). The demo prints both summaries and stage tables, says which
stage types it found, and links the reports. Extra command-line overrides apply to both runs
(`python -m devinterp.cli.demo device=cuda`).
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from devinterp.cli.train import compose_train_config, run, run_summary
from devinterp.views.report import build_report, format_stages

# label -> the overrides of its run: the presets, with the LLC and the Hessian measured at fewer of the
# checkpoints (the loss and the other callbacks at every one) to keep both runs short (~8 minutes on 2
# cores). Both LLCs use the presets' auto-calibrated settings, scheduled adaptively with the budget of the
# fixed strides they replaced (11 of induction's 88 checkpoints, 12 of grokking's 44): on the runs measured
# at every checkpoint (scripts/bench_adaptive.py, README "Adaptive schedule") the adaptive tables are at
# least as close to the dense ones as every 9th / every 4th checkpoint, which missed induction's plateau.
DEMO_RUNS = {
    "induction": ["name=demo", "callbacks=study", "callbacks.llc.schedule.adaptive={budget:0.125}",
                  "callbacks.hessian.schedule.checkpoint_stride=8"],
    "grokking": ["name=demo_grokking", "experiment=grokking", "callbacks.llc.schedule.adaptive={budget:0.28}",
                 "callbacks.hessian.schedule.checkpoint_stride=8"],
}
SHOWN = "induction"  # the run whose progress bar is shown
STAGE_TYPES = ("A", "B")


@dataclass
class DemoRun:
    label: str
    summary: str  # what devinterp-train prints at the end of a run
    stages: pd.DataFrame
    notes: list[str]
    report: Path


def train_and_report(label: str, overrides: list[str], threads: int) -> DemoRun:
    """Train one demo run (live callbacks) with `threads` torch threads, then build its report."""
    torch.set_num_threads(threads)
    overrides = [*overrides, f"progress={str(label == SHOWN).lower()}"]
    result = run(compose_train_config(overrides), overrides)
    study = build_report(result.run_dir)
    return DemoRun(label, run_summary(result), study.stages, study.notes, study.page)


def stages_by_type(runs: list[DemoRun]) -> dict[str, list[str]]:
    """For each of STAGE_TYPES, the stages of that type: 'grokking stage 2 (steps 331-1200)'."""
    found: dict[str, list[str]] = {kind: [] for kind in STAGE_TYPES}
    for demo in runs:
        for number, stage in enumerate(demo.stages.itertuples(), start=1):
            if stage.type in found:
                found[stage.type].append(f"{demo.label} stage {number} (steps {stage.start_step}-{stage.end_step})")
    return found


def main(argv: list[str] | None = None) -> None:
    extra = sys.argv[1:] if argv is None else argv
    threads = max(1, (os.cpu_count() or 1) // len(DEMO_RUNS))
    print(f"Training {', '.join(DEMO_RUNS)} at once ({threads} thread(s) each); the {SHOWN} run's progress "
          "is shown, the others log to <run directory>/train.log.")
    with ProcessPoolExecutor(len(DEMO_RUNS), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_and_report, label, [*overrides, *extra], threads)
                   for label, overrides in DEMO_RUNS.items()]
        runs = [future.result() for future in futures]

    for demo in runs:
        print(f"\n=== {demo.label} ===\n{demo.summary}")
        print("Developmental stages (type A: LLC rises; type B: LLC falls; the loss change is in the evidence):")
        print(format_stages(demo.stages))
        for note in demo.notes:
            print(f"note: {note}")
    print()
    for kind, stages in stages_by_type(runs).items():
        print(f"type {kind}: " + ("; ".join(stages) if stages else "none found"))
    for demo in runs:
        print(f"report ({demo.label}): {demo.report}")


if __name__ == "__main__":
    main()
