"""Honest progress in the runner, the analysis bar and the training bar: what is measured, and time left
from the measured callback costs (devinterp.core.progress)."""
import pytest

from devinterp.analysis.progress import AnalysisProgress
from devinterp.callbacks import CallbackRunner, RunData, WeightsCallback
from devinterp.callbacks.base import Deferred
from devinterp.store.results import ResultStore
from devinterp.tasks.induction import InductionTask
from devinterp.cli.train import compose_train_config, run

from .test_callbacks import context


def test_runner_announces_each_callback_and_counts_what_is_left(tmp_path):
    ctx = context(None)
    task = InductionTask(vocab_size=10, seq_len=12, seed=0, eval_size=16)
    data = RunData(task, ctx.eval_tokens, ctx.train_tokens, seed=0)
    heard = []
    runner = CallbackRunner([WeightsCallback(schedule={"every": 5})], data, ResultStore(tmp_path), [0, 10], 20,
                            announce=lambda name, step: heard.append((name, step)))
    assert runner.remaining_calls(-1) == {"weights": 5}  # 0, 5, 10, 15, 20
    from devinterp.models.attention_only import AttnOnlyConfig, AttnOnlyTransformer

    model = AttnOnlyTransformer(AttnOnlyConfig(vocab_size=10, n_ctx=12, d_model=8, n_heads=2, n_layers=1))
    runner.run(0, model, ctx.device)
    runner.run(5, model, ctx.device)
    assert heard == [("weights", 0), ("weights", 5)]
    assert runner.remaining_calls(5) == {"weights": 3}
    assert runner.costs.counts["weights"] == 2 and runner.seconds["weights"] > 0


class WeightsAfterStep10(WeightsCallback):
    """Defers until it has measured step 10, as the LLC does until its calibration checkpoint."""

    name = "late_weights"
    ready = False

    def on_checkpoint(self, ctx):
        self.ready = self.ready or ctx.step == 10
        if not self.ready:
            raise Deferred("waits for step 10")
        return super().on_checkpoint(ctx)


def test_deferred_calls_count_as_remaining_until_caught_up(tmp_path):
    ctx = context(None)
    task = InductionTask(vocab_size=10, seq_len=12, seed=0, eval_size=16)
    runner = CallbackRunner([WeightsAfterStep10()], RunData(task, ctx.eval_tokens, ctx.train_tokens, seed=0),
                            ResultStore(tmp_path), [0, 10, 20], 20)
    from devinterp.models.attention_only import AttnOnlyConfig, AttnOnlyTransformer

    model = AttnOnlyTransformer(AttnOnlyConfig(vocab_size=10, n_ctx=12, d_model=8, n_heads=2, n_layers=1))
    runner.run(0, model, ctx.device)
    assert runner.remaining_calls(0) == {"late_weights": 3}  # 0 (deferred), 10, 20
    runner.run(10, model, ctx.device)
    assert runner.remaining_calls(10) == {"late_weights": 2}  # 0 waits for catch_up, and 20
    runner.catch_up(10, {0}, lambda step: model, ctx.device)
    assert runner.remaining_calls(10) == {"late_weights": 1}


class FakeBar:
    def __init__(self):
        self.description, self.postfix, self.n = "", "", 0

    def set_description_str(self, text, refresh=True):
        self.description = text

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def update(self, n):
        self.n += n


class Job:
    def __init__(self, step, names):
        self.step, self.callbacks = step, [type("C", (), {"name": n})() for n in names]


def test_analysis_progress_divides_the_remaining_cost_by_the_workers():
    bar = FakeBar()
    tracker = AnalysisProgress(bar, [Job(0, ["llc", "loss"]), Job(3, ["loss"]), Job(6, ["llc", "loss"])], workers=2)
    assert bar.postfix == "eta ≥ 00:00"  # nothing measured yet
    tracker.measuring("llc", 0)
    assert bar.description == "llc @ step 0"
    tracker.done(0, {"llc": 10.0, "loss": 2.0})
    assert bar.n == 1 and bar.postfix == "eta 00:07"  # (llc 10 + 2 x loss 2) / 2 workers


def test_training_bar_names_the_callback_and_counts_its_cost(tmp_path, tiny_overrides, capsys):
    overrides = [o for o in tiny_overrides if o != "progress=false"] + ["callbacks=[weights]"]
    run(compose_train_config(overrides), overrides)
    err = capsys.readouterr().err
    assert "weights @ step 0" in err and "steps/s" in err and "eta" in err
