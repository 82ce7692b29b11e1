"""The report compares its primary LLC series with the run's other LLC series and with other seeds:
a B stage missing from one of them is marked fragile; the evidence names the stage's movers."""
import math
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from devinterp.views.report import build_report
from devinterp.cli import report as report_cli
from devinterp.store import MetricsWriter
from devinterp.store.calibration import write_calibration
from tests.views.report.conftest import write_synthetic_llc

CALIBRATION = {"reference_step": 400, "reason": "test", "problems": [],
               "settings": {"step_size": 1e-4, "batch_size": 16, "num_draws": 100, "num_burnin": 0, "nbeta": 50.0}}


def copy_run(trained_run, tmp_path, name="run"):
    run_dir = tmp_path / name
    shutil.copytree(trained_run, run_dir)
    return run_dir


def two_series(trained_run, tmp_path, second_falls: bool):
    """The run's auto-calibrated series (γ=100, A then B) and a newer post-hoc one (γ=30)."""
    run_dir = copy_run(trained_run, tmp_path)
    write_synthetic_llc(run_dir, "primary")
    write_calibration(run_dir, "llc", "primary", {**CALIBRATION, "localization": 100.0})
    write_synthetic_llc(run_dir, "gamma30", fall=second_falls, noise_seed=1)  # written last
    write_calibration(run_dir, "llc", "gamma30", {**CALIBRATION, "localization": 30.0})
    return run_dir


@pytest.mark.parametrize("second_falls", [True, False])
def test_b_stage_robust_or_fragile_across_llc_settings(trained_run, tmp_path, second_falls):
    run_dir = two_series(trained_run, tmp_path, second_falls)
    report = build_report(run_dir, loss="synthetic/loss")
    stages = report.stages
    assert list(stages["type"]) == ["A", "B"]
    assert stages["llc_end"].iloc[-1] < stages["llc_start"].iloc[-1]  # the primary series, not the newest one
    assert list(report.compared) == ["llc-gamma30 (γ=30)"]
    assert stages["robustness"].iloc[0] == "robust"
    b = stages.iloc[1]
    if second_falls:
        assert b["robustness"] == "robust"
        assert "robust across LLC settings: also in llc-gamma30 (γ=30)" in b["evidence"]
    else:
        assert b["robustness"] == "fragile"
        assert "fragile across LLC settings: no B overlapping in llc-gamma30 (γ=30)" in b["evidence"]
    written = pd.read_csv(report.directory / "stages.csv")
    assert list(written["robustness"]) == list(stages["robustness"])
    notes = " ".join(report.notes)
    assert "LLC series llc-primary (γ=100)" in notes and "the primary series (auto-calibrated" in notes
    assert "LLC series llc-gamma30 (γ=30)" in notes and "localization=30" in notes
    page = (report.directory / "index.html").read_text()
    assert "<th>robustness</th>" in page and ("<td>fragile</td>" in page) != second_falls


def test_llc_settings_picks_the_primary_series_and_rejects_unknown_hashes(trained_run, tmp_path, monkeypatch, capsys):
    run_dir = two_series(trained_run, tmp_path, second_falls=False)
    report = build_report(run_dir, loss="synthetic/loss", llc_settings="gamma30", ed_examples=4)
    assert "B" not in set(report.stages["type"]) and list(report.compared) == ["llc-primary (γ=100)"]
    with pytest.raises(ValueError, match="llc_settings='nope'.*available: gamma30, primary"):
        build_report(run_dir, llc_settings="nope")
    monkeypatch.setattr(sys, "argv", ["devinterp-report", f"run_dir={run_dir}", "llc_settings=nope"])
    with pytest.raises(SystemExit) as exit_info:
        report_cli.main()
    assert exit_info.value.code == 2 and "llc_settings='nope'" in capsys.readouterr().err


def test_incomplete_series_is_named_not_compared(trained_run, tmp_path):
    run_dir = copy_run(trained_run, tmp_path)
    steps = write_synthetic_llc(run_dir, "primary")
    writer = MetricsWriter(run_dir, callback="llc", settings="partial")
    for step in steps[:5]:
        writer.add(step, {"llc/mean": 1.0})
    writer.flush()
    report = build_report(run_dir, loss="synthetic/loss", llc_settings="primary", ed_examples=4)
    assert report.compared == {} and not report.stages["evidence"].str.contains("across LLC settings").any()
    assert any(f"not compared, it has values at 5 of the primary's {len(steps)} steps" in n for n in report.notes)


def test_multirun_marks_stages_missing_in_a_seed_fragile(trained_run, tmp_path, monkeypatch, capsys):
    multirun = tmp_path / "multirun"
    for name, falls in (("0_seed0", True), ("1_seed1", True), ("2_seed2", False)):
        write_synthetic_llc(copy_run(trained_run, multirun, name), "s", fall=falls, noise_seed=len(name))
    report = build_report(multirun, loss="synthetic/loss", ed_examples=4)
    assert report.directory == multirun / "report" and list(report.compared) == ["1_seed1", "2_seed2"]
    assert list(report.stages["type"]) == ["A", "B"] and list(report.stages["robustness"]) == ["robust", "fragile"]
    assert "fragile across seeds: no B overlapping in 2_seed2 (found in 1_seed1)" in report.stages["evidence"].iloc[1]
    assert any(n.startswith("Multirun: reporting 0_seed0") for n in report.notes)
    monkeypatch.setattr(sys, "argv", ["devinterp-report", f"run_dir={multirun}", "loss=synthetic/loss",
                                      "ed_examples=4"])
    report_cli.main()
    assert "fragile" in capsys.readouterr().out


def test_evidence_names_the_movers(run_with_llc, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(run_with_llc, run_dir, ignore=shutil.ignore_patterns("report"))
    steps = sorted(pd.read_json(run_dir / "checkpoints" / "index.json")["step"])
    writer = MetricsWriter(run_dir, callback="weights", settings="w")
    for step in steps:  # the LayerNorm gain collapses in the B stage (the LLC falls around step 150)
        gain = 1 - 0.8 / (1 + np.exp(-(np.log1p(step) - math.log(150)) * 4))
        writer.add(step, {"weights/ln_gain": gain, "weights/norm": 3.0 + 1e-3 * step})
    writer.flush()
    stages = build_report(run_dir, loss="synthetic/loss", ed_examples=4).stages
    movers = {kind: evidence.split("movers: ")[-1] for kind, evidence in zip(stages["type"], stages["evidence"])}
    # the B stage holds nearly all of the gain's fall (the run's induction scores move there too)
    assert "weights/ln_gain −9" in movers["B"] and len(movers["B"].split(", ")) == 3
    assert "weights/ln_gain" not in movers["A"]
