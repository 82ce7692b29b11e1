"""devinterp-analyze checkpoints=DIR data=FILE: checkpoint-<step>/ folders written elsewhere, analysed and
reported from the command line; bad input gets one line naming the file, and exit 2."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from devinterp.cli import analyze as analyze_app
from devinterp.cli import report as report_app
from devinterp.store import checkpoints, read_metrics
from tests.helpers import run_app
from tests.monitor.tiny import cli_overrides, counting_tokens, save_checkpoint_folders

STEPS = [0, 2, 5, 10, 20, 30]


class RunsCode:
    """A pickle that would create `path` if anything unpickled it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """(folder of checkpoint-<step>/ folders, token file): read only; tests copy before changing."""
    root = tmp_path_factory.mktemp("foreign")
    save_checkpoint_folders(root / "out", STEPS)
    np.save(root / "tokens.npy", counting_tokens().numpy())
    return root / "out", root / "tokens.npy"


def test_checkpoint_folders_are_analysed_and_reported_and_their_pickles_never_run(foreign, tmp_path, monkeypatch,
                                                                                  capsys):
    out = tmp_path / "out"
    shutil.copytree(foreign[0], out)
    # what a Trainer leaves beside the weights: pickles that are never opened, and its logged losses
    marker = tmp_path / "pwned"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (out / "checkpoint-30" / name).write_bytes(pickle.dumps(RunsCode(marker)))
    (out / "checkpoint-30" / "trainer_state.json").write_text(json.dumps(
        {"log_history": [{"step": 10, "loss": 2.0}, {"step": 30, "loss": 1.0}]}))
    monkeypatch.chdir(tmp_path)

    argv = ["devinterp-analyze", f"checkpoints={out}", f"data={foreign[1]}", "progress=false", *cli_overrides()]
    assert run_app(monkeypatch, analyze_app.main, *argv) == 0
    assert f"imported {len(STEPS)} checkpoints" in capsys.readouterr().out
    run_dir = out / "devinterp"
    assert [info.step for info in checkpoints.list_checkpoints(run_dir)] == STEPS
    metrics = read_metrics(run_dir)
    for name in ("eval/loss", "llc/mean", "hessian/top_1"):
        assert sorted(metrics[metrics.name == name].step) == STEPS, name
    assert sorted(metrics[metrics.name == "train/loss"].step) == [10, 30]
    assert not marker.exists()

    assert run_app(monkeypatch, report_app.main, "devinterp-report", f"run_dir={run_dir}") == 0
    stages = (run_dir / "report" / "stages.csv").read_text().splitlines()
    assert len(stages) >= 2 and stages[1].split(",")[2] in ("A", "B")

    # again: nothing new to import, nothing left to measure
    assert run_app(monkeypatch, analyze_app.main, *argv) == 0
    printed = capsys.readouterr().out
    assert "imported 0 checkpoints" in printed and "nothing left to do" in printed


def bad_inputs(foreign, tmp_path):
    """(name, checkpoints dir, data file, words the error line must contain)."""
    source, tokens = foreign
    cases = []

    def copy(name):
        target = tmp_path / name
        shutil.copytree(source, target)
        return target

    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append(("none found", empty, tokens, [str(empty), "no checkpoints found"]))
    unnamed = copy("unnamed")
    shutil.copytree(unnamed / "checkpoint-30", unnamed / "final")
    cases.append(("no step", unnamed, tokens, [str(unnamed / "final"), "cannot read a training step"]))
    unknown = copy("unknown")
    config = unknown / "checkpoint-30" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "not_a_model"}))
    cases.append(("unknown model type", unknown, tokens, [str(config), "not a model transformers defines"]))
    broken = copy("broken")
    config = broken / "checkpoint-10" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "n_head": 3}))  # 16 is not a multiple of 3
    cases.append(("config that cannot build", broken, tokens, [str(broken / "checkpoint-10"), "cannot build"]))
    pickled = copy("pickled")
    weights = pickled / "checkpoint-5" / "model.safetensors"
    weights.unlink()
    torch.save({"x": RunsCode(tmp_path / "pwned")}, pickled / "checkpoint-5" / "pytorch_model.bin")
    cases.append(("a .bin that would run code", pickled, tokens,
                  [str(pickled / "checkpoint-5" / "pytorch_model.bin"), "weights_only"]))
    big = tmp_path / "big.npy"
    np.save(big, np.full((300, 16), 99))
    cases.append(("beyond the vocabulary", source, big, [str(big), "token id 99", "vocab_size=32"]))
    few = tmp_path / "few.npy"
    np.save(few, counting_tokens(3).numpy())
    cases.append(("too few sequences", source, few, [str(few), "too few sequences (3)"]))
    return cases


def test_bad_input_says_what_is_wrong_with_which_file_in_one_line_and_exits_2(foreign, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, source, data, words in bad_inputs(foreign, tmp_path):
        code = run_app(monkeypatch, analyze_app.main, "devinterp-analyze", f"checkpoints={source}", f"data={data}",
                       f"run_dir={tmp_path / 'runs' / name.replace(' ', '_')}", "progress=false", "callbacks=[loss]")
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, err)
        assert len(err.splitlines()) == 1 and all(word in err for word in words), (name, err)
    assert not (tmp_path / "pwned").exists()
    assert not list(tmp_path.glob("runs/*"))  # no run directory left behind


def test_a_damaged_run_config_is_one_line_for_analyze_and_report(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("seed: 0\nsteps: [unclosed\n")
    monkeypatch.chdir(tmp_path)
    for main, prog in ((analyze_app.main, "devinterp-analyze"), (report_app.main, "devinterp-report")):
        assert run_app(monkeypatch, main, prog, f"run_dir={run_dir}") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(run_dir / "config.yaml") in err, err
