"""Helpers for the fault-injection tests: damaged files, directory digests, killable processes.

Killable processes come from one multiprocessing *forkserver* per test session, which imports
torch, transformers, Hydra and devinterp once; each child is then a fork of it (tens of ms
instead of seconds for a fresh interpreter) and is a real process that `kill -9` ends mid-write.
Children run one torch thread (bit-for-bit comparable results, and the machine is shared).
"""
from __future__ import annotations

import hashlib
import importlib
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PRELOAD = ["torch", "transformers", "pytest", "devinterp.cli.train", "devinterp.cli.analyze", "devinterp.analysis.posthoc"]
_context = None


def forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child_setup(log_path: str | None) -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_MODE", "disabled")
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


def cli_main(module: str, argv: list[str], log_path: str | None = None) -> None:
    """Run a command-line entry point (`module.main()`) as if started as `prog argv...`."""
    _child_setup(log_path)
    sys.argv = [module, *argv]
    importlib.import_module(module).main()


def train_run(cfg, overrides: list[str], log_path: str | None = None) -> None:
    """`devinterp.cli.train.run` on an already composed config (what main() does after parsing)."""
    _child_setup(log_path)
    from devinterp.cli.train import run

    run(cfg, overrides)


def posthoc(run_dir: str, callbacks: list, log_path: str | None = None) -> None:
    """`devinterp.analysis.analyze` (the analysis without its command line); exit 1 on failures."""
    _child_setup(log_path)
    from devinterp.analysis import analyze

    result = analyze(Path(run_dir), callbacks, progress=False)
    print(f"analysed {len(result.steps_analysed)} checkpoints, seconds {result.callback_seconds}")
    sys.exit(1 if result.failures else 0)


def exit_code(monkeypatch, main, prog: str, *args: str) -> int:
    """Run a command-line `main()` in this process as `prog args...`; its exit code (0 if none)."""
    monkeypatch.setattr(sys, "argv", [prog, *args])
    try:
        main()
    except SystemExit as e:
        return e.code
    return 0


def start(target, *args):
    process = forkserver().Process(target=target, args=args, daemon=True)
    process.start()
    return process


def kill(process) -> None:
    """`kill -9` and reap."""
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.join()


def wait_until(condition, timeout: float, process=None, interval: float = 0.005) -> bool:
    """Poll `condition()` until true (True), `process` exits or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process is not None and not process.is_alive():
            return bool(condition())
        time.sleep(interval)
    return False


# --------------------------------------------------------------------------------------------- files

def truncate(path: Path) -> bytes:
    """Cut `path` to half its size (as an interrupted copy or a full disk leaves it); returns
    the damaged content, to check later that no reader rewrote it."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    return Path(path).read_bytes()


def digest(root: Path) -> dict[str, tuple]:
    """Every file and directory below `root`: relative path -> (size, sha256, mtime_ns) for files,
    ("dir", mtime_ns) for directories. Equal digests: nothing was created, removed or written."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(directory) / name
            out[str(path.relative_to(root)) + "/"] = ("dir", path.stat().st_mtime_ns)
        for name in files:
            path = Path(directory) / name
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size, hashlib.sha256(path.read_bytes()).hexdigest(),
                                                stat.st_mtime_ns)
    return out


def result_parts(run_dir: Path) -> list[str]:
    """Names of the callback-result part files (one per stored (step, callback, settings))."""
    return sorted(p.name for p in (Path(run_dir) / "metrics.parquet").glob("part-*-cb-*.parquet"))


def result_keys(run_dir: Path) -> list[str]:
    """The (callback, settings, step) key of every result part, with repeats if stored twice."""
    return sorted(name.split("-cb-", 1)[1] for name in result_parts(run_dir))


# --------------------------------------------------------------------------------------------- mounts

class Mount:
    """A small tmpfs at `path` (root only); `skip_reason` says why it could not be mounted."""

    def __init__(self, path: Path, size: str = "8m"):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.skip_reason = None
        if shutil.which("mount") is None:
            self.skip_reason = "no mount command"
            return
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            self.skip_reason = f"cannot mount a tmpfs here (needs root): {done.stderr.strip() or done.returncode}"

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True, capture_output=True)

    def unmount(self) -> None:
        if self.skip_reason is None:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def damage_one_of_each(run_dir: Path) -> dict[str, tuple[Path, bytes]]:
    """Truncate one file of each kind a run holds, at different checkpoints of the small test
    run (steps 0, 1, 4, 10, 20, live callback results): kind -> (path, damaged content)."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints"
    parts = sorted((run_dir / "metrics.parquet").glob("part-*-cb-weights-*-s0000001.parquet"))
    arrays = sorted((run_dir / "arrays").glob("loss-*/step_0000010.npz"))
    files = {
        "weights": ckpt / "step_0000004" / "model.safetensors",
        "config": ckpt / "step_0000010" / "config.json",
        "trainer_state": ckpt / "step_0000020" / "trainer_state.pt",
        "metrics_part": parts[0],
        "arrays": arrays[0],
        "status": run_dir / "status.json",
        "index": ckpt / "index.json",
    }
    return {kind: (path, truncate(path)) for kind, path in files.items()}


def assert_untouched(damaged: dict[str, tuple[Path, bytes]]) -> None:
    for kind, (path, content) in damaged.items():
        assert path.read_bytes() == content, f"the damaged {kind} file {path} was changed"
