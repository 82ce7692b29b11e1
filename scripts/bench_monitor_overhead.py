"""What monitoring costs a Hugging Face Trainer run: the Monitor's time / the training time.

    python scripts/bench_monitor_overhead.py                       # README.md as bytes, 300 steps
    python scripts/bench_monitor_overhead.py --text corpus.txt --steps 1000 --callbacks none default study

A GPT2LMHeadModel (built from a config, nothing downloaded) learns byte-level text from a file (token
ids are the file's bytes, vocabulary 256, cut into rows of --seq-len). The same run (same seed, same
batches) is trained once without devinterp and once per --callbacks with DevinterpCallback (the
checkpoint schedule over --steps: the trainer's default, 60 log-spaced + 40 linearly spaced steps).
"none" saves the checkpoints and measures nothing. Overhead = time with the callback - time without;
the ratio printed is overhead / training time without. The Monitor's own split (seconds per
callback) comes from `monitor.seconds`.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers.utils import logging as hf_logging

from devinterp.integrations.hf import DevinterpCallback


def byte_rows(path: Path, seq_len: int) -> torch.Tensor:
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8).astype(np.int64)
    rows = len(data) // seq_len
    return torch.from_numpy(data[: rows * seq_len].reshape(rows, seq_len).copy())


def train(tokens: torch.Tensor, args: argparse.Namespace, out: Path, callback: DevinterpCallback | None) -> float:
    """Seconds `trainer.train()` took (model built and Trainer set up before the clock starts)."""
    torch.manual_seed(args.seed)
    config = GPT2Config(vocab_size=256, n_positions=args.seq_len, n_embd=args.width, n_layer=args.layers,
                        n_head=args.heads)
    training = TrainingArguments(str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                                 learning_rate=args.lr, logging_steps=50, save_strategy="no", report_to=[],
                                 use_cpu=True, disable_tqdm=True, seed=args.seed)
    trainer = Trainer(model=GPT2LMHeadModel(config), args=training,
                      train_dataset=[{"input_ids": row, "labels": row} for row in tokens],
                      callbacks=[callback] if callback is not None else [])
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints every log entry (disable_tqdm)
        trainer.train()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=Path, default=Path(__file__).parents[1] / "README.md")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--callbacks", nargs="+", default=["none", "default"],
                        help="'none' (checkpoints only), a preset (default, study), or a comma list (loss,llc)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    tokens = byte_rows(args.text, args.seq_len)
    print(f"{args.text}: {len(tokens)} rows of {args.seq_len} bytes; GPT-2 {args.layers} layers x {args.width}, "
          f"{args.steps} steps of batch {args.batch_size}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        base = train(tokens, args, Path(tmp) / "plain", None)
        print(f"training alone: {base:.1f} s ({1000 * base / args.steps:.1f} ms/step)")
        for spec in args.callbacks:
            chosen = [] if spec == "none" else spec.split(",") if "," in spec else spec
            callback = DevinterpCallback(data=tokens, callbacks=chosen, run_dir=Path(tmp) / spec)
            seconds = train(tokens, args, Path(tmp) / f"out-{spec}", callback)
            monitor = callback.monitor
            split = ", ".join(f"{name} {s:.1f} s" for name, s in sorted(monitor.seconds.items()))
            overhead = seconds - base
            print(f"callbacks={spec}: {seconds:.1f} s, overhead {overhead:.1f} s = {overhead / base:.2f} x training; "
                  f"{len(monitor.saved)} checkpoints" + (f"; {split}" if split else ""))


if __name__ == "__main__":
    main()
