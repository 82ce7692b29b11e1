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

    PYTHONPATH=. python scripts/bench_hessian.py [--n-seqs 128] [--batch-size 64] [--train-steps 50]
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings

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
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {"torch_threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()[0]}

    model, batches = build(args)
    print(f"model: {sum(p.numel() for p in model.parameters())} parameters; eval set {args.n_seqs} x 64 tokens "
          f"in batches of {args.batch_size}; trained {args.train_steps} Adam steps; torch threads {torch.get_num_threads()}")

    # 1. HVP cost vs gradient cost.
    for method in ("jvp", "double_backward"):
        times = hvp_operator(model, loss_fn, batches, method=method).time_products(repeats=5)
        report[f"cost_{method}"] = {**times, "ratio": times["hvp"] / times["gradient"]}
        print(f"{method:>16}: gradient {times['gradient']:.3f} s, HVP {times['hvp']:.3f} s, "
              f"HVP/gradient = {times['hvp'] / times['gradient']:.2f}")

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
    report["loadavg_end"] = os.getloadavg()[0]
    print(f"load average (1 min) at start / end: {report['loadavg_start']:.1f} / {report['loadavg_end']:.1f} on {os.cpu_count()} cores")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=float)


if __name__ == "__main__":
    main()
