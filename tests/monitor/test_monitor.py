"""Monitor: a plain training loop's run directory, an open-ended schedule, a model that is no language
model measured through its own loss, bad arguments; `import devinterp` exports lazily."""
import subprocess
import sys
import time

import pytest
import torch

import devinterp
from devinterp import Monitor
from devinterp.cli import analyze as analyze_app
from devinterp.core.errors import ConfigError
from devinterp.store import checkpoints, read_metrics
from devinterp.store.run_dir import read_run_config, read_status
from devinterp.training.schedule import open_ended_schedule
from devinterp.views.dashboard import data as dashboard_data
from tests.monitor.tiny import (TINY_STUDY, BagOfTokens, classifier_loss, counting_tokens, tiny_gpt2,
                                train_steps)

LLC_HESSIAN = [item for item in TINY_STUDY if item.startswith(("llc.", "hessian."))]


def test_an_open_ended_run_is_a_normal_run_directory_that_analysis_reads(tmp_path, monkeypatch, capsys):
    model, tokens = tiny_gpt2(), counting_tokens()
    with Monitor(tmp_path / "run", tokens, callbacks=["loss"], progress=False) as monitor:
        monitor.step(0, model)
        for step, loss in train_steps(model, tokens, 30):
            monitor.step(step, model, loss=loss)
    run_dir = monitor.run_dir
    saved = [info.step for info in checkpoints.list_checkpoints(run_dir)]
    assert saved == sorted({*[s for s in open_ended_schedule(30) if s <= 30], 30})
    assert read_run_config(run_dir)["checkpoints"]["steps"] == saved
    assert (read_status(run_dir).state, read_status(run_dir).step) == ("finished", 30)
    metrics = read_metrics(run_dir)
    assert sorted(metrics[metrics.name == "eval/loss"].step) == saved
    assert len(metrics[metrics.name == "train/loss"]) == 30

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["devinterp-analyze", f"run_dir={run_dir}", "callbacks=[weights]", "progress=false"])
    analyze_app.main()
    assert f"analysed {len(saved)} checkpoints" in capsys.readouterr().out
    assert sorted(read_metrics(run_dir).query("name == 'weights/norm'").step) == saved
    # a follower finds the run finished and everything stored; the dashboard reads it
    monkeypatch.setattr("sys.argv", ["devinterp-analyze", f"run_dir={run_dir}", "callbacks=[weights]", "follow=true",
                                     "progress=false"])
    with pytest.raises(SystemExit) as exited:
        analyze_app.main()
    assert exited.value.code == 0
    loaded = dashboard_data.load_run(run_dir.parent, run_dir, time.time(), stale_after=600)
    assert loaded.errors == () and loaded.status.badge == "finished" and list(loaded.checkpoint_steps) == saved


def test_a_classifier_is_measured_through_its_loss_fn_and_induction_says_why_it_is_skipped(tmp_path, capsys):
    tokens = counting_tokens()
    labels = (tokens[:, 0] < 16).long()
    model = BagOfTokens()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    with Monitor(tmp_path / "run", tokens, total_steps=20, loss_fn=classifier_loss, labels=labels, progress=False,
                 callbacks=["loss", "llc", "hessian", "induction", *LLC_HESSIAN]) as monitor:
        monitor.step(0, model)
        for step in range(1, 21):
            loss = classifier_loss(model, (tokens, labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            monitor.step(step, model, loss=loss.item())
    assert "induction: skipped" in capsys.readouterr().err
    metrics = read_metrics(monitor.run_dir)
    saved = [info.step for info in checkpoints.list_checkpoints(monitor.run_dir)]
    for name in ("eval/loss", "llc/mean", "hessian/top_1"):
        assert sorted(metrics[metrics.name == name].step) == saved, name
    assert "induction/icl_score" not in set(metrics.name)
    assert read_run_config(monitor.run_dir)["loss_fn"] == "tests.monitor.tiny.classifier_loss"


def test_bad_arguments_are_one_line_naming_them(tmp_path):
    with pytest.raises(ConfigError, match=r"too few sequences \(3\)"):
        Monitor(tmp_path / "a", counting_tokens(3))
    with pytest.raises(ConfigError, match="total_steps=0"):
        Monitor(tmp_path / "b", counting_tokens(), total_steps=0)
    monitor = Monitor(tmp_path / "c", counting_tokens() + 40, total_steps=5, callbacks=["loss"], progress=False)
    with pytest.raises(ConfigError, match=r"token id 71 is beyond the model's vocabulary \(vocab_size=32\)"):
        monitor.step(0, tiny_gpt2())


def test_import_devinterp_exports_the_entry_points_lazily():
    for name in devinterp.__all__:
        assert callable(getattr(devinterp, name)), name
    assert set(devinterp.__all__) == {"estimate_llc", "calibrate", "hessian_spectrum", "detect_transitions",
                                      "essential_dynamics", "Monitor", "analyze_checkpoints"}
    loaded = subprocess.run([sys.executable, "-c", "import sys, devinterp; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
