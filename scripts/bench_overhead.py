"""What monitoring costs: the induction demo study trained bare, with live callbacks, and with a follower.

Runs the default induction run (`make demo`'s: 2000 steps, callbacks=study) three ways, one after another,
and prints for each the training time (optimizer steps only), training steps/s, wall time and the
callbacks' seconds, each as a multiple of that run's own training time (a ratio measured in one process,
so it carries over between machines better than the seconds do):

- bare: no callbacks (training alone);
- live: callbacks=study inside the training loop (the split `make demo` prints);
- follow: analyze=follow, the same callbacks in a follower process beside training; also the follower's
  lag, seconds from the end of training until every result was stored.

The LLC is pinned to the settings of the issue's baseline (step_size=1e-3, localization=100,
4 chains x 100 draws, batch 16, every 3rd checkpoint), since its defaults may change. First it prints
the LLC's floor at those settings (its chain-steps as plain forward+backward passes) as a multiple of
the training time, measured in this process: no implementation of the LLC can cost less.

    python scripts/bench_overhead.py [--modes bare,live,follow] [--steps 2000] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

LLC_BASELINE = ["callbacks.llc.step_size=1e-3", "callbacks.llc.localization=100", "callbacks.llc.num_chains=4",
                "callbacks.llc.num_draws=100", "callbacks.llc.batch_size=16",
                "callbacks.llc.schedule.checkpoint_stride=3"]
MODES = {
    "bare": ["callbacks=[]"],
    "live": ["callbacks=study", *LLC_BASELINE],
    "follow": ["callbacks=study", *LLC_BASELINE, "analyze=follow"],
}


def run_mode(mode: str, steps: int, root: Path) -> dict:
    from devinterp.cli.train import compose_train_config, run

    overrides = [f"steps={steps}", "progress=false", f"run_dir={root / mode}", *MODES[mode]]
    start = time.perf_counter()
    result = run(compose_train_config(overrides), overrides)
    wall = time.perf_counter() - start
    callbacks = dict(result.callback_seconds)
    total = sum(callbacks.values())
    return {
        "mode": mode, "wall_seconds": wall, "train_seconds": result.train_seconds,
        "train_steps_per_s": result.steps_trained / result.train_seconds,
        "wall_steps_per_s": result.steps_trained / wall, "callback_seconds": callbacks,
        "callbacks_over_training": total / result.train_seconds,
        "per_callback_over_training": {k: v / result.train_seconds for k, v in callbacks.items()},
        "follower_lag_seconds": result.follower_lag_seconds, "load": os.getloadavg()[0],
    }


def llc_floor(steps: int) -> dict:
    """The least the LLC callback at the baseline settings can cost, next to training, measured here:
    its calls x chains x draws plain forward+backward passes at its batch, against the training steps
    (forward, backward, AdamW) at the training batch, in this process."""
    import torch

    from devinterp.callbacks.base import Schedule
    from devinterp.models.attention_only import AttnOnlyConfig, AttnOnlyTransformer
    from devinterp.cli.train import compose_train_config
    from devinterp.training.schedule import checkpoint_schedule

    cfg = compose_train_config([f"steps={steps}", "callbacks=study", *LLC_BASELINE])
    llc = cfg.callbacks.llc
    schedule = checkpoint_schedule(steps, cfg.checkpoints.log, cfg.checkpoints.linear)
    calls = len(Schedule(checkpoint_stride=llc.schedule.checkpoint_stride).due_steps(schedule, steps))
    model = AttnOnlyTransformer(AttnOnlyConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)

    def seconds_per(batch: int, step: bool, repeats: int = 20) -> float:
        times = []
        for i in range(repeats + 3):
            x = torch.randint(0, 64, (batch, 64), generator=gen)
            start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            model(x, labels=x).loss.backward()
            if step:
                optimizer.step()
            if i >= 3:
                times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    train_step = seconds_per(cfg.batch_size, step=True)
    chain_step = seconds_per(llc.batch_size, step=False)
    floor = calls * llc.num_chains * llc.num_draws * chain_step
    training = steps * train_step
    return {"llc_calls": calls, "chain_steps": calls * llc.num_chains * llc.num_draws,
            "seconds_per_chain_step": chain_step, "seconds_per_train_step": train_step,
            "llc_floor_seconds": floor, "training_seconds": training, "llc_floor_over_training": floor / training}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="bare,live,follow")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)}; choose from {sorted(MODES)}")

    floor = llc_floor(args.steps)
    print(f"LLC floor at the baseline settings: {floor['llc_calls']} calls x 4 chains x 100 draws = "
          f"{floor['chain_steps']} forward+backward at batch 16 ({floor['seconds_per_chain_step'] * 1e3:.1f} ms each) "
          f"= {floor['llc_floor_seconds']:.0f} s, against {args.steps} training steps at batch 64 "
          f"({floor['seconds_per_train_step'] * 1e3:.1f} ms each) = {floor['training_seconds']:.0f} s: the LLC alone "
          f"costs at least {floor['llc_floor_over_training']:.2f}x training", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as root:
        for mode in modes:
            print(f"== {mode}: devinterp-train {' '.join(MODES[mode])}", flush=True)
            res = run_mode(mode, args.steps, Path(root))
            results.append(res)
            split = ", ".join(f"{k} {v:.1f} s ({res['per_callback_over_training'][k]:.2f}x)"
                              for k, v in res["callback_seconds"].items())
            print(f"   training {res['train_seconds']:.1f} s ({res['train_steps_per_s']:.1f} steps/s), wall "
                  f"{res['wall_seconds']:.1f} s ({res['wall_steps_per_s']:.1f} steps/s)"
                  + (f"; callbacks {res['callbacks_over_training']:.2f}x training: {split}" if split else "")
                  + (f"; follower done {res['follower_lag_seconds']:.1f} s after training"
                     if res["follower_lag_seconds"] is not None else "")
                  + f" [load {res['load']:.1f} on {os.cpu_count()} cores]", flush=True)
    by_mode = {r["mode"]: r for r in results}
    if "bare" in by_mode:
        bare = by_mode["bare"]["train_steps_per_s"]
        for r in results:
            print(f"{r['mode']:>7}: training {r['train_steps_per_s']:6.1f} steps/s ({r['train_steps_per_s'] / bare:.2f}x "
                  f"bare), wall {r['wall_steps_per_s']:6.1f} steps/s ({r['wall_steps_per_s'] / bare:.2f}x bare)")
    if args.json:
        args.json.write_text(json.dumps({"llc_floor": floor, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
