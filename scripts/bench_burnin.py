"""Burn-in rules against long traces of real checkpoints (not a timed test).

For each checkpoint step of RUN_DIR it runs 4 chains for `--steps` steps from w* at the run's calibrated
LLC settings (`calibration/llc-*.json`: ε, batch, nβ, γ; `lm_sgld` with the diagonal preconditioner, no
step check), at each of `--seeds`, and keeps λ̂'s trace nβ(L − L_n(w*)). Then, per rule, the mean of the
`--draws` draws after the rule's burn-in against the mean of the traces' second halves (over all seeds):
fixed burn-ins, and the settled burn-in (`devinterp.slt.llc.settled_run`'s rule, from 2/s up to `--cap`).
The traces are saved to `--npz` and reused when it exists (the table of README, "The settled burn-in"; `--steps-per-chain`, default 800).

    .venv/bin/python scripts/bench_burnin.py RUN_DIR 207,745,1200 --npz traces.npz [--seeds 0,1,2] [--cap 200]
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from devinterp.analysis.posthoc import load_run_data
from devinterp.callbacks.base import CallbackContext
from devinterp.callbacks.llc import LLCCallback, next_token_loss
from devinterp.slt.calibration import MIN_BURNIN_RELAXATIONS
from devinterp.slt.llc import longer_burnin, measure_anchor
from devinterp.slt.preconditioning import curvature_diagonal, diagonal_preconditioner
from devinterp.slt.sampler import FunctionalProblem, run_chains
from devinterp.store import checkpoints

FIXED = (25, 50, 100, 200, 400)


def traces(run_dir: Path, steps: list[int], seeds: list[int], num_steps: int) -> dict[str, np.ndarray]:
    """{"<step>_<seed>": (4, num_steps) λ̂ trace} at the run's calibrated settings."""
    record = json.loads(next((run_dir / "calibration").glob("llc-*.json")).read_text())
    chosen, gamma = record["settings"], record["localization"]
    data = load_run_data(run_dir)
    out = {}
    for step in steps:
        ctx = CallbackContext(step, checkpoints.load(run_dir, step), data.task, data.eval_tokens, data.train_tokens,
                              torch.device("cpu"), data.seed)
        dataset = LLCCallback(num_samples=len(data.train_tokens))._data(ctx)
        problem = FunctionalProblem(ctx.model, next_token_loss, None, "cpu")
        scale = diagonal_preconditioner(curvature_diagonal(problem, dataset, 0), chosen["nbeta"], gamma)
        anchor = measure_anchor(problem, dataset, 0, noise_samples=0)
        for seed in seeds:
            run = run_chains(problem, dataset, num_chains=4, num_steps=num_steps, step_size=chosen["step_size"],
                             nbeta=chosen["nbeta"], localization=gamma, init_loss=anchor.init_loss,
                             batch_size=chosen["batch_size"], sampler="lm_sgld", seed=seed,
                             sample_losses=anchor.sample_losses, preconditioner=scale.to(problem.dtype))
            out[f"{step}_{seed}"] = chosen["nbeta"] * (run.loss_trace.numpy() - anchor.init_loss)
            print(f"step {step} seed {seed}: 50-step means", " ".join(
                f"{out[f'{step}_{seed}'][:, a:a + 50].mean():.1f}" for a in range(0, num_steps, 50)), flush=True)
    return out


def settled_burnin(trace: np.ndarray, first: int, cap: int) -> int:
    """The burn-in `settled_run` would run on this trace: from `first`, lengthened by `longer_burnin`."""
    burnin = first
    while (longer := longer_burnin(trace[:, :burnin], cap)) is not None:
        burnin = longer
    return burnin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("steps", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--steps-per-chain", dest="num_steps", type=int, default=800)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--cap", type=int, default=200, help="the settled burn-in's cap (the rule's burn-in)")
    parser.add_argument("--flat-step", type=float, default=0.04, help="s = εγ of the run's calibration")
    parser.add_argument("--npz", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.npz.exists():
        saved = dict(np.load(args.npz))
    else:
        saved = traces(args.run_dir.resolve(), args.steps, args.seeds, args.num_steps)
        np.savez(args.npz, **saved)
    first = math.ceil(MIN_BURNIN_RELAXATIONS / args.flat_step)
    for step in args.steps:
        runs = [saved[f"{step}_{seed}"] for seed in args.seeds]
        truth = np.mean([t[:, t.shape[1] // 2:].mean() for t in runs])
        print(f"step {step}: the traces' second halves {truth:.1f}")
        rules = {f"fixed {b}": (lambda t, b=b: b) for b in FIXED}
        rules[f"settled {first}..{args.cap}"] = lambda t: settled_burnin(t, first, args.cap)
        for name, rule in rules.items():
            burnins = [rule(t) for t in runs]
            errors = [t[:, b:b + args.draws].mean() / truth - 1 for t, b in zip(runs, burnins)]
            print(f"  {name:18s} burn-in {str(burnins):16s} error {' '.join(f'{e:+.1%}' for e in errors)}")


if __name__ == "__main__":
    main()
