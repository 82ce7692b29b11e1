"""Benchmark `estimate_llc` end to end against its floor and against devinterp 2.0.1 (the anchor).

On the default 2-layer attention-only transformer (~46k parameters), random-token data of n sequences,
at identical settings (nβ, ε, γ, chains, draws, batch, same weights and data), it prints:

- floor: chains x draws plain forward+backward passes at the batch size (autograd `loss.backward()`,
  a fresh minibatch each), the least any SGLD estimate at these settings must spend (timed before and
  after each of `--repeats` estimates; the median repeat is reported);
- ours: wall time of `estimate_llc` (including its pass at w*: L_n(w*), per-sample losses, noise scale;
  timed also on its own);
- anchor: wall time of devinterp 2.0.1's `devinterp.slt.llc.llc(...)` (no observables), run in a
  subprocess of a separate venv because that package has our import name `devinterp`; the script
  creates the venv on first use (torch==2.13.0 first, then `pip install devinterp==2.0.1`);
- the ratios ours / floor (target <= 1.15) and ours / anchor (target <= 0.6). Each process times its own
  floor, and the anchor ratio is taken as (ours / our floor) / (anchor / its floor), so that a machine
  shared with other jobs, which slows one process more than the other, does not skew it. Every floor is
  the mean of one timed before and one after the estimate.

Usage: python scripts/bench_llc.py [--n 4096] [--batch-size 32] [--chains 4] [--draws 100]
       [--repeats 3] [--threads N] [--anchor-venv /tmp/devinterp-2.0.1-venv] [--no-anchor] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from devinterp.models import attention_only
from devinterp.models.attention_only import AttnOnlyConfig, AttnOnlyTransformer
from devinterp.slt import default_nbeta, estimate_llc
from devinterp.slt.llc import HEALTH_NOISE_SAMPLES, measure_anchor
from devinterp.slt.sampler import FunctionalProblem

ANCHOR_VERSION = "2.0.1"
TORCH_SPEC = "torch==2.13.0"
# devinterp 2.0.1's default: L_n(w*) from this many batches per chain (forward only, no grad).
ANCHOR_INIT_LOSS_BATCHES = 32

# Runs inside the anchor venv: argv[1] = a directory with model.pt, tokens.pt, settings.json.
# Our model class is loaded from its source file (it imports only torch and transformers).
ANCHOR_SCRIPT = r'''
import importlib.util, json, sys, tempfile, time, warnings
from pathlib import Path
import torch
work = Path(sys.argv[1])
settings = json.loads((work / "settings.json").read_text())
if settings["threads"]:
    torch.set_num_threads(settings["threads"])
spec = importlib.util.spec_from_file_location("attn_only_model", settings["model_source"])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
model = module.AttnOnlyTransformer(module.AttnOnlyConfig(**settings["model_config"]))
model.load_state_dict(torch.load(work / "model.pt"))
tokens = torch.load(work / "tokens.pt")
from datasets import Dataset
from devinterp.slt.llc import llc

def floor_seconds(batches):
    start = time.perf_counter()
    for x in batches:
        model.zero_grad(set_to_none=True)
        model(x, labels=x).loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start

g = torch.Generator().manual_seed(1)
batches = [tokens[torch.randint(0, len(tokens), (settings["batch_size"],), generator=g)]
           for _ in range(settings["chains"] * settings["draws"])]
floor_seconds(batches[:5])
floor_before = floor_seconds(batches)
dataset = Dataset.from_dict({"input_ids": tokens.tolist()}).with_format("torch")
with warnings.catch_warnings(), tempfile.TemporaryDirectory() as out:
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    result = llc(model, dataset, {}, lr=settings["step_size"], n_beta=settings["nbeta"],
                 localization=settings["localization"], num_chains=settings["chains"],
                 num_draws=settings["draws"], batch_size=settings["batch_size"], device="cpu",
                 num_init_loss_batches=settings["init_loss_batches"],
                 output_path=str(Path(out) / "samples.zarr"))
    seconds = time.perf_counter() - start
floor = (floor_before + floor_seconds(batches)) / 2
import importlib.metadata
print(json.dumps({"version": importlib.metadata.version("devinterp"),
                  "seconds": seconds, "floor": floor, "llc_mean": float(result.llc_mean),
                  "llc_std": float(result.llc_std), "init_loss": float(result.init_loss),
                  "num_init_loss_batches": settings["init_loss_batches"], "threads": torch.get_num_threads()}))
'''


def loss_fn(model, batch):
    return model(batch[0], labels=batch[0]).loss


def floor_seconds(model, batches) -> float:
    """Plain forward+backward over `batches` (one autograd step each), in seconds."""
    start = time.perf_counter()
    for x in batches:
        model.zero_grad(set_to_none=True)
        loss_fn(model, (x,)).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def ensure_anchor_venv(venv: Path) -> Path:
    """The anchor venv's python, creating the venv (torch first, then devinterp 2.0.1) if needed."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", f"import importlib.metadata as m; assert m.version('devinterp') == '{ANCHOR_VERSION}'"]
    # (run outside this checkout: a devinterp*.egg-info in the working directory would answer instead)
    if python.exists() and subprocess.run(check, capture_output=True, cwd=tempfile.gettempdir()).returncode == 0:
        return python
    print(f"creating {venv} with devinterp=={ANCHOR_VERSION} (once; a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", TORCH_SPEC], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"devinterp=={ANCHOR_VERSION}"], check=True)
    return python


def run_anchor(python: Path, model, tokens, settings: dict) -> dict:
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        torch.save(model.state_dict(), work / "model.pt")
        torch.save(tokens, work / "tokens.pt")
        (work / "settings.json").write_text(json.dumps(settings))
        (work / "anchor.py").write_text(ANCHOR_SCRIPT)
        env = {**os.environ, "PYTHONPATH": ""}  # never our package
        done = subprocess.run([str(python), str(work / "anchor.py"), str(work)], capture_output=True, text=True,
                              env=env, cwd=work)
        if done.returncode != 0:
            raise RuntimeError(f"anchor run failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4096, help="dataset size (random token sequences)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--step-size", type=float, default=1e-3)
    parser.add_argument("--localization", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=3, help="floor/estimate alternations (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, in both processes")
    parser.add_argument("--anchor-venv", type=Path, default=Path(tempfile.gettempdir()) / "devinterp-2.0.1-venv")
    parser.add_argument("--no-anchor", action="store_true", help="skip devinterp 2.0.1")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = AttnOnlyConfig()
        model = AttnOnlyTransformer(config)
    tokens = torch.randint(0, config.vocab_size, (args.n, config.n_ctx), generator=gen)
    data = TensorDataset(tokens)
    nbeta = default_nbeta(args.n)
    params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads | attention-only transformer, {params} "
          f"params | n={args.n}, batch {args.batch_size}, {args.chains} chains x {args.draws} draws, "
          f"eps={args.step_size:g}, gamma={args.localization:g}, nbeta={nbeta:.1f} | load {os.getloadavg()[0]:.1f}")

    g = torch.Generator().manual_seed(1)
    batches = [tokens[torch.randint(0, args.n, (args.batch_size,), generator=g)]
               for _ in range(args.chains * args.draws)]
    floor_seconds(model, batches[:5])  # warm-up
    problem = FunctionalProblem(model, loss_fn, None, None)
    measure_anchor(problem, data, seed=0, noise_samples=HEALTH_NOISE_SAMPLES)  # warm-up
    # Floor and estimate alternate, `repeats` times: a load change on a shared machine (floors timed a
    # minute apart here differed by 25 %) then shows up in both; each estimate is divided by the mean of
    # the floors just before and after it, and the median of those ratios is reported.
    floors, ours, init_passes, ratios = [floor_seconds(model, batches)], [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        measure_anchor(problem, data, seed=0, noise_samples=HEALTH_NOISE_SAMPLES)
        init_passes.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = estimate_llc(model, loss_fn, data, num_chains=args.chains, num_draws=args.draws,
                              step_size=args.step_size, localization=args.localization, nbeta=nbeta,
                              batch_size=args.batch_size, seed=0)
        ours.append(time.perf_counter() - start)
        floors.append(floor_seconds(model, batches))
        ratios.append(ours[-1] / ((floors[-2] + floors[-1]) / 2))
    pick = sorted(range(args.repeats), key=ratios.__getitem__)[args.repeats // 2]  # the median repeat
    floor, ours, init_pass = (floors[pick] + floors[pick + 1]) / 2, ours[pick], init_passes[pick]
    report = {"floor": floor, "floors": floors, "ours": ours, "init_pass": init_pass, "ours_over_floor": ratios[pick],
              "ours_over_floor_repeats": ratios, "vectorized": result.diagnostics["vectorized"],
              "llc_mean": result.mean, "llc_std": result.std, "load_start": os.getloadavg()[0]}
    print(f"floor ({args.chains * args.draws} forward+backward):  {floor:7.2f} s   (all floors, in order: "
          + " / ".join(f"{f:.2f}" for f in floors) + " s)")
    print(f"estimate_llc end to end:              {ours:7.2f} s   = {ours / floor:.2f}x floor (target <= 1.15; "
          f"median of {args.repeats}: " + ", ".join(f"{r:.2f}" for r in ratios) + f"); llc {result.mean:.2f} ± "
          f"{result.std:.2f}; chains {'vmapped' if result.diagnostics['vectorized'] else 'looped'}")
    print(f"  of which the pass at w* (alone):    {init_pass:7.2f} s   = {init_pass / floor:.2f}x floor "
          f"(`measure_anchor`: per-sample losses over n={args.n}, gradient noise scale from "
          f"{HEALTH_NOISE_SAMPLES} samples)")

    if not args.no_anchor:
        python = ensure_anchor_venv(args.anchor_venv)
        settings = {"threads": torch.get_num_threads(), "model_source": attention_only.__file__,
                    "model_config": config.to_diff_dict(), "batch_size": args.batch_size, "chains": args.chains,
                    "draws": args.draws, "step_size": args.step_size, "localization": args.localization,
                    "nbeta": nbeta, "init_loss_batches": ANCHOR_INIT_LOSS_BATCHES}
        anchor = run_anchor(python, model, tokens, settings)
        relative = (ours / floor) / (anchor["seconds"] / anchor["floor"])
        report.update(anchor=anchor, ours_over_anchor=relative, ours_over_anchor_raw=ours / anchor["seconds"])
        print(f"devinterp {ANCHOR_VERSION} llc():                {anchor['seconds']:7.2f} s   = "
              f"{anchor['seconds'] / anchor['floor']:.2f}x its floor ({anchor['floor']:.2f} s in its process); "
              f"llc {anchor['llc_mean']:.2f} ± {anchor['llc_std']:.2f} (its L_n(w*) over "
              f"{anchor['num_init_loss_batches']} batches per chain)")
        print(f"ours / devinterp {ANCHOR_VERSION}:                {relative:7.2f}   (floor-normalised; raw wall "
              f"ratio {ours / anchor['seconds']:.2f}; target <= 0.6)")
    report["load_end"] = os.getloadavg()[0]
    print(f"load average (1 min) at start / end: {report['load_start']:.1f} / {report['load_end']:.1f} "
          f"on {os.cpu_count()} cores (a shared machine inflates the wall times, less so the ratios)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
