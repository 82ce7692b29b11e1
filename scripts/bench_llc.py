"""Benchmark the LLC estimator on the default 2-layer attention-only transformer at batch 32.

Prints, per device (CPU, and CUDA when available):
- floor: one plain forward+backward of the model at the batch size (autograd, `loss.backward()`);
- chain-step: wall time of one vectorized SGLD step divided by the number of chains;
- their ratio (target <= 1.15);
- total wall time of `estimate_llc` with 4 chains x 200 draws (including the L_n(w*) pass);
- on CUDA also: the time of one step of 8 chains against one of 2 chains (target: about 1x).

Usage: python scripts/bench_llc.py [--n 1024] [--batch-size 32] [--repeats 30] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import TensorDataset

from devinterp.models.attention_only import AttnOnlyConfig, AttnOnlyTransformer
from devinterp.slt import default_nbeta, estimate_llc
from devinterp.slt.sampler import FunctionalProblem, run_chains


def loss_fn(model, batch):
    return model(batch[0], labels=batch[0]).loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward_backward(model, batch, device, repeats: int) -> float:
    """Seconds per plain forward+backward at this batch (median of `repeats`)."""
    times = []
    for i in range(repeats + 3):
        _sync(device)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        _sync(device)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def time_chain_steps(model, data, device, num_chains: int, batch_size: int, steps: int) -> float:
    """Seconds per SGLD step of `num_chains` vectorized chains (after a short warm-up)."""
    problem = FunctionalProblem(model, loss_fn, None, device)
    common = dict(
        step_size=1e-3, nbeta=default_nbeta(len(data)), localization=100.0, init_loss=float("inf"),
        batch_size=batch_size, sampler="sgld", seed=0,
    )
    run_chains(problem, data, num_chains=num_chains, num_steps=3, **common)
    _sync(device)
    start = time.perf_counter()
    run_chains(problem, data, num_chains=num_chains, num_steps=steps, **common)
    _sync(device)
    return (time.perf_counter() - start) / steps


def bench(device: torch.device, n: int, batch_size: int, repeats: int) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AttnOnlyTransformer(AttnOnlyConfig()).to(device)
    data = TensorDataset(torch.randint(0, 64, (n, 64), generator=gen))
    batch = (data.tensors[0][:batch_size].to(device),)
    params = sum(p.numel() for p in model.parameters())
    print(f"\n== {device} | attention-only transformer, {params} params | batch {batch_size}, n {n} ==")

    floor = time_forward_backward(model, batch, device, repeats)
    step4 = time_chain_steps(model, data, device, 4, batch_size, repeats)
    chain_step = step4 / 4
    print(f"plain forward+backward (floor):   {floor * 1e3:8.2f} ms")
    print(f"SGLD step, 4 chains vectorized:   {step4 * 1e3:8.2f} ms")
    print(f"SGLD time per chain-step:         {chain_step * 1e3:8.2f} ms")
    print(f"ratio chain-step / floor:         {chain_step / floor:8.2f}  (target <= 1.15)")

    start = time.perf_counter()
    result = estimate_llc(model, loss_fn, data, num_chains=4, num_draws=200, batch_size=batch_size, device=device)
    _sync(device)
    wall = time.perf_counter() - start
    print(f"estimate_llc 4 chains x 200 draws: {wall:7.2f} s   (llc = {result.mean:.2f} ± {result.std:.2f}, "
          f"vectorized = {result.diagnostics['vectorized']})")

    if device.type == "cuda":
        step2 = time_chain_steps(model, data, device, 2, batch_size, repeats)
        step8 = time_chain_steps(model, data, device, 8, batch_size, repeats)
        print(f"SGLD step, 2 chains:              {step2 * 1e3:8.2f} ms")
        print(f"SGLD step, 8 chains:              {step8 * 1e3:8.2f} ms   (8 / 2 chains: {step8 / step2:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1024, help="dataset size (random token sequences)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the CPU run")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    bench(torch.device("cpu"), args.n, args.batch_size, args.repeats)
    if torch.cuda.is_available():
        bench(torch.device("cuda"), args.n, args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
