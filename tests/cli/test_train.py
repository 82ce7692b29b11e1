"""The devinterp-train command line: config validation, exit codes, multirun, wandb."""
import subprocess
import sys

import pytest
import yaml

from devinterp.cli import train as train_cli


def run_main(monkeypatch, tmp_path, *args):
    """Run `devinterp-train args...` in-process in tmp_path; returns the exit code (0 if none)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["devinterp-train", *args])
    try:
        train_cli.main()
    except SystemExit as e:
        return e.code
    return 0


BAD_CONFIGS = [
    (["foo=1"], "unknown config key 'foo'"),
    (["model.foo=1"], "model.foo"),
    (["steps=abc"], "steps"),
    (["steps=-5"], "steps=-5"),
    (["steps=0"], "steps=0"),
    (["batch_size=0"], "batch_size=0"),
    (["checkpoints.log=500", "steps=100"], "checkpoints.log=500"),
    (["checkpoints.linear=102", "steps=100"], "checkpoints.linear=102"),
    (["model.vocab_size=10"], "model.vocab_size=10"),
    (["model.n_ctx=8"], "model.n_ctx=8"),
    (["model=bogus"], "model/bogus"),
    (["device=gpu"], "device"),
    (["optim.lr=-1"], "optim.lr=-1.0"),
    (["optim.eps=0"], "optim.eps=0.0"),
    (["task=text"], "task.path"),
    (["task=text", "task.path=/does/not/exist.txt"], "task.path='/does/not/exist.txt'"),
    (["resume=true"], "run_dir"),
    (["callbacks=study", "callbacks.llc.step_size=-1"], "callbacks.llc.step_size=-1"),
    (["callbacks.loss.batch_size=0"], "callbacks.loss.batch_size=0"),
    (["task.bigram_concentration=0"], "task.bigram_concentration=0.0"),
    (["task=modular", "task.seq_len=5"], "task.seq_len=5"),
    (["task=modular", "task.train_fraction=1.0"], "task.train_fraction=1.0"),
    (["task=modular", "task.modulus=1"], "task.modulus=1"),
]


@pytest.mark.parametrize("args,names", BAD_CONFIGS)
def test_bad_config_fails_cleanly(monkeypatch, tmp_path, capsys, args, names):
    code = run_main(monkeypatch, tmp_path, *args, f"runs_root={tmp_path / 'runs'}")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("devinterp-train: error:") and names in err
    assert not (tmp_path / "runs").exists()
    assert list(tmp_path.iterdir()) == []


def test_empty_text_file_is_rejected(monkeypatch, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    code = run_main(monkeypatch, tmp_path, "task=text", f"task.path={tmp_path / 'empty.txt'}")
    assert code == 2 and "empty" in capsys.readouterr().err


def test_bad_value_in_one_multirun_job_fails_before_any_job_runs(monkeypatch, tmp_path, capsys):
    code = run_main(monkeypatch, tmp_path, "-m", "steps=100,-1", f"runs_root={tmp_path / 'runs'}")
    assert code == 2 and "steps=-1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_multirun_gives_each_job_its_own_run_directory(monkeypatch, tmp_path, tiny_overrides):
    assert run_main(monkeypatch, tmp_path, "-m", "seed=0,1", *tiny_overrides) == 0
    run_dirs = sorted(p.parent for p in (tmp_path / "runs").rglob("config.yaml"))
    assert [p.name for p in run_dirs] == ["0_seed0", "1_seed1"]
    seeds = [yaml.safe_load((p / "config.yaml").read_text())["seed"] for p in run_dirs]
    assert seeds == [0, 1]


def test_console_script_exit_code(tmp_path):
    done = subprocess.run([sys.executable, "-m", "devinterp.train", "steps=-1"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "devinterp-train: error: steps=-1: must be a positive number of training steps"


def test_wandb_offline_logging(monkeypatch, tmp_path, tiny_overrides):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert run_main(monkeypatch, tmp_path, *tiny_overrides, "logger=wandb", "name=wb") == 0
    run_dir = next((tmp_path / "runs" / "wb").iterdir())
    assert (run_dir / "wandb_id.txt").is_file()
    assert list((run_dir / "wandb").glob("offline-run-*"))


def test_umbrella_command_maps_a_bare_path(monkeypatch, tmp_path, capsys):
    from devinterp.cli import main as cli

    monkeypatch.setattr(sys, "argv", ["devinterp", "report", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert f"run_dir='{tmp_path / 'missing'}'" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["devinterp", "bogus"])
    with pytest.raises(SystemExit):
        cli.main()
    assert "usage: devinterp" in capsys.readouterr().err
