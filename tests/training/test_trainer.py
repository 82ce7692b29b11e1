"""Training runs end to end: the induction drop, checkpoints, metrics, exact resume."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from devinterp.store import checkpoints
from devinterp.store.metrics import metric_series, read_metrics
from devinterp.store.run_dir import read_status
from devinterp.cli.train import check_train_config, compose_train_config, run
from devinterp.training.schedule import checkpoint_schedule

# The default model and task, shortened: the induction bump comes at ~300 steps.
INDUCTION_FAST = ["steps=500", "checkpoints.log=0", "checkpoints.linear=6", "task.eval_size=128",
                  "callbacks=[loss]", "progress=false"]


def train(overrides):
    return run(compose_train_config(overrides), overrides)


def final_state(run_dir, step):
    return checkpoints.load(run_dir, step).state_dict()


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow(seconds=30)
def test_short_run_learns_induction(tmp_path):
    result = train([*INDUCTION_FAST, f"runs_root={tmp_path}"])
    metrics = read_metrics(result.run_dir)
    repeated = metric_series(metrics, "eval/loss_repeated")
    random_half = metric_series(metrics, "eval/loss_random")
    assert repeated.iloc[0] > 0.95 * math.log(64)  # starts at chance
    assert repeated.iloc[-1] < 0.3 * math.log(64)  # the repeats become predictable
    assert random_half.iloc[-1] > 0.9 * math.log(64)  # the random block cannot be
    assert read_status(result.run_dir).state == "finished"


def test_run_directory_contents(tmp_path, tiny_overrides):
    result = train(tiny_overrides)
    run_dir = result.run_dir
    for name in ("config.yaml", "overrides.yaml", "status.json", "train.log", "eval_tokens.safetensors"):
        assert (run_dir / name).is_file(), name
    expected_steps = checkpoint_schedule(30, 4, 4)
    infos = checkpoints.list_checkpoints(run_dir)
    assert [i.step for i in infos] == expected_steps
    index = json.loads((run_dir / "checkpoints" / "index.json").read_text())
    assert [entry["step"] for entry in index] == expected_steps
    assert all(entry["bytes"] > 0 for entry in index)
    metrics = read_metrics(run_dir)
    assert sorted(metric_series(metrics, "eval/loss").index) == expected_steps
    assert len(metric_series(metrics, "train/loss")) == 6  # log_every=5 over 30 steps
    model = checkpoints.load(run_dir, expected_steps[-1])
    assert not model.training


def test_exact_resume_after_a_crash_while_writing_a_checkpoint(tmp_path, tiny_overrides, monkeypatch):
    reference = train([*tiny_overrides, f"run_dir={tmp_path / 'reference'}"])
    crash_step = checkpoint_schedule(30, 4, 4)[-3]
    original_save = torch.save

    def crash_mid_checkpoint(obj, path, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == crash_step:
            Path(path).write_bytes(b"partial")
            raise KeyboardInterrupt("simulated kill while writing a checkpoint")
        return original_save(obj, path, *args, **kwargs)

    monkeypatch.setattr("devinterp.store.checkpoints.torch.save", crash_mid_checkpoint)
    run_dir = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        train([*tiny_overrides, f"run_dir={run_dir}"])
    monkeypatch.undo()
    assert read_status(run_dir).state == "failed"
    assert checkpoints.latest_step(run_dir) < crash_step
    # what a SIGKILL mid-write leaves behind (the in-process crash above cleans up after itself)
    stale = run_dir / "checkpoints" / f".tmp-step_{crash_step:07d}-99999"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")

    from devinterp.cli.train import resume_config
    resumed_cfg, merged = resume_config(compose_train_config([*tiny_overrides, "resume=true", f"run_dir={run_dir}"]),
                                        ["resume=true", f"run_dir={run_dir}"])
    resumed = run(resumed_cfg, merged)
    assert resumed.steps_trained < 30
    assert not any(p.name.startswith(".tmp-") for p in (run_dir / "checkpoints").iterdir())
    assert_same_weights(final_state(run_dir, 30), final_state(reference.run_dir, 30))
    a, b = read_metrics(run_dir), read_metrics(reference.run_dir)
    assert a[["step", "name"]].equals(b[["step", "name"]])
    assert torch.allclose(torch.tensor(a["value"].to_numpy()), torch.tensor(b["value"].to_numpy()))


@pytest.mark.slow(seconds=25)
def test_exact_resume_after_sigkill(tmp_path):
    """A real `kill -9` of the training process, then `devinterp-train resume=true`."""
    common = ["steps=300", "checkpoints.log=0", "checkpoints.linear=31", "progress=false",
              "task.vocab_size=16", "task.seq_len=16", "batch_size=8", "model.d_model=16", "model.n_heads=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "devinterp.train", *common]
    reference = tmp_path / "reference"
    subprocess.run([*command, f"run_dir={reference}"], check=True, cwd=tmp_path, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, f"run_dir={killed}"], cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (checkpoints.latest_step(killed) or 0) < 100:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoints.latest_step(killed)
    assert killed_at is not None and killed_at < 300, "the run finished before it could be killed"

    done = subprocess.run([*command[:3], "resume=true", f"run_dir={killed}", "progress=false"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert_same_weights(final_state(killed, 300), final_state(reference, 300))


def test_resume_refuses_to_change_the_stored_config(tmp_path, tiny_overrides):
    from devinterp.core.errors import ConfigError
    from devinterp.cli.train import resume_config

    result = train(tiny_overrides)
    overrides = ["resume=true", f"run_dir={result.run_dir}", "optim.lr=0.5"]
    with pytest.raises(ConfigError, match="optim.lr"):
        resume_config(compose_train_config([*tiny_overrides, *overrides]), overrides)


def test_resume_accepts_a_run_stored_before_configs_had_targets(tmp_path, tiny_overrides):
    """A run whose config.yaml names no `_target_` (written before models and tasks had one) resumes:
    `_target_` says where the building code lives, not what the run computes."""
    import yaml

    from devinterp.cli.train import resume_config

    result = train(tiny_overrides)
    stored = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    for node in (stored["model"], stored["task"], *stored["callbacks"].values()):
        node.pop("_target_")
    (result.run_dir / "config.yaml").write_text(yaml.safe_dump(stored))
    overrides = ["resume=true", f"run_dir={result.run_dir}"]
    cfg, _ = resume_config(compose_train_config([*tiny_overrides, *overrides]), overrides)
    assert cfg.task._target_ == "devinterp.tasks.induction.InductionTask"


def test_failing_training_marks_the_run_failed(tmp_path, tiny_overrides, monkeypatch):
    from devinterp.tasks import InductionTask

    original = InductionTask.train_batch

    def explode_at_step_7(self, step, batch_size):
        if step == 7:
            raise RuntimeError("boom")
        return original(self, step, batch_size)

    monkeypatch.setattr(InductionTask, "train_batch", explode_at_step_7)
    with pytest.raises(RuntimeError, match="boom"):
        train([*tiny_overrides, f"run_dir={tmp_path / 'run'}"])
    assert read_status(tmp_path / "run").state == "failed"
    assert "boom" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.parametrize("experiment", [["experiment=markov_icl", "task.num_states=4"],
                                        ["model=gpt2"]])
def test_other_tasks_and_models_train(tmp_path, tiny_overrides, experiment):
    overrides = [o for o in tiny_overrides if not o.startswith("task.vocab_size")]
    result = train([*overrides, *experiment, "steps=10", "checkpoints.log=2", "checkpoints.linear=2"])
    metrics = read_metrics(result.run_dir)
    assert metric_series(metrics, "eval/loss").notna().all()
    assert checkpoints.latest_step(result.run_dir) == 10
    # reloaded as built: eager attention (the fused kernel has no double backward for the Hessian)
    assert checkpoints.load(result.run_dir, 10).config._attn_implementation == "eager"


@pytest.mark.slow(seconds=15)
def test_lm_stages_preset_trains_and_measures_its_stage_metrics(tmp_path):
    """experiment=lm_stages in miniature: real text, fused attention in training, the preset's callbacks live
    (the LLC left out here: its calibration through the explicit path is tests/models' and tests/callbacks')."""
    small = ["task.source=docs", "task.vocab_size=512", f"task.cache_dir={tmp_path / 'cache'}", "task.seq_len=32",
             "task.eval_size=16", "model.d_model=16", "model.n_heads=2", "batch_size=4", "train_sample_size=32",
             "steps=8", "checkpoints.log=3", "checkpoints.linear=3", "progress=false", "~callbacks.llc",
             "callbacks.induction.num_sequences=8", "callbacks.ngram.num_sequences=8", f"runs_root={tmp_path / 'runs'}"]
    result = train(["experiment=lm_stages", *small])
    metrics = read_metrics(result.run_dir)
    for name in ("eval/icl_score", "ngram/kl_2", "ngram/kl_3", "induction/prefix_matching_max", "train/fixed_loss"):
        assert metric_series(metrics, name).notna().all(), name
    model = checkpoints.load(result.run_dir, 8)
    assert model.config.attn_impl == "sdpa" and model.config.vocab_size == 512


def test_lm_stages_long_is_lm_stages_trained_longer():
    """The long preset shares the model, data and optimizer (so its first 5000 steps are lm_stages's), and
    measures past the LLC's peak."""
    short, long = (compose_train_config([f"experiment={name}"]) for name in ("lm_stages", "lm_stages_long"))
    for key in ("model", "task", "optim", "batch_size", "seed"):
        assert long[key] == short[key], key
    assert long.name == "lm_stages_long" and long.steps > 2 * short.steps
    check_train_config(long)
    steps = checkpoint_schedule(long.steps, long.checkpoints.log, long.checkpoints.linear)
    assert 8 <= math.ceil(len(steps) / long.callbacks.llc.schedule.checkpoint_stride) <= 12  # LLC estimates


def test_text_task_trains_on_a_local_file(tmp_path, tiny_overrides):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 50)
    overrides = [o for o in tiny_overrides if not o.startswith("task.")]
    result = train([*overrides, "task=text", f"task.path={corpus}", "task.seq_len=16", "task.eval_size=8",
                    "steps=10", "checkpoints.log=2", "checkpoints.linear=2"])
    assert checkpoints.load(result.run_dir, 10).config.vocab_size == 256


def test_a_failing_callback_does_not_stop_training(tmp_path, tiny_overrides, monkeypatch):
    from devinterp.callbacks import Callback, WeightsCallback
    from devinterp.store.results import ResultStore

    class AlwaysFails(Callback):
        name = "always_fails"

        def on_checkpoint(self, ctx):
            raise ValueError("deliberately broken")

    monkeypatch.setattr("devinterp.cli.train.build_callbacks", lambda cfg: [AlwaysFails(), WeightsCallback()])
    result = train(tiny_overrides)
    assert read_status(result.run_dir).state == "finished"
    failures = ResultStore(result.run_dir).failures()
    assert sorted(f["step"] for f in failures) == checkpoint_schedule(30, 4, 4)
    assert len(metric_series(read_metrics(result.run_dir), "weights/norm")) == len(failures)


def test_live_runs_call_the_callback_hooks(tmp_path, tiny_overrides, monkeypatch):
    from devinterp.callbacks import WeightsCallback

    calls = []

    class Recording(WeightsCallback):
        name = "recording"

        def on_train_start(self, model):
            calls.append(("start", model.training))

        def on_step(self, step, loss):
            calls.append(("step", step))

        def on_train_end(self):
            calls.append(("end",))

    monkeypatch.setattr("devinterp.cli.train.build_callbacks", lambda cfg: [Recording()])
    train(tiny_overrides)
    assert calls[0][0] == "start" and calls[-1] == ("end",)
    assert [c[1] for c in calls if c[0] == "step"] == list(range(30))


def test_grokking_trains_full_batch_on_the_training_pairs(tmp_path):
    from devinterp.analysis.posthoc import load_run_data

    result = train(["experiment=grokking", "task.modulus=11", "task.train_fraction=0.5", "model.d_model=16",
                    "steps=6", "checkpoints.log=0", "checkpoints.linear=3", "callbacks=[loss]", "progress=false",
                    "log_every=1", f"runs_root={tmp_path}"])
    metrics = read_metrics(result.run_dir)
    # full batch over the training pairs, only the answer scored: the step-0 batch loss is the
    # loss on the run's fixed training sample
    assert metric_series(metrics, "train/loss").loc[0] == pytest.approx(metric_series(metrics, "train/fixed_loss").loc[0],
                                                                          rel=1e-5)
    assert metric_series(metrics, "eval/accuracy").between(0, 1).all()
    data = load_run_data(result.run_dir)
    assert len(data.train_tokens) == 60 and len(data.eval_tokens) == 61  # round(0.5 * 121) pairs train
