"""Reading run directories for the dashboard: discovery, status badges, partial and corrupt files."""
import json
import os
import time

import pandas as pd
import pytest

from devinterp.views.dashboard import data
from devinterp.store import MetricsWriter, read_metrics, write_status
from devinterp.store.metrics import PartCache, metric_parts

NOW = 1_800_000_000.0


def make_run(path, state="training", rows=((0, {"train/loss": 4.0}),)):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("name: t\n")
    writer = MetricsWriter(path)
    for step, metrics in rows:
        writer.add(step, metrics)
        writer.flush()
    if state is not None:
        write_status(path, state, rows[-1][0] if rows else 0)
    return path


def write_json(path, obj):
    path.write_text(json.dumps(obj))


def snapshot(root):
    """(path, size, mtime) of every file below root: to check that reading writes nothing."""
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_find_runs_recurses_but_not_into_runs(tmp_path):
    a = make_run(tmp_path / "induction" / "2026_seed0")
    b = make_run(tmp_path / "induction" / "multirun_x" / "0_seed1")
    (a / "checkpoints" / "step_0000001").mkdir(parents=True)
    (a / "checkpoints" / "step_0000001" / "config.yaml").write_text("x: 1\n")  # inside a run: not a run
    (tmp_path / "notes").mkdir()
    (tmp_path / ".tmp-run").mkdir()
    (tmp_path / ".tmp-run" / "config.yaml").write_text("x: 1\n")
    assert data.find_runs(tmp_path) == [a, b]
    assert data.run_id(tmp_path, b) == "induction/multirun_x/0_seed1"


def test_resolve_run_ids_rejects_unknown_and_escaping_ids(tmp_path):
    a = make_run(tmp_path / "r0")
    (tmp_path.parent / "outside").mkdir(exist_ok=True)
    resolved = data.resolve_run_ids(tmp_path, ["r0", "../outside", "/etc", "nope"])
    assert resolved == [("r0", a)]
    assert data.resolve_run_ids(tmp_path, None) == []


@pytest.mark.parametrize("state,age,badge", [
    ("training", 5, "training"),
    ("training", 5000, "stale"),
    ("finished", 5000, "finished"),
    ("failed", 5, "failed"),
])
def test_status_badges(tmp_path, state, age, badge):
    write_json(tmp_path / "status.json", {"state": state, "step": 7, "updated": NOW - age})
    status = data.load_status(tmp_path, NOW, stale_after=600)
    assert status.badge == badge
    assert status.errors == ()


def test_analysis_status_shows_analysing_and_its_failure(tmp_path):
    write_json(tmp_path / "status.json", {"state": "finished", "step": 100, "updated": NOW - 9999})
    write_json(tmp_path / "analysis_status.json", {"state": "analysing", "step": 40, "updated": NOW - 3})
    status = data.load_status(tmp_path, NOW, 600)
    assert status.badge == "analysing" and "step 40" in status.detail
    write_json(tmp_path / "analysis_status.json", {"state": "analysing", "step": 40, "updated": NOW - 3000})
    assert data.load_status(tmp_path, NOW, 600).badge == "stale"
    write_json(tmp_path / "analysis_status.json", {"state": "failed", "step": 40, "updated": NOW})
    status = data.load_status(tmp_path, NOW, 600)
    assert status.badge == "failed" and status.detail.startswith("analysis failed")


@pytest.mark.parametrize("content,fragment", [
    (None, "status.json is missing"),
    ("", "status.json is unreadable"),
    ('{"state": "train', "status.json is unreadable"),
    ("[1, 2]", "no 'state'"),
    (b"\xff\xfe\x00garbage", "status.json is unreadable"),
    ('{"state": "exploded", "step": 1, "updated": 0}', "unknown state 'exploded'"),
])
def test_bad_status_is_an_error_badge(tmp_path, content, fragment):
    if isinstance(content, bytes):
        (tmp_path / "status.json").write_bytes(content)
    elif content is not None:
        (tmp_path / "status.json").write_text(content)
    status = data.load_status(tmp_path, NOW, 600)
    assert status.badge == "error"
    assert any(fragment in e for e in status.errors), status.errors


def test_load_metrics_matches_the_store_and_uses_the_cache(tmp_path):
    run = make_run(tmp_path / "r", rows=[(0, {"a": 1.0, "b": 2.0}), (5, {"a": 0.5}), (5, {"a": 0.25})])
    cache = PartCache()
    metrics, errors = data.load_metrics(run, cache)
    assert errors == ()
    pd.testing.assert_frame_equal(metrics, read_metrics(run)[["step", "name", "value"]], check_dtype=False)
    assert metrics[(metrics.step == 5) & (metrics.name == "a")]["value"].tolist() == [0.25]  # last write wins
    part = metric_parts(run)[0]
    assert cache.read(part) is cache.read(part)  # parsed once
    # a new part appears on the next read
    MetricsWriter(run).add(9, {"a": 0.1})
    MetricsWriter(run).flush()
    writer = MetricsWriter(run)
    writer.add(10, {"a": 0.05})
    writer.flush()
    metrics, _ = data.load_metrics(run, cache)
    assert metrics[metrics.name == "a"]["step"].tolist() == [0, 5, 10]


def test_corrupt_truncated_and_foreign_parts_are_reported_and_skipped(tmp_path):
    run = make_run(tmp_path / "r", rows=[(0, {"train/loss": 4.0}), (5, {"train/loss": 3.0})])
    good = metric_parts(run)[0]
    directory = run / "metrics.parquet"
    (directory / "part-99999999999999999997-trunc.parquet").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (directory / "part-99999999999999999998-junk.parquet").write_bytes(b"this is not parquet")
    pd.DataFrame({"x": [1]}).to_parquet(directory / "part-99999999999999999999-foreign.parquet")
    (directory / ".tmp-part-00000000000000000000-x.parquet").write_bytes(b"half-written")  # ignored
    (directory / "README").write_text("not a part")  # ignored
    metrics, errors = data.load_metrics(run)
    assert metrics["step"].tolist() == [0, 5]
    assert len(errors) == 3, errors
    assert any("trunc" in e and "not a readable Parquet" in e for e in errors)
    assert any("junk" in e for e in errors)
    assert any("foreign" in e and "missing columns" in e for e in errors)


def test_non_finite_values_become_gaps(tmp_path):
    run = make_run(tmp_path / "r", rows=[(0, {"llc/mean": float("inf")}), (1, {"llc/mean": 3.0})])
    metrics, errors = data.load_metrics(run)
    assert errors == ()
    assert metrics["value"].isna().tolist() == [True, False]


def test_stages(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "stages.csv").write_text("start_step,end_step,type,extra\n300,500,B,x\n0,300,A,y\n500,900,C,z\n")
    stages = data.load_stages(tmp_path)
    assert stages.to_dict("records") == [
        {"start_step": 0, "end_step": 300, "type": "A"},
        {"start_step": 300, "end_step": 500, "type": "B"},
        {"start_step": 500, "end_step": 900, "type": "other"},
    ]
    assert data.load_stages(tmp_path / "nowhere").empty


@pytest.mark.parametrize("content,fragment", [
    ("", "unreadable"),
    ("start,end\n1,2\n", "missing columns"),
    ("start_step,end_step,type\nzero,1,A\n", "non-integer"),
])
def test_bad_stages_raise_run_data_error(tmp_path, content, fragment):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "stages.csv").write_text(content)
    with pytest.raises(data.RunDataError, match=fragment):
        data.load_stages(tmp_path)


def test_load_run_never_raises_for_a_foreign_or_broken_directory(tmp_path):
    foreign = tmp_path / "someone-elses"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("lr: 1\n")
    (foreign / "checkpoints").mkdir()
    (foreign / "checkpoints" / "index.json").write_text("{not json")
    (foreign / "report").mkdir()
    (foreign / "report" / "stages.csv").write_bytes(b"\x00\x01\x02")
    before = snapshot(tmp_path)
    run = data.load_run(tmp_path, foreign, NOW, 600)
    assert run.status.badge == "error"
    assert run.metrics.empty and run.stages.empty and run.checkpoint_steps == ()
    joined = " | ".join(run.errors)
    for fragment in ("status.json is missing", "metrics.parquet/ is missing", "index.json is malformed", "stages.csv"):
        assert fragment in joined, joined
    assert snapshot(tmp_path) == before  # read-only


def test_load_run_of_a_partial_live_run(tmp_path):
    """A run that has just started: config.yaml only, then status and a first part."""
    run_dir = tmp_path / "live"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: t\n")
    run = data.load_run(tmp_path, run_dir, time.time(), 600)
    assert run.metrics.empty and run.status.badge == "error"
    make_run(tmp_path / "tmp", rows=[(0, {"eval/loss": 4.1})])
    os.replace(tmp_path / "tmp" / "metrics.parquet", run_dir / "metrics.parquet")
    write_status(run_dir, "training", 0)
    run = data.load_run(tmp_path, run_dir, time.time(), 600)
    assert run.status.badge == "training" and run.errors == ()
    assert run.metrics["name"].tolist() == ["eval/loss"]


def test_change_signature_tracks_new_parts_and_status(tmp_path):
    run = make_run(tmp_path / "r")
    first = data.change_signature(run)
    assert data.change_signature(run) == first
    writer = MetricsWriter(run)
    writer.add(1, {"train/loss": 3.0})
    writer.flush()
    second = data.change_signature(run)
    assert second != first
    write_json(run / "status.json", {"state": "finished", "step": 1, "updated": 0, "pad": "x" * 10})
    assert data.change_signature(run) != second
