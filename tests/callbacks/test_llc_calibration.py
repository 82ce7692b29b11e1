"""`callbacks.llc.step_size=auto`: one calibration per run, on its stated reference checkpoint, stored in
the run and used by every checkpoint; steps due before the reference are measured once it exists."""
import json
import shutil

import numpy as np
import pytest

from devinterp.store import checkpoints
from devinterp.analysis import analyze
from devinterp.callbacks.llc import LLCCallback, left_initial_plateau
from devinterp.store import read_metrics
from devinterp.store.calibration import CALIBRATION_DIRNAME
from devinterp.cli.train import compose_train_config, run

SMALL_LLC = dict(num_chains=2, num_samples=64, max_batch_size=16, max_steps=200)
SMALL_LLC_OVERRIDES = [f"callbacks.llc.{key}={value}" for key, value in SMALL_LLC.items()] + [
    "callbacks.llc.schedule.checkpoint_stride=2"]


def calibration_record(run_dir):
    files = list((run_dir / CALIBRATION_DIRNAME).glob("llc-*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def llc_series(run_dir):
    frame = read_metrics(run_dir)
    return frame[frame.name == "llc/mean"].set_index("step")["value"]


def assert_every_due_step_uses_the_calibration(run_dir, callback):
    record = calibration_record(run_dir)
    saved = [info.step for info in checkpoints.list_checkpoints(run_dir)]
    due = sorted(callback.schedule.due_steps(saved, saved[-1]))
    series = llc_series(run_dir)
    assert sorted(series.index) == due and np.isfinite(series).all()
    settings = record["settings"]
    assert settings["step_size"] > 0 and 1 <= settings["batch_size"] <= SMALL_LLC["max_batch_size"]
    assert settings["num_burnin"] + settings["num_draws"] <= SMALL_LLC["max_steps"]
    assert record["reason"] and record["table"]
    return record, saved, due


@pytest.mark.slow
def test_live_run_calibrates_once_after_the_initial_plateau(tmp_path, tiny_overrides):
    overrides = [*tiny_overrides, "callbacks=[llc]", *SMALL_LLC_OVERRIDES, f"run_dir={tmp_path / 'run'}"]
    run_dir = run(compose_train_config(overrides), overrides).run_dir
    record, saved, due = assert_every_due_step_uses_the_calibration(
        run_dir, LLCCallback(schedule={"checkpoint_stride": 2}, **SMALL_LLC))

    losses = {info.step: info.train_loss for info in checkpoints.list_checkpoints(run_dir)}
    left = [s for s in due if left_initial_plateau([losses[t] for t in saved if t <= s and losses[t] is not None])]
    assert record["reference_step"] == (left[0] if left else due[-1])
    assert any(s < record["reference_step"] for s in due)  # deferred, then caught up

    # Post hoc over the same run: the stored calibration is reused, so results are reproduced.
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("results", "metrics*"))
    analyze(copy, [LLCCallback(schedule={"checkpoint_stride": 2}, **SMALL_LLC)], progress=False)
    assert calibration_record(copy) == record
    np.testing.assert_allclose(llc_series(copy).sort_index(), llc_series(run_dir).sort_index(), rtol=1e-6)


@pytest.mark.slow
def test_posthoc_calibrates_on_the_last_checkpoint(small_runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(small_runs[1], run_dir)
    callback = LLCCallback(**SMALL_LLC)
    result = analyze(run_dir, [callback], progress=False)
    record, saved, due = assert_every_due_step_uses_the_calibration(run_dir, callback)
    assert record["reference_step"] == due[-1]
    assert result.failures == 0
    assert analyze(run_dir, [LLCCallback(**SMALL_LLC)], progress=False).steps_analysed == []  # all stored


def test_explicit_settings_do_not_calibrate(small_runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(small_runs[1], run_dir)
    analyze(run_dir, [LLCCallback(**SMALL_LLC, step_size=1e-4, num_draws=20)], progress=False)
    assert not (run_dir / CALIBRATION_DIRNAME).exists()
    assert np.isfinite(llc_series(run_dir)).all()


@pytest.mark.parametrize("settings, key", [({"step_size": "fast"}, "step_size"), ({"num_draws": 2.5}, "num_draws"),
                                           ({"max_steps": 50}, "max_steps"), ({"localization": 0.0}, "localization")])
def test_bad_auto_settings_name_the_key(settings, key):
    from devinterp.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"callbacks.llc.{key}="):
        LLCCallback(**settings)


def test_numbers_given_as_strings_are_numbers():
    callback = LLCCallback(step_size="1e-3", num_draws="50")
    assert callback.config.step_size == 1e-3 and callback.config.num_draws == 50 and not callback.config.auto


@pytest.mark.parametrize("reference", ["early", "last"])
def test_live_reference_checkpoint_early_or_last(monkeypatch, tmp_path, reference):
    from devinterp.callbacks import llc
    from devinterp.callbacks.base import CallbackContext

    losses = [7.0, 7.0, 7.0, 6.9, 6.0, 5.0, 4.0, 3.5, 3.2, 3.0]  # leaves its initial plateau at step 5
    infos = [checkpoints.CheckpointInfo(step, f"checkpoints/{step}", loss, 0.0, 0) for step, loss in enumerate(losses)]
    monkeypatch.setattr(llc.checkpoints, "list_checkpoints", lambda run_dir: infos)
    due = tuple(range(len(losses)))

    def live(step):
        return CallbackContext(step, None, None, None, None, "cpu", 0, run_dir=tmp_path, due_steps=due)

    chosen = [s for s in due if llc.is_reference_step(live(s), reference)]
    assert chosen[0] == (5 if reference == "early" else 9)
    with pytest.raises(Exception, match="callbacks.llc.reference="):
        LLCCallback(reference="middle")
