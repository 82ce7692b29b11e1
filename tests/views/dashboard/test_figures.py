"""Dashboard figures: valid plotly JSON, the right traces, stages shaded, log-x handled."""
import time

import plotly.graph_objects as go
import pytest

from devinterp.views.dashboard import data
from devinterp.views.dashboard.figures import CHART_IDS, PlotOptions, build_charts
from devinterp.store import MetricsWriter
from devinterp.store.adaptive import AdaptiveRecord, write_adaptive_record


@pytest.fixture
def two_runs(synthetic_run, tmp_path):
    a = synthetic_run("s/seed0", steps=200, n_log=5, n_linear=10)
    b = synthetic_run("s/seed1", steps=200, n_log=5, n_linear=10, seed=1, stages=False)
    return [data.load_run(tmp_path / "runs", p, time.time(), 600) for p in (a, b)]


def traces(fig, metric=None, run=None):
    return [t for t in fig["data"] if (metric is None or t["meta"][1] == metric) and (run is None or t["meta"][0] == run)]


@pytest.mark.parametrize("log_x", [False, True])
def test_every_chart_is_valid_plotly(two_runs, log_x):
    charts = build_charts(two_runs, PlotOptions(log_x=log_x, log_y_loss=log_x))
    assert set(charts) == set(CHART_IDS)
    for name, fig in charts.items():
        go.Figure(fig)  # raises on any property plotly does not know
        assert fig["layout"]["xaxis"]["type"] == ("log" if log_x else "linear"), name
        assert fig["layout"]["xaxis"]["title"]["text"].startswith("step")
        assert fig["layout"]["yaxis"]["title"]["text"], name
    assert charts["loss"]["layout"]["yaxis"]["type"] == ("log" if log_x else "linear")


def test_traces_per_run_and_metric(two_runs):
    charts = build_charts(two_runs, PlotOptions())
    run0 = two_runs[0]
    n_eval = len(run0.checkpoint_steps)
    loss = traces(charts["loss"], "eval/loss", run0.run_id)
    assert len(loss) == 1 and len(loss[0]["x"]) == n_eval
    assert len(traces(charts["loss"], "train/loss")) == 2  # overlaid: one per run
    assert len(traces(charts["llc"], "llc/std")) == 2  # the chain-spread bands
    band = traces(charts["llc"], "llc/std", run0.run_id)[0]
    assert band["fill"] == "toself" and len(band["x"]) == 2 * n_eval
    hessian = charts["hessian"]
    assert [t.get("yaxis") for t in traces(hessian, run=run0.run_id)] == [None, "y2"]
    assert hessian["layout"]["yaxis2"]["overlaying"] == "y"
    assert len(traces(charts["prefix_matching"], run=run0.run_id)) == 8  # 2 layers x 4 heads
    assert all(t["meta"][1].startswith("induction/previous_token/") for t in charts["previous_token"]["data"])


def test_unhealthy_llc_estimates_have_hollow_markers(two_runs):
    run0 = two_runs[0]
    line = traces(build_charts(two_runs, PlotOptions())["llc"], "llc/mean", run0.run_id)[0]
    hollow = [step for step, symbol in zip(line["x"], line["marker"]["symbol"]) if symbol == "circle-open"]
    assert hollow == [step for step in line["x"] if step % 7 == 3] and hollow


def test_points_added_by_adaptive_refinement_are_marked(synthetic_run, tmp_path):
    run_dir = synthetic_run("s/seed0", steps=200, n_log=5, n_linear=10)
    steps = data.load_run(tmp_path / "runs", run_dir, time.time(), 600).checkpoint_steps
    write_adaptive_record(run_dir, "llc", "abc", AdaptiveRecord(list(steps), [list(steps[::3]), [steps[4]]]))
    run = data.load_run(tmp_path / "runs", run_dir, time.time(), 600)
    added = traces(build_charts([run], PlotOptions())["llc"], "adaptive")
    assert len(added) == 1 and added[0]["x"] == [steps[4]] and added[0]["marker"]["symbol"] == "triangle-up"
    assert f"of {len(steps)} checkpoints, 1 from 1 refinement round" in added[0]["name"]
    (run_dir / "adaptive" / "llc-abc.json").write_text("{")
    assert any("adaptive/llc-abc.json is malformed" in e for e in
               data.load_run(tmp_path / "runs", run_dir, time.time(), 600).errors)


def test_stages_are_shaded_and_labelled(two_runs):
    fig = build_charts(two_runs[:1], PlotOptions())["llc"]
    shapes = fig["layout"]["shapes"]
    assert [(s["x0"], s["x1"]) for s in shapes] == [(0, 300), (300, 520), (520, 1100), (1100, 2000)]
    assert shapes[1]["fillcolor"] != shapes[2]["fillcolor"]
    labels = [a["text"] for a in fig["layout"]["annotations"]]
    assert labels == ["<b>other</b>", "<b>A</b>", "<b>B</b>", "<b>other</b>"]
    log_fig = build_charts(two_runs[:1], PlotOptions(log_x=True))["llc"]
    assert log_fig["layout"]["shapes"][0]["x0"] == 1.0  # log axis: starts at step 1, not 0
    assert log_fig["layout"]["annotations"][1]["x"] == pytest.approx(0.5 * (2.477 + 2.716), abs=1e-3)  # log10 centre


def test_empty_selection_and_missing_metrics_show_a_note(two_runs):
    charts = build_charts([], PlotOptions())
    for fig in charts.values():
        go.Figure(fig)
        assert fig["data"] == []
        assert "yet" in fig["layout"]["annotations"][0]["text"]


def test_nan_values_become_null(tmp_path, synthetic_run):
    run_dir = synthetic_run("s/seed0", steps=50, n_log=3, n_linear=3, stages=False)
    writer = MetricsWriter(run_dir)
    writer.add(60, {"llc/mean": float("nan"), "llc/std": 1.0})
    writer.flush()
    run = data.load_run(tmp_path / "runs", run_dir, time.time(), 600)
    mean = traces(build_charts([run], PlotOptions())["llc"], "llc/mean")[0]
    assert mean["x"][-1] == 60 and mean["y"][-1] is None
