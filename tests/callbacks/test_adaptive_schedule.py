"""`schedule: adaptive`: the same checkpoints chosen live, post hoc and by a follower, and its config errors."""
import json
import shutil

import pytest

from devinterp.analysis import ExecutorConfig, analyze
from devinterp.analysis.executors import ExecutorName
from devinterp.callbacks import LLCCallback, LossCallback
from devinterp.cli.train import compose_train_config, run
from devinterp.core.errors import ConfigError
from devinterp.store import checkpoints
from devinterp.store.adaptive import read_adaptive_record
from devinterp.store.results import ResultStore
from devinterp.views.report import build_report
from tests.helpers import CurveCallback

BASE = ["steps=300", "checkpoints.log=20", "checkpoints.linear=20", "progress=false", "task.vocab_size=16",
        "task.seq_len=16", "task.eval_size=32", "batch_size=8", "model.d_model=16", "model.n_heads=2",
        "train_sample_size=64"]
ADAPTIVE = {"initial": 8, "budget": 0.6}


def measured_steps(run_dir, callback):
    return sorted(ResultStore(run_dir).scalars(callback.name, callback.settings_hash, ["curve/value"]).index)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run with the curve callback adaptive live, and without callbacks."""
    root = tmp_path_factory.mktemp("adaptive")
    live = [*BASE, "+callbacks.curve._target_=tests.helpers.CurveCallback", "+callbacks.curve.schedule.adaptive.initial=8",
            "+callbacks.curve.schedule.adaptive.budget=0.6",
            f"run_dir={root / 'live'}"]
    bare = [*BASE, "callbacks=[]", f"run_dir={root / 'bare'}"]
    return (run(compose_train_config(live), live).run_dir, run(compose_train_config(bare), bare).run_dir)


@pytest.mark.slow(seconds=35)
def test_live_and_posthoc_choose_the_same_checkpoints(runs, tmp_path):
    live, bare = runs
    callback = CurveCallback(schedule={"adaptive": ADAPTIVE})
    record = read_adaptive_record(live, "curve", callback.settings_hash)
    steps = [info.step for info in checkpoints.list_checkpoints(live)]
    assert record.checkpoint_steps == steps
    chosen = sorted(record.measured)
    assert len(record.rounds) > 1 and len(chosen) <= 0.6 * len(steps) < len(steps)
    assert measured_steps(live, callback) == chosen

    posthoc = tmp_path / "posthoc"
    shutil.copytree(bare, posthoc)
    result = analyze(posthoc, [CurveCallback(schedule={"adaptive": ADAPTIVE})], progress=False)
    assert result.steps_analysed == chosen
    assert read_adaptive_record(posthoc, "curve", callback.settings_hash).rounds == record.rounds
    assert analyze(posthoc, [CurveCallback(schedule={"adaptive": ADAPTIVE})], progress=False).steps_analysed == []

    parallel = tmp_path / "parallel"  # rounds fanned out over worker processes
    shutil.copytree(bare, parallel)
    executor = ExecutorConfig(name=ExecutorName.process, num_workers=2)
    assert analyze(parallel, [CurveCallback(schedule={"adaptive": ADAPTIVE})], executor=executor,
                   progress=False).steps_analysed == chosen


def test_the_report_names_the_refined_points(runs, tmp_path):
    live, _ = runs
    run_dir = tmp_path / "run"
    shutil.copytree(live, run_dir)
    store = ResultStore(run_dir)
    callback = CurveCallback(schedule={"adaptive": ADAPTIVE})
    # The report reads the LLC: file the curve's values as the LLC's (same steps, same record).
    for step, row in store.scalars("curve", callback.settings_hash, ["curve/value", "curve/std"]).iterrows():
        store.write(int(step), "llc", "abc", {"llc/mean": row["curve/value"], "llc/std": row["curve/std"]}, {})
    record = json.loads((run_dir / "adaptive" / f"curve-{callback.settings_hash}.json").read_text())
    (run_dir / "adaptive" / "llc-abc.json").write_text(json.dumps(record))
    report = build_report(run_dir)
    measured = len(set().union(*map(set, record["rounds"])))
    note = next(n for n in report.notes if n.startswith("LLC scheduled adaptively"))
    assert f"{measured} of {len(record['checkpoint_steps'])} checkpoints" in note
    assert "A" in set(report.stages["type"]) and "B" in set(report.stages["type"])


def test_schedule_settings_are_checked():
    assert LLCCallback(schedule="adaptive").schedule.adaptive.budget == 0.35
    assert LLCCallback(schedule={"adaptive": {"budget": 0.2}}).schedule.adaptive.budget == 0.2
    with pytest.raises(ConfigError, match=r"callbacks.llc.schedule.adaptive.bugdet=0.2: not a setting"):
        LLCCallback(schedule={"adaptive": {"bugdet": 0.2}})
    with pytest.raises(ConfigError, match=r"callbacks.llc.schedule.adaptive=.*budget=2"):
        LLCCallback(schedule={"adaptive": {"budget": 2}})
    with pytest.raises(ConfigError, match=r"callbacks.loss.schedule='adaptive': this callback has no curve"):
        LossCallback(schedule="adaptive")
