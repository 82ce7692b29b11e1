"""LLC at a run's own settings against a much longer run of the same estimator (not a timed test).

For each checkpoint step of RUN_DIR it measures the LLC three ways, on the data the run's `llc`
callback uses (the first `num_samples` sequences of the run's fixed training sample):

- **ours**: the settings the run's LLC callback uses today (this tree): the run calibrated post hoc
  on its last checkpoint (`LLCCallback`, the preset's settings: localization, num_samples, max_steps,
  max_batch_size), then `estimate_llc` at `--seeds` seeds; with `--calibrate-at live`, calibrated where
  a live run would be (the first checkpoint after the training loss has left its initial plateau;
  `devinterp.callbacks.llc`), to compare the two paths (rows `ours@live`);
- **before** (with `--before REV`, default b327f2d, the tree before the LLC rework): the same, with the
  code of REV, run in a subprocess on a checkout of REV (same virtual environment);
- **reference**: the same nβ and γ, the `lm_sgld` sampler with the diagonal preconditioner (the same
  target law: exact as ε → 0), 4 chains started at w*, with a batch of `--reference-batch` (or the
  whole sample): first `--hot-steps` steps at a flat step εγ of HOT_FLAT_STEP (or ours' ε if
  larger; halved while chains diverge), because the slowest modes of these posteriors take hundreds
  of steps even there; then at ours' ε/4, in blocks of `--block` steps, until the ε/4 trace's second
  half passes every health check at reference strength (R̂ ≤ 1.01, ESS ≥ 400, halves within 1 % or
  2 standard errors) or `--max-reference-steps` is spent (then the row says so).

It prints one row per (step, method): λ̂ (mean over seeds, each seed's value), error against the
reference, seconds per estimate, ESS per second, the health verdict (biased / imprecise); then the
summary the targets are stated in: median and worst |error|, healthy share, the verdict's false alarms
(flagged biased, within 5 % of the reference) and misses (not flagged, more than 5 % off), ESS per
second ours ÷ before, seconds per estimate ours ÷ before. Rows are appended to `--csv` as they finish,
and a rerun skips what the file holds (a killed bench resumes).

    .venv/bin/python scripts/bench_llc_reference.py RUN_DIR 80,290,2000 [--seeds 0,1,2] [--csv out.csv]
    .venv/bin/python scripts/bench_llc_reference.py RUN_DIR 80,290,2000 --csv out.csv --calibrate-at live
    .venv/bin/python scripts/bench_llc_reference.py RUN_DIR 80,290,2000 --csv out.csv --set preconditioner=none
    .venv/bin/python scripts/bench_llc_reference.py RUN_DIR 80,290,2000 --before-set step_size=1e-3 --before-set num_draws=100 --before-set batch_size=16

The reference and `before` rows are made by the plain call (the others reuse them from the CSV).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from devinterp.analysis.posthoc import load_run_data
from devinterp.callbacks.base import CallbackContext
from devinterp.callbacks.llc import LLCCallback, left_initial_plateau, next_token_loss
from devinterp.cli.configs import CONFIG_DIR
from devinterp.slt import diagnostics as diag
from devinterp.slt import estimate_llc
from devinterp.slt.llc import measure_anchor
from devinterp.slt.preconditioning import curvature_diagonal, diagonal_preconditioner
from devinterp.slt.sampler import FunctionalProblem, run_chains
from devinterp.store import checkpoints
from devinterp.store.run_dir import RUN_CONFIG_FILE, read_run_config

BEFORE = "b327f2d"
MAX_REFERENCE_RHAT = 1.01
MIN_REFERENCE_ESS = 400
REFERENCE_TREND = 0.01
HOT_FLAT_STEP = 0.04
ERROR_BOUND = 0.05  # a healthy estimate must be within this of the reference

# Runs in the checkout of --before (argv: run_dir, steps, seeds, settings json, threads); prints one JSON line
# per estimate. Written against that revision's API.
BEFORE_SCRIPT = r'''
import json, sys, time, warnings
from dataclasses import fields
from pathlib import Path
import torch
from devinterp import checkpoints
from devinterp.analysis.posthoc import load_run_data
from devinterp.callbacks.base import CallbackContext
from devinterp.callbacks.llc import LLCCallback, LLCSettings, left_initial_plateau, next_token_loss
from devinterp.slt import estimate_llc
from devinterp.slt.sampler import SAMPLERS
warnings.simplefilter("ignore")
run_dir, steps, seeds, settings = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
settings = {k: v for k, v in settings.items() if k in {f.name for f in fields(LLCSettings)}}  # this revision's keys
if settings.get("sampler") not in SAMPLERS:
    settings.pop("sampler", None)
data = load_run_data(run_dir)
callback = LLCCallback(**settings)
last = max(info.step for info in checkpoints.list_checkpoints(run_dir))
ctx = lambda step: CallbackContext(step, checkpoints.load(run_dir, step), data.task, data.eval_tokens, data.train_tokens,
                                   torch.device("cpu"), data.seed)
callback._calibrations[None] = callback._calibrate(ctx(last))
for step in steps:
    c = ctx(step)
    chosen = callback.settings_for(c)
    for seed in seeds:
        start = time.perf_counter()
        r = estimate_llc(c.model, next_token_loss, callback._data(c), seed=seed, **chosen)
        print(json.dumps(dict(step=step, seed=seed, llc=r.mean, stderr=r.stderr, ess=r.diagnostics["ess"],
                              healthy=r.healthy, problems="; ".join(r.problems), seconds=time.perf_counter() - start,
                              settings=json.dumps({k: v for k, v in chosen.items() if k != "params"}))), flush=True)
'''


def preset_settings(run_dir: Path) -> dict:
    """The run's own LLC settings, else those of its preset's callbacks (configs/callbacks/<name>.yaml, by
    the run's `name`), else llc.yaml's (empty: the callback's defaults)."""
    config = read_run_config(run_dir)
    own = (config.get("callbacks") or {}).get("llc")
    preset = CONFIG_DIR / "callbacks" / f"{config.get('name')}.yaml"
    if not own and preset.exists():
        own = (yaml.safe_load(preset.read_text()) or {}).get("llc")
    return {k: v for k, v in (own or {}).items() if k not in ("_target_", "schedule")}


def context(run_dir: Path, data, step: int) -> CallbackContext:
    return CallbackContext(step, checkpoints.load(run_dir, step), data.task, data.eval_tokens, data.train_tokens,
                           torch.device("cpu"), data.seed)


def live_reference_step(run_dir: Path) -> int:
    """The checkpoint a live run calibrates its LLC on: the first after the training loss left its plateau."""
    infos = checkpoints.list_checkpoints(run_dir)
    for i, info in enumerate(infos):
        if left_initial_plateau([x.train_loss for x in infos[: i + 1] if x.train_loss is not None]):
            return info.step
    return infos[-1].step


def measure_ours(run_dir: Path, steps: list[int], seeds: list[int], settings: dict, live: bool = False):
    """Yield one row per (step, seed) for this tree's LLC callback, calibrated on the last checkpoint (or,
    `live`, where a live run calibrates)."""
    data = load_run_data(run_dir)
    callback = LLCCallback(**settings)
    last = max(info.step for info in checkpoints.list_checkpoints(run_dir))
    reference_step = live_reference_step(run_dir) if live else last
    started = time.perf_counter()
    callback._calibrations[None] = callback._calibrate(context(run_dir, data, reference_step))
    print(f"  calibrated on step {reference_step} in {time.perf_counter() - started:.0f} s: "
          f"{callback._calibrations[None]['reason']}", flush=True)
    for step in steps:
        ctx = context(run_dir, data, step)
        chosen = callback.settings_for(ctx)
        for seed in seeds:
            start = time.perf_counter()
            r = estimate_llc(ctx.model, next_token_loss, callback._data(ctx), seed=seed, device=ctx.device, **chosen)
            yield dict(step=step, seed=seed, llc=r.mean, stderr=r.stderr, ess=r.diagnostics["ess"], healthy=r.healthy,
                       precise=r.precise, problems="; ".join(r.problems), seconds=time.perf_counter() - start,
                       settings=json.dumps({k: v for k, v in chosen.items() if k != "params"}),
                       step_size_used=r.diagnostics["step_size"], batch_used=r.diagnostics["batch_size"],
                       burnin_used=r.diagnostics["num_burnin"], noisy_llc=r.diagnostics.get("noisy_llc", math.nan),
                       rhat=r.diagnostics["rhat"])


def older_view(run_dir: Path, view: Path) -> Path:
    """`view`, a directory of links to `run_dir`'s files whose config.yaml leaves out the model's and task's
    `_target_` and the callbacks (newer runs name their builders there and have newer LLC keys; the older
    revision's schemas reject both; its LLC settings come from `BEFORE_SCRIPT`'s argument)."""
    view.mkdir()
    for entry in run_dir.iterdir():
        if entry.name != RUN_CONFIG_FILE:
            (view / entry.name).symlink_to(entry)
    config = read_run_config(run_dir)
    for group in ("model", "task"):
        (config.get(group) or {}).pop("_target_", None)
    config.pop("callbacks", None)
    (view / RUN_CONFIG_FILE).write_text(yaml.safe_dump(config))
    return view


def measure_before(run_dir: Path, steps: list[int], seeds: list[int], settings: dict, revision: str, threads: int):
    """Yield the rows of `BEFORE_SCRIPT` run on a checkout of `revision`, with `threads` torch threads."""
    repo = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tree:
        subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", revision, "-o", f"{tree}/src.tar"], check=True)
        subprocess.run(["tar", "-xf", f"{tree}/src.tar", "-C", tree], check=True)
        view = older_view(run_dir, Path(tree) / "run")
        command = [sys.executable, "-c", BEFORE_SCRIPT, str(view), json.dumps(steps), json.dumps(seeds),
                   json.dumps(settings), str(threads)]
        process = subprocess.Popen(command, cwd=tree, env={"PYTHONPATH": tree, "PATH": "/usr/bin:/bin"},
                                   stdout=subprocess.PIPE, text=True)
        for line in process.stdout:
            if line.startswith("{"):
                yield json.loads(line)
        if process.wait():
            raise RuntimeError(f"the {revision} estimator failed (exit {process.returncode})")


def reference(run_dir: Path, step: int, settings: dict, ours: dict, args) -> dict:
    """The long run (module docstring) at ours' nβ and γ, starting at ours' ε and batch."""
    data = load_run_data(run_dir)
    callback = LLCCallback(**settings)
    ctx = context(run_dir, data, step)
    dataset = callback._data(ctx)
    nbeta, gamma = ours["nbeta"], ours["localization"]
    problem = FunctionalProblem(ctx.model, next_token_loss, None, "cpu")
    scale = diagonal_preconditioner(curvature_diagonal(problem, dataset, 0), nbeta, gamma).to(problem.dtype)
    anchor = measure_anchor(problem, dataset, 0, noise_samples=0)
    started = time.perf_counter()

    def chains(num_steps, step_size, batch, weights, seed):
        return run_chains(problem, dataset, num_chains=4, num_steps=num_steps, step_size=step_size, nbeta=nbeta,
                          localization=gamma, init_loss=anchor.init_loss, batch_size=batch, sampler="lm_sgld", seed=seed,
                          sample_losses=anchor.sample_losses, preconditioner=scale, initial_weights=weights)

    batch = min(args.reference_batch, len(dataset))
    hot_step = max(HOT_FLAT_STEP / gamma, ours["step_size"])
    while (hot := chains(args.hot_steps, hot_step, batch, None, 1)).diverged_at.max() >= 0:
        hot_step /= 2
    weights, traces, seed = hot.final_weights, [], 2
    while True:
        run = chains(args.block, ours["step_size"] / 4, batch, weights, seed)
        weights, seed = run.final_weights, seed + 1
        traces.append(nbeta * (run.loss_trace.numpy() - anchor.init_loss))
        trace = np.concatenate(traces, axis=1)
        half = trace[:, trace.shape[1] // 2:]
        mean, ess, rhat = float(half.mean()), diag.ess(half), diag.rhat(half)
        difference, z = diag.trend(half)
        stderr = float(half.std(ddof=1) / math.sqrt(ess)) if ess > 0 else math.nan
        settled = abs(difference) <= REFERENCE_TREND * abs(mean) or abs(z) <= 2
        done = rhat <= MAX_REFERENCE_RHAT and ess >= MIN_REFERENCE_ESS and settled
        if done or trace.shape[1] >= args.max_reference_steps or not np.isfinite(trace).all():
            break
    return dict(step=step, seed=-1, llc=mean, stderr=stderr, ess=ess, rhat=rhat, healthy=bool(done),
                problems="" if done else f"reference not converged (R̂ {rhat:.3f}, ESS {ess:.0f}, trend z {z:.1f})",
                seconds=time.perf_counter() - started, steps=args.hot_steps + trace.shape[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("steps", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--before", default=BEFORE, help="revision of the 'before' estimator ('' to skip)")
    parser.add_argument("--before-set", action="append", default=[], metavar="KEY=VALUE",
                        help="an LLC setting of the 'before' estimator where it differed from the preset's (the "
                             "induction demo's fixed ones: step_size=1e-3 num_draws=100 batch_size=16)")
    parser.add_argument("--hot-steps", type=int, default=600)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--reference-batch", type=int, default=256)
    parser.add_argument("--max-reference-steps", type=int, default=6000)
    parser.add_argument("--calibrate-at", choices=["last", "live"], default="last")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an LLC setting (e.g. preconditioner=none, num_chains=2 max_steps=800); "
                             "the rows are labelled ours[KEY=VALUE,...]")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 220)
    run_dir = args.run_dir.resolve()
    settings = preset_settings(run_dir)
    settings.update(parse_settings(args.set))
    done = pd.read_csv(args.csv) if args.csv and args.csv.exists() else pd.DataFrame(columns=["run", "method", "step"])
    rows = done.to_dict("records")

    def keep(method: str, row: dict) -> None:
        row = {"run": str(run_dir), "method": method, **row}
        rows.append(row)
        if args.csv:
            pd.DataFrame(rows).to_csv(args.csv, index=False)
        print(f"  {method:9s} step {row['step']:5d} seed {row['seed']:2d}: λ̂ {row['llc']:9.3f} ± {row['stderr']:.3f} "
              f"ESS {row['ess']:6.0f}  batch {row.get('batch_used', '-')}  burn-in {row.get('burnin_used', '-')}  {row['seconds']:6.1f} s  {'healthy' if row['healthy'] else 'BIASED: ' + row['problems']}",
              flush=True)

    def missing(method: str) -> list[int]:
        have = {int(s) for s in done[(done.run == str(run_dir)) & (done.method == method)].step} if len(done) else set()
        return [s for s in args.steps if s not in have]

    print(f"{run_dir} steps {args.steps}: settings {settings or 'llc.yaml defaults'}", flush=True)
    ours = ("ours" if args.calibrate_at == "last" else "ours@live") + (f"[{','.join(args.set)}]" if args.set else "")
    if missing(ours):
        for row in measure_ours(run_dir, missing(ours), args.seeds, settings, live=args.calibrate_at == "live"):
            keep(ours, row)
    if args.before and not args.set and missing("before"):
        before = {**settings, **parse_settings(args.before_set)}
        for row in measure_before(run_dir, missing("before"), args.seeds, before, args.before, args.threads):
            keep("before", row)
    table = pd.DataFrame(rows)
    for step in missing("reference") if not args.set and args.calibrate_at == "last" else []:
        ours = table[(table.run == str(run_dir)) & (table.method == "ours") & (table.step == step)].iloc[0]
        chosen = json.loads(ours.settings)
        keep("reference", reference(run_dir, step, settings, {**chosen, "step_size": ours.step_size_used}, args))
    summarize(pd.DataFrame(rows), str(run_dir))


def parse_settings(items: list[str]) -> dict:
    """KEY=VALUE items (YAML values) as a dict."""
    return {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in items)}


def summarize(table: pd.DataFrame, run: str) -> None:
    """The per-step table and the summary (module docstring)."""
    table = table[table.run == run]
    ref = table[table.method == "reference"].set_index("step").llc
    lines, errors = [], {}
    for (method, step), group in table[table.method != "reference"].groupby(["method", "step"]):
        if step not in ref:
            continue
        error = group.llc / ref[step] - 1
        biased = ~group.healthy.astype(bool)
        errors.setdefault(method, []).append(dict(
            error=error.to_numpy(), biased=biased.to_numpy(), seconds=group.seconds.mean(),
            ess_per_second=(group.ess / group.seconds).mean()))
        lines.append(f"{method:7s} {step:5d}  λ̂ {group.llc.mean():9.3f} ({', '.join(f'{v:.1f}' for v in group.llc)})  "
                     f"ref {ref[step]:9.3f}  error {error.mean():+6.1%}  {group.seconds.mean():6.1f} s  "
                     f"ESS/s {(group.ess / group.seconds).mean():6.1f}  biased {int(biased.sum())}/{len(group)}")
    print("\n".join(lines))
    for method, items in errors.items():
        error = np.concatenate([i["error"] for i in items])
        biased = np.concatenate([i["biased"] for i in items])
        off = np.abs(error) > ERROR_BOUND
        print(f"{method}: median |error| {np.median(np.abs(error)):.1%}, worst {np.abs(error).max():.1%}; healthy "
              f"{(~biased).sum()}/{len(biased)}; verdict: false alarms {(biased & ~off).sum()}, misses "
              f"{(~biased & off).sum()} (off by > {ERROR_BOUND:.0%}: {off.sum()}); "
              f"{np.mean([i['seconds'] for i in items]):.1f} s per estimate, "
              f"ESS/s {np.mean([i['ess_per_second'] for i in items]):.1f}")


if __name__ == "__main__":
    main()
