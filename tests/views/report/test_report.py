"""The post-hoc report on a real (short) run with a synthetic LLC curve of known shape."""
import sys

import pandas as pd
import pytest

from devinterp.views.report import build_report
from devinterp.cli import report as report_cli
from devinterp.store import MetricsWriter
from devinterp.cli.train import compose_train_config, run


def test_report_files_and_stages(run_with_llc):
    report = build_report(run_with_llc, loss="synthetic/loss")
    out = run_with_llc / "report"
    stages = pd.read_csv(out / "stages.csv")
    assert list(stages["type"]) == ["A", "B"]
    peak = stages[stages["type"] == "A"]["end_step"].iloc[0]
    assert 20 <= peak <= 120  # the synthetic LLC peaks between the rise (~15) and the fall (~150)
    names = {p.name for p in report.figures}
    assert {"loss.png", "llc.png", "icl_score.png", "prefix_matching.png", "essential_dynamics.png"} <= names
    assert all((out / name).stat().st_size > 10_000 for name in names)
    page = (out / "index.html").read_text()
    assert "data:image/png;base64," in page and "<td>A</td>" in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # opens offline


def test_report_states_llc_settings_and_marks_unhealthy_estimates(run_with_llc, tmp_path):
    import shutil

    from devinterp.store.calibration import write_calibration

    run_dir = tmp_path / "run"
    shutil.copytree(run_with_llc, run_dir, ignore=shutil.ignore_patterns("report"))
    write_calibration(run_dir, "llc", "synthetic", {
        "reference_step": 400, "localization": 100.0, "reason": "ε = 1/(8(nβ·h + γ)) with h = 5",
        "problems": ["step size raised to fit burn-in"],
        "settings": {"step_size": 2.5e-5, "batch_size": 16, "num_draws": 100, "num_burnin": 300, "nbeta": 147.7}})
    steps = sorted(pd.read_json(run_dir / "checkpoints" / "index.json")["step"])
    unhealthy = steps[3:6]
    writer = MetricsWriter(run_dir, callback="llc", settings="health")
    for step in steps:
        writer.add(step, {"llc/healthy": float(step not in unhealthy), "llc/rhat": 1.5 if step in unhealthy else 1.0,
                          "llc/precise": float(step != steps[-1])})
    writer.flush()
    report = build_report(run_dir, loss="synthetic/loss")
    notes = " ".join(report.notes)
    assert "step_size=2.5e-05" in notes and "checkpoint step 400" in notes and "raised to fit burn-in" in notes
    assert f"3 of {len(steps)} LLC estimates are biased" in notes and "R̂ > 1.3 at 3" in notes
    assert f"1 of {len(steps)} LLC estimates are imprecise" in notes
    assert all(str(step) in notes for step in unhealthy)
    assert "step_size=2.5e-05" in (run_dir / "report" / "index.html").read_text()
    assert list(report.stages["type"]) == ["A", "B"]


def test_report_without_llc_explains_why(tmp_path):
    overrides = ["steps=20", "checkpoints.log=4", "checkpoints.linear=4", "progress=false", "task.vocab_size=16",
                 "task.seq_len=16", "task.eval_size=8", "batch_size=4", "model.d_model=8", "model.n_heads=2",
                 "callbacks=[loss]", f"run_dir={tmp_path / 'run'}"]
    result = run(compose_train_config(overrides), overrides)
    report = build_report(result.run_dir)
    assert report.stages.empty
    assert any("llc" in note for note in report.notes)
    assert (result.run_dir / "report" / "index.html").is_file()


def test_report_cli(run_with_llc, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["devinterp-report", f"run_dir={run_with_llc}", "loss=synthetic/loss"])
    report_cli.main()
    out = capsys.readouterr().out
    assert "start_step" in out and "index.html" in out
    monkeypatch.setattr(sys, "argv", ["devinterp-report", "run_dir=/no/such/run"])
    with pytest.raises(SystemExit) as exit_info:
        report_cli.main()
    assert exit_info.value.code == 2


def test_report_logs_to_wandb_offline(run_with_llc, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["devinterp-report", f"run_dir={run_with_llc}", "loss=synthetic/loss",
                                      "logger=wandb"])
    report_cli.main()
    run_id = (run_with_llc / "wandb_id.txt").read_text()
    assert any(p.name.endswith(run_id) for p in (run_with_llc / "wandb").glob("offline-run-*"))


def test_stages_of_a_task_without_in_context_scores_raise_no_warning():
    """A text or modular run logs no eval/icl_score: the report leaves that signal out instead of
    warning that it is missing (detect_transitions warns when asked for it by name)."""
    import warnings

    from devinterp.views.report.build import find_stages
    from devinterp.transitions.synthetic import make_scenario

    metrics = make_scenario("A-B-A", llc_noise=0.5, seed=0).long()
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stages = find_stages(metrics, "llc/mean", "eval/loss", "llc/std", notes)
    assert list(stages["type"]) == ["A", "B", "A"] and notes == []


def test_report_draws_the_ngram_scores_by_order(tmp_path):
    from devinterp.views.report.build import REPORT_STAGE_COLUMNS, draw_figures, ngram_scores

    steps = [0, 10, 100, 1000]
    rows = [{"step": step, "name": name, "value": value} for step in steps
            for name, value in (("ngram/kl_10", 1.0), ("ngram/kl_2", 2.0 / (1 + step)), ("ngram/coverage_2", 1.0))]
    metrics = pd.DataFrame(rows)
    assert list(ngram_scores(metrics).items()) == [("ngram/kl_2", "bigram"), ("ngram/kl_10", "10-gram")]
    made = draw_figures(metrics, pd.DataFrame(columns=REPORT_STAGE_COLUMNS), tmp_path, "llc/mean", None, "LLC", {},
                        set())
    assert [p.name for p in made if p is not None] == ["ngram.png"]  # the only figure with data here
