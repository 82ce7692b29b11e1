"""Run directories written before a change of the code's layout stay readable: analysis, report and
dashboard over `tests/fixtures/run_b327f2d` (written by commit b327f2d; see its README.md)."""
import shutil
import time
from pathlib import Path

import pytest

from tests.helpers import run_app

FIXTURE = Path(__file__).parent / "fixtures" / "run_b327f2d"
CHECKPOINT_STEPS = (0, 1, 3, 7, 10, 20)


@pytest.fixture
def old_run(tmp_path):
    """A copy of the fixture run (tests never touch the fixture itself)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "runs" / "old"))


def test_analysis_measures_the_old_checkpoints(old_run):
    from devinterp.analysis import analyze
    from devinterp.callbacks import build_callbacks

    grads = {"grads": {"_target_": "devinterp.callbacks.GradsCallback", "num_samples": 8, "batch_size": 8}}
    result = analyze(old_run, build_callbacks(grads), progress=False)
    assert result.failures == 0
    assert tuple(result.steps_analysed) == CHECKPOINT_STEPS


def test_analysis_builds_the_callbacks_stored_in_the_old_config(old_run):
    """The old config's `_target_` paths still name callbacks."""
    import yaml

    from devinterp.callbacks import build_callbacks

    config = yaml.safe_load((old_run / "config.yaml").read_text())
    assert [c.name for c in build_callbacks(config["callbacks"])] == ["loss", "llc"]


def test_report_of_the_old_run(old_run, tmp_path):
    from devinterp.views.report import build_report

    report = build_report(old_run, out_dir=tmp_path / "report")
    assert len(report.stages) == 1 and report.stages["end_step"].tolist() == [20]
    assert not [note for note in report.notes if "nreadable" in note or "not possible" in note]
    assert (tmp_path / "report" / "index.html").is_file()


def test_dashboard_reads_the_old_run(old_run):
    from devinterp.views.dashboard import data

    runs_dir = old_run.parent
    loaded = data.load_run(runs_dir, old_run, time.time(), stale_after=600)
    assert loaded.errors == ()
    assert loaded.status.badge == "finished"
    assert loaded.checkpoint_steps == CHECKPOINT_STEPS
    assert {"train/loss", "eval/loss", "llc/mean", "weights/norm"} <= set(loaded.metrics["name"])
    assert loaded.stages["type"].tolist() == ["other"]


def test_the_apps_read_the_old_run(old_run, tmp_path, monkeypatch, capsys):
    from devinterp.cli import analyze as analyze_app
    from devinterp.cli import report as report_app

    monkeypatch.chdir(tmp_path)
    assert run_app(monkeypatch, analyze_app.main, "devinterp-analyze", f"run_dir={old_run}", "callbacks=[weights]",
                   "progress=false") == 0
    assert "nothing left to do" in capsys.readouterr().out
    assert run_app(monkeypatch, report_app.main, "devinterp-report", f"run_dir={old_run}",
                   f"out_dir={tmp_path / 'report'}") == 0
    assert "report:" in capsys.readouterr().out
