"""Benchmark of the Hessian spectrum code on the default attention-only transformer (~46k parameters).

Reports, in one run:
1. seconds per gradient and per Hessian-vector product for both HVP methods (jvp(grad) and
   double backward) and their ratio;
2. HVPs and seconds to reach the top-5 eigenvalues at relative accuracy 1e-3 with Lanczos (full
   reorthogonalisation) and with deflated power iteration (what PyHessian does), both measured
   against a long Lanczos reference run; power iteration both with PyHessian's own stopping rule
   (relative change < 1e-3, at most 100 iterations per eigenvalue) and with an oracle that stops
   each eigenvalue as soon as it is within 1e-3 of the reference (its best case);
3. seconds and HVPs of one `hessian_spectrum` call at the default settings.

Data: random tokens `torch.randint(0, 64, (n, 64))`, batches `(x_chunk,)`, loss `m(x, labels=x).loss`;
the model is first trained for a few Adam steps on the same data so that it is not at initialisation.

4. The `hessian` callback before and after (`--before REF`, default the commit before the density
   reused the eigenvalue run): on checkpoints spread over the default induction run (trained here
   without callbacks unless --run-dir is given), the HVPs per checkpoint of the callback at its
   defaults with the code at REF (extracted with `git archive`, run in a subprocess) and now; the
   top-3 relative error against a tight reference (120 Lanczos steps) and the trace against a tight
   reference (that basis + 40 deflated probes), as z = (trace - reference) / its standard error.

    PYTHONPATH=. python scripts/bench_hessian.py [--n-seqs 128] [--batch-size 64] [--train-steps 50]
        [--run-dir RUN] [--checkpoints 8] [--before b798142] [--skip-parts 1,2,3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from devinterp.hessian import hessian_spectrum, hvp_operator
from devinterp.hessian.lanczos import LanczosRun, lanczos, random_unit_vector
from devinterp.models.attention_only import AttnOnlyConfig, AttnOnlyTransformer


def loss_fn(model, batch):
    return model(batch[0], labels=batch[0]).loss


def build(args) -> tuple[AttnOnlyTransformer, list]:
    g = torch.Generator().manual_seed(args.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = AttnOnlyTransformer(AttnOnlyConfig())
    x = torch.randint(0, 64, (args.n_seqs, 64), generator=g)
    batches = [(c,) for c in x.split(args.batch_size)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(args.train_steps):
        optimizer.zero_grad()
        loss_fn(model, batches[step % len(batches)]).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, batches


def top_ritz(run: LanczosRun, k: int) -> np.ndarray:
    return run.ritz()[0][::-1][:k]


def lanczos_to_accuracy(op, reference: np.ndarray, rel: float, max_steps: int, seed: int) -> dict:
    """Lanczos from a fresh start vector, stopped once all top-k Ritz values are within rel."""
    k = len(reference)
    reached = {}

    def accurate(run: LanczosRun) -> bool:
        if run.steps < k:
            return False
        ok = bool(np.all(np.abs(top_ritz(run, k) - reference) <= rel * np.abs(reference)))
        if ok:
            reached["steps"] = run.steps
        return ok

    start, count = time.perf_counter(), op.num_hvps
    v0 = random_unit_vector(op.dim, torch.Generator().manual_seed(seed), op.dtype, op.device)
    run = lanczos(op, v0, max_steps, keep_basis=False, should_stop=accurate)
    values = top_ritz(run, k)
    return {
        "hvps": op.num_hvps - count,
        "seconds": time.perf_counter() - start,
        "reached": "steps" in reached,
        "max_rel_error": float(np.max(np.abs(values - reference) / np.abs(reference))),
    }


def deflated_power_iteration(op, k: int, seed: int, max_iter: int, stop) -> dict:
    """PyHessian-style: eigenvalue i by power iteration on H deflated by eigenvectors 1..i-1.

    `stop(i, value, previous)` decides when eigenvalue i is done."""
    generator = torch.Generator().manual_seed(seed)
    start, count = time.perf_counter(), op.num_hvps
    vectors, values = [], []
    for i in range(k):
        v = random_unit_vector(op.dim, generator, op.dtype, op.device)
        value = None
        for _ in range(max_iter):
            for u in vectors:
                v = v - (u @ v) * u
            v = v / v.norm()
            hv = op.matvec(v)
            for u in vectors:
                hv = hv - (u @ hv) * u
            previous, value = value, float(hv @ v)
            v = hv / hv.norm()
            if previous is not None and stop(i, value, previous):
                break
        vectors.append(v)
        values.append(value)
    return {"hvps": op.num_hvps - count, "seconds": time.perf_counter() - start, "values": values}


# Runs with PYTHONPATH=<the code at --before>: the callback at its defaults on the given checkpoints.
BEFORE_SCRIPT = r'''
import dataclasses, json, sys, time, warnings
from pathlib import Path
import torch
from devinterp import checkpoints
from devinterp.analysis import posthoc
from devinterp.callbacks.base import CallbackContext, derive_seed
from devinterp.callbacks.hessian import HessianCallback
torch.set_num_threads(int(sys.argv[3]))
# The run was written by newer code: task keys this revision does not know must be off (None), and go.
read_config = posthoc.run_config
def known_keys_only(run_dir):
    config = read_config(run_dir)
    schemas = getattr(posthoc, "TASK_SCHEMAS", None) or posthoc._TASK_SCHEMAS  # renamed since
    known = {f.name for f in dataclasses.fields(schemas[config["task"]["name"]])}
    unknown = {k: v for k, v in config["task"].items() if k not in known and k != "_target_"}  # newer: the class
    if any(v is not None for v in unknown.values()):
        sys.exit(f"the run sets task keys this revision lacks: {unknown}")
    return {**config, "task": {k: v for k, v in config["task"].items() if k in known}}
posthoc.run_config = known_keys_only
run_dir = Path(sys.argv[1])
data = posthoc.load_run_data(run_dir)
callback = HessianCallback()
for step in json.loads(sys.argv[2]):
    ctx = CallbackContext(step, checkpoints.load(run_dir, step), data.task, data.eval_tokens, data.train_tokens,
                          torch.device("cpu"), derive_seed(data.seed, step, "hessian"))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scalars = callback.on_checkpoint(ctx).scalars
    print(json.dumps({"step": step, "seconds": time.perf_counter() - start, **scalars}), flush=True)
assert Path(__import__("devinterp").__file__).is_relative_to(Path.cwd()), "not the code under test"
'''
REPO = Path(__file__).resolve().parent.parent


def callback_results_at(ref: str, run_dir: Path, steps: list[int]) -> dict[int, dict]:
    """The hessian callback's scalars at `steps` with the code of git revision `ref`."""
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "devinterp"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        done = subprocess.run([sys.executable, "-c", BEFORE_SCRIPT, str(run_dir), json.dumps(steps),
                               str(torch.get_num_threads())], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": tree}, cwd=tree, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the callback at {ref} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {row["step"]: row for row in rows}


def tight_reference(model, batches, seed: int = 12345) -> dict:
    """Top-3 from 120 Lanczos steps; trace = its exact Krylov part + 40 deflated Hutchinson probes."""
    from devinterp.hessian.trace import apply_to_rows, project_off, rademacher_probes, trace_from_samples

    op = hvp_operator(model, loss_fn, batches)
    v0 = random_unit_vector(op.dim, torch.Generator().manual_seed(seed), op.dtype, op.device)
    run = lanczos(op, v0, 120)
    values, vectors = run.ritz()
    probes = project_off(rademacher_probes(40, torch.Generator().manual_seed(seed + 1), op), run.basis)
    samples = (probes * apply_to_rows(op, probes)).sum(dim=1).tolist()
    trace = trace_from_samples(samples, float(run.alphas.sum()), run.steps)
    return {"top": values[::-1][:3], "top_residuals": run.ritz_residuals(vectors)[::-1][:3],
            "trace": trace.value, "trace_stderr": trace.stderr}


def default_run(run_dir: Path | None, workdir: Path) -> Path:
    """`run_dir`, or the default induction run trained here without callbacks."""
    if run_dir is not None:
        return run_dir
    from devinterp.cli.train import compose_train_config, run

    overrides = ["callbacks=[]", "progress=false", f"run_dir={workdir / 'induction'}"]
    print("training the default induction run without callbacks (a few minutes) ...", flush=True)
    return run(compose_train_config(overrides), overrides).run_dir


def before_and_after(args, report: dict) -> None:
    """Section 4: the hessian callback at --before and now, on checkpoints of a real run."""
    from devinterp.store import checkpoints
    from devinterp.analysis.posthoc import load_run_data
    from devinterp.callbacks.base import CallbackContext, derive_seed
    from devinterp.callbacks.hessian import HessianCallback

    with tempfile.TemporaryDirectory() as workdir:
        run_dir = default_run(args.run_dir, Path(workdir))
        all_steps = [info.step for info in checkpoints.list_checkpoints(run_dir)]
        picks = np.unique(np.linspace(0, len(all_steps) - 1, min(args.checkpoints, len(all_steps))).round().astype(int))
        steps = [all_steps[i] for i in picks]
        before = callback_results_at(args.before, run_dir, steps)
        data = load_run_data(run_dir)
        callback = HessianCallback()
        rows = []
        print(f"\nhessian callback at its defaults, before ({args.before}) and now, on {len(steps)} of "
              f"{len(all_steps)} checkpoints of {run_dir}:")
        print(f"{'step':>5} {'HVPs':>9} {'ratio':>5} | {'top-3 rel err':>17} | {'trace (stderr)':>34} "
              f"{'reference':>16} | {'z':>11} | {'mass near 0':>11} | {'seconds':>9}")
        for step in steps:
            model = checkpoints.load(run_dir, step)
            ctx = CallbackContext(step, model, data.task, data.eval_tokens, data.train_tokens, torch.device("cpu"),
                                  derive_seed(data.seed, step, "hessian"))
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                now = {**callback.on_checkpoint(ctx).scalars, "seconds": time.perf_counter() - start}
            ref = tight_reference(model, [(data.train_tokens[: callback.config.num_samples],)])
            row = {"step": step, "reference": {k: np.asarray(v).tolist() for k, v in ref.items()}}
            for label, res in (("before", before[step]), ("after", now)):
                top = np.array([res[f"hessian/top_{i}"] for i in (1, 2, 3)])
                z = (res["hessian/trace"] - ref["trace"]) / np.hypot(res["hessian/trace_stderr"], ref["trace_stderr"])
                row[label] = {"hvps": res["hessian/num_hvps"], "top3_rel_error": float(np.max(np.abs(top - ref["top"]) / np.abs(ref["top"]))),
                              "trace": res["hessian/trace"], "trace_stderr": res["hessian/trace_stderr"], "z": float(z),
                              "mass_near_zero": res["hessian/mass_near_zero"], "seconds": res["seconds"]}
            b, a = row["before"], row["after"]
            print(f"{step:>5} {b['hvps']:>4.0f}>{a['hvps']:<4.0f} {a['hvps'] / b['hvps']:>5.2f} | "
                  f"{b['top3_rel_error']:>8.1e} {a['top3_rel_error']:>8.1e} | "
                  f"{b['trace']:>9.1f} ({b['trace_stderr']:>5.1f}) {a['trace']:>9.1f} ({a['trace_stderr']:>5.1f}) "
                  f"{ref['trace']:>9.1f} ({ref['trace_stderr']:>4.1f}) | {b['z']:>5.2f} {a['z']:>5.2f} | "
                  f"{b['mass_near_zero']:>5.3f} {a['mass_near_zero']:>5.3f} | {b['seconds']:>4.1f} {a['seconds']:>4.1f}",
                  flush=True)
            rows.append(row)
    total_before = sum(r["before"]["hvps"] for r in rows)
    total_after = sum(r["after"]["hvps"] for r in rows)
    summary = {"hvps_before": total_before, "hvps_after": total_after, "ratio": total_after / total_before}
    for label in ("before", "after"):
        summary[f"within_1e-3_{label}"] = sum(r[label]["top3_rel_error"] <= 1e-3 for r in rows)
        summary[f"abs_z_le_2_{label}"] = sum(abs(r[label]["z"]) <= 2 for r in rows)
        summary[f"mean_z2_{label}"] = float(np.mean([r[label]["z"] ** 2 for r in rows]))
    print(f"HVPs: {total_before:.0f} before, {total_after:.0f} now = {summary['ratio']:.2f} of before "
          f"(target <= 0.40); top-3 within 1e-3 of the reference at {summary['within_1e-3_before']} / "
          f"{summary['within_1e-3_after']} of {len(rows)} checkpoints (before / now); trace |z| <= 2 at "
          f"{summary['abs_z_le_2_before']} / {summary['abs_z_le_2_after']}, mean z^2 {summary['mean_z2_before']:.2f} / "
          f"{summary['mean_z2_after']:.2f} (1 if the standard errors are right)")
    report["callback_before_after"] = {"before": args.before, "rows": rows, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-seqs", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--reference-steps", type=int, default=150)
    parser.add_argument("--rel", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=str, default=None, help="also write the results here")
    parser.add_argument("--run-dir", type=Path, default=None, help="section 4: a trained run (default: train one)")
    parser.add_argument("--checkpoints", type=int, default=8, help="section 4: checkpoints to compare")
    parser.add_argument("--before", default="b798142", help="section 4: git revision of the 'before' code")
    parser.add_argument("--skip-parts", default="", help="comma-separated sections to skip, e.g. 1,2,3")
    args = parser.parse_args()
    skip = {int(x) for x in args.skip_parts.split(",") if x}
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {"torch_threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()[0]}

    if {1, 2, 3} - skip:
        model, batches = build(args)
        print(f"model: {sum(p.numel() for p in model.parameters())} parameters; eval set {args.n_seqs} x 64 tokens "
              f"in batches of {args.batch_size}; trained {args.train_steps} Adam steps; torch threads {torch.get_num_threads()}")

    if 1 not in skip:
        # 1. HVP cost vs gradient cost.
        for method in ("jvp", "double_backward"):
            times = hvp_operator(model, loss_fn, batches, method=method).time_products(repeats=5)
            report[f"cost_{method}"] = {**times, "ratio": times["hvp"] / times["gradient"]}
            print(f"{method:>16}: gradient {times['gradient']:.3f} s, HVP {times['hvp']:.3f} s, "
                  f"HVP/gradient = {times['hvp'] / times['gradient']:.2f}")

    if 2 not in skip:
        op = hvp_operator(model, loss_fn, batches)  # the default method

        # 2. Top-5 to relative accuracy 1e-3.
        v0 = random_unit_vector(op.dim, torch.Generator().manual_seed(12345), op.dtype, op.device)
        ref_run = lanczos(op, v0, args.reference_steps, keep_basis=False)
        values, vectors = ref_run.ritz()
        residuals = ref_run.ritz_residuals(vectors)[::-1][:5]
        reference = values[::-1][:5]
        report["reference_top5"] = reference.tolist()
        report["reference_residuals"] = residuals.tolist()
        print(f"reference top-5 ({args.reference_steps} Lanczos steps): {np.array2string(reference, precision=6)}, "
              f"residuals {np.array2string(residuals, precision=1)}; bottom-2 {np.array2string(values[:2], precision=5)}")

        lz = lanczos_to_accuracy(op, reference, args.rel, args.reference_steps, seed=args.seed + 1)
        report["lanczos"] = lz
        print(f"Lanczos: {lz['hvps']} HVPs, {lz['seconds']:.1f} s to top-5 at rel {args.rel} "
              f"(reached={lz['reached']}, max rel err {lz['max_rel_error']:.1e})")

        pyhessian = deflated_power_iteration(
            op, 5, args.seed + 2, max_iter=100, stop=lambda i, value, prev: abs(value - prev) / (abs(prev) + 1e-6) < args.rel
        )
        err = np.abs(np.array(pyhessian["values"]) - reference) / np.abs(reference)
        pyhessian["max_rel_error"] = float(err.max())
        report["power_pyhessian_rule"] = pyhessian
        print(f"power iteration (PyHessian rule: rel change < {args.rel}, <= 100 iters each): {pyhessian['hvps']} HVPs, "
              f"{pyhessian['seconds']:.1f} s, max rel err vs reference {err.max():.1e}")

        oracle = deflated_power_iteration(
            op, 5, args.seed + 2, max_iter=200,
            stop=lambda i, value, prev: abs(value - reference[i]) <= args.rel * abs(reference[i]),
        )
        err = np.abs(np.array(oracle["values"]) - reference) / np.abs(reference)
        oracle["max_rel_error"] = float(err.max())
        report["power_oracle"] = oracle
        print(f"power iteration (oracle stop at rel {args.rel}, <= 200 iters each): {oracle['hvps']} HVPs, "
              f"{oracle['seconds']:.1f} s, max rel err {err.max():.1e}")
        print(f"HVP ratio power/Lanczos: PyHessian rule {pyhessian['hvps'] / lz['hvps']:.1f}x, "
              f"oracle {oracle['hvps'] / lz['hvps']:.1f}x")

    if 3 not in skip:
        # 3. One full call at the default settings.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            res = hessian_spectrum(model, loss_fn, batches)
        report["default_call"] = {
            "seconds": res.seconds, "num_hvps": res.num_hvps, "converged": res.converged,
            "lanczos_steps": res.lanczos_steps, "warnings": [str(w.message) for w in caught], **res.summary(),
        }
        print(f"hessian_spectrum defaults: {res.seconds:.1f} s, {res.num_hvps} HVPs "
              f"({res.seconds / res.num_hvps:.3f} s/HVP), converged={res.converged} after {res.lanczos_steps} steps")
        print(f"  top {np.array2string(res.top.values, precision=5)} (residuals {np.array2string(res.top.residuals, precision=1)})")
        print(f"  bottom {np.array2string(res.bottom.values, precision=5)} (residuals {np.array2string(res.bottom.residuals, precision=1)})")
        print(f"  trace {res.trace:.4f} +- {res.trace_stderr:.4f}; mass within {res.density.zero_band:.3g} of zero: "
              f"{res.density.mass_near_zero:.3f}")
    if 4 not in skip:
        before_and_after(args, report)
    report["loadavg_end"] = os.getloadavg()[0]
    print(f"load average (1 min) at start / end: {report['loadavg_start']:.1f} / {report['loadavg_end']:.1f} on {os.cpu_count()} cores")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=float)


if __name__ == "__main__":
    main()
