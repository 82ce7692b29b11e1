"""The package installs as a wheel and runs from any directory: the configs ship inside it (package
data, found through importlib.resources), and every package is in it.

The wheel is built from a copy of the sources and installed without dependencies into a fresh
virtual environment that sees the test environment's site-packages (torch, transformers, ... :
installing them again would take minutes and test nothing of ours) through a .pth file; the
project's own editable install there is not activated (a .pth on a path added that way is not
processed), which the test checks through `devinterp.__file__`."""
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_RUN = ["steps=20", "checkpoints.log=3", "checkpoints.linear=3", "progress=false", "batch_size=8",
            "model.d_model=16", "model.n_heads=2", "task.vocab_size=16", "task.seq_len=16", "task.eval_size=32",
            "callbacks=[loss]", "device=cpu"]


def run(command: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def build_wheel(tmp_path: Path, env: dict) -> Path:
    source = tmp_path / "source"
    shutil.copytree(REPO / "devinterp", source / "devinterp", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", tmp_path / "dist", source], tmp_path, env)
    [wheel] = (tmp_path / "dist").glob("devinterp-*.whl")
    return wheel


@pytest.mark.slow(seconds=60)
def test_wheel_trains_and_reports_from_a_temporary_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheel = build_wheel(tmp_path, env)
    names = zipfile.ZipFile(wheel).namelist()
    assert "devinterp/configs/train.yaml" in names and "devinterp/configs/callbacks/llc.yaml" in names
    assert "devinterp/training/trainer.py" in names and "devinterp/cli/train.py" in names

    prefix = tmp_path / "venv"
    venv.create(prefix, with_pip=False)
    python, bin_dir = prefix / "bin" / "python", prefix / "bin"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
                .stdout.strip())
    (site / "test_environment_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
        tmp_path, env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    location = run([python, "-c", "import devinterp; print(devinterp.__file__)"], elsewhere, env).stdout.strip()
    assert Path(location).is_relative_to(site), location  # the wheel's files, not the source tree
    run([bin_dir / "devinterp-train", *TINY_RUN, "run_dir=run"], elsewhere, env)
    report = run([bin_dir / "devinterp-report", "run_dir=run"], elsewhere, env)
    assert (elsewhere / "run" / "report" / "index.html").is_file(), report.stdout
    assert len(list((elsewhere / "run" / "checkpoints").glob("step_*"))) >= 4
