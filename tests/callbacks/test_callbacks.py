from types import SimpleNamespace

import numpy as np
import pytest
import torch

from devinterp.callbacks import (CallbackContext, CallbackRunner, GradsCallback, InductionCallback, LossCallback,
                                 RunData, Schedule, WeightsCallback, build_callbacks, derive_seed)
from devinterp.core.errors import ConfigError
from devinterp.models import AttnOnlyConfig, AttnOnlyTransformer
from devinterp.store import read_metrics
from devinterp.store.results import ResultStore
from devinterp.tasks import InductionTask, ModularAdditionTask


def test_schedule_due_steps():
    ckpts = [0, 1, 2, 4, 8, 16, 32, 64, 100]
    assert Schedule().due_steps(ckpts, 100) == set(ckpts)
    assert Schedule(checkpoint_stride=3).due_steps(ckpts, 100) == {0, 4, 32, 100}
    assert Schedule(at_checkpoints=False, every=50).due_steps(ckpts, 100) == {0, 50, 100}
    assert Schedule(at_checkpoints=False, steps=(3, 7, 500)).due_steps(ckpts, 100) == {3, 7}
    with pytest.raises(ValueError):
        Schedule(checkpoint_stride=0)


def test_derived_seeds_depend_on_step_and_name_only():
    assert derive_seed(0, 10, "llc") == derive_seed(0, 10, "llc")
    assert len({derive_seed(0, 10, "llc"), derive_seed(0, 11, "llc"), derive_seed(0, 10, "hessian"),
                derive_seed(1, 10, "llc")}) == 4


def test_settings_are_validated_and_hashed():
    assert LossCallback(batch_size=8).settings_hash != LossCallback(batch_size=16).settings_hash
    assert LossCallback(batch_size=8).settings_hash == LossCallback(batch_size=8, schedule={"every": 5}).settings_hash
    with pytest.raises(ConfigError, match="callbacks.loss"):
        LossCallback(bogus=1)
    with pytest.raises(ConfigError, match="batch_size"):
        LossCallback(batch_size="many")
    with pytest.raises(ConfigError, match="callbacks.loss"):
        LossCallback(schedule={"evry": 5})


@pytest.mark.parametrize("callback,settings,named", [
    ("LLCCallback", {"step_size": -1}, "callbacks.llc.step_size=-1"),
    ("LLCCallback", {"step_size": 0.0}, "callbacks.llc.step_size=0.0"),
    ("LLCCallback", {"num_chains": 0}, "callbacks.llc.num_chains=0"),
    ("LLCCallback", {"num_draws": -3}, "callbacks.llc.num_draws=-3"),
    ("LLCCallback", {"num_burnin": -1}, "callbacks.llc.num_burnin=-1"),
    ("LLCCallback", {"batch_size": 0}, "callbacks.llc.batch_size=0"),
    ("LLCCallback", {"num_samples": 0}, "callbacks.llc.num_samples=0"),
    ("LLCCallback", {"nbeta": -2.0}, "callbacks.llc.nbeta=-2.0"),
    ("LLCCallback", {"localization": -1.0}, "callbacks.llc.localization=-1.0"),
    ("LLCCallback", {"sampler": "hmc"}, "callbacks.llc.sampler='hmc'"),
    ("LLCCallback", {"refined": "per_neuron"}, "callbacks.llc.refined='per_neuron'"),
    ("LLCCallback", {"schedule": {"checkpoint_stride": 0}}, "callbacks.llc.schedule.checkpoint_stride=0"),
    ("HessianCallback", {"top_k": -1}, "callbacks.hessian.top_k=-1"),
    ("HessianCallback", {"top_k": 0, "bottom_k": 0}, "callbacks.hessian.top_k=0"),
    ("HessianCallback", {"trace_probes": -1}, "callbacks.hessian.trace_probes=-1"),
    ("HessianCallback", {"density_probes": 0}, "callbacks.hessian.density_probes=0"),
    ("HessianCallback", {"lanczos_steps": 2}, "callbacks.hessian.lanczos_steps=2"),
    ("HessianCallback", {"tol": 0.0}, "callbacks.hessian.tol=0.0"),
    ("HessianCallback", {"num_samples": 0}, "callbacks.hessian.num_samples=0"),
    ("HessianCallback", {"batch_size": 0}, "callbacks.hessian.batch_size=0"),
    ("LossCallback", {"batch_size": 0}, "callbacks.loss.batch_size=0"),
    ("InductionCallback", {"num_sequences": 0}, "callbacks.induction.num_sequences=0"),
    ("InductionCallback", {"seq_len": 3}, "callbacks.induction.seq_len=3"),
    ("GradsCallback", {"num_samples": -1}, "callbacks.grads.num_samples=-1"),
    ("WeightsCallback", {"schedule": {"every": 0}}, "callbacks.weights.schedule.every=0"),
])
def test_bad_setting_values_name_the_key(callback, settings, named):
    from devinterp.callbacks.hessian import HessianCallback
    from devinterp.callbacks.llc import LLCCallback

    classes = {c.__name__: c for c in (LLCCallback, HessianCallback, LossCallback, InductionCallback,
                                       GradsCallback, WeightsCallback)}
    with pytest.raises(ConfigError) as error:
        classes[callback](**settings)
    assert str(error.value).startswith(named) and len(str(error.value).splitlines()) == 1, str(error.value)


def test_good_setting_values_pass():
    from devinterp.callbacks.hessian import HessianCallback
    from devinterp.callbacks.llc import LLCCallback

    assert LLCCallback(nbeta=None, localization=0.0, step_size=1e-3, num_burnin=0,
                       refined="per_head").config.refined == "per_head"
    assert HessianCallback(top_k=0, bottom_k=1, trace_probes=0, density=False, density_probes=0).config.top_k == 0


def test_build_callbacks_from_config():
    callbacks = build_callbacks({"loss": {"_target_": "devinterp.callbacks.LossCallback", "batch_size": 8},
                                 "grads": None})
    assert [c.name for c in callbacks] == ["loss"] and callbacks[0].config.batch_size == 8
    with pytest.raises(ConfigError, match="callbacks.loss"):
        build_callbacks({"loss": {"_target_": "devinterp.callbacks.LossCallback", "batch_sz": 8}})


class PerfectPatternsModel(torch.nn.Module):
    """Head 0 attends from i to i - period + 1 (prefix matching), head 1 to i - 1 (previous token)."""

    config = SimpleNamespace(vocab_size=10)

    def forward(self, tokens, output_attentions=False):
        batch, seq = tokens.shape
        period = seq // 2
        pattern = torch.zeros(batch, 2, seq, seq)
        for i in range(seq):
            pattern[:, 0, i, i - period + 1 if i >= period else 0] = 1.0
            pattern[:, 1, i, max(i - 1, 0)] = 1.0
        return SimpleNamespace(logits=torch.zeros(batch, seq, 10), attentions=(pattern,))


def context(model, step=0, seed=0, tokens=None):
    task = InductionTask(vocab_size=10, seq_len=12, seed=0, eval_size=16)
    tokens = task.eval_tokens() if tokens is None else tokens
    return CallbackContext(step, model, task, tokens, task.train_batch(0, 16), torch.device("cpu"), seed)


def test_induction_scores_on_known_attention_patterns():
    scalars = InductionCallback().on_checkpoint(context(PerfectPatternsModel())).scalars
    assert scalars["induction/prefix_matching/L0H0"] == pytest.approx(1.0)
    assert scalars["induction/previous_token/L0H1"] == pytest.approx(1.0)
    assert scalars["induction/prefix_matching/L0H1"] < 0.2
    assert scalars["induction/previous_token/L0H0"] < 0.2


def test_induction_scores_on_the_runs_own_sequences():
    """probe: eval scores the eval sequences: positions whose token occurred before, and where they attend."""
    tokens = torch.arange(6).repeat(4, 2)  # period 6, no token twice within a period
    callback = InductionCallback(probe="eval", num_sequences=4)
    scalars = callback.on_checkpoint(context(PerfectPatternsModel(), tokens=tokens)).scalars
    assert scalars["induction/prefix_matching/L0H0"] == pytest.approx(1.0)
    assert scalars["induction/prefix_matching/L0H1"] == pytest.approx(0.0)
    assert scalars["induction/previous_token/L0H1"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="callbacks.induction.probe='text'"):
        InductionCallback(probe="text")


class CopyingModel(PerfectPatternsModel):
    """Predicts the token 10 positions back with certainty from position 9 on, uniformly before."""

    def forward(self, tokens, output_attentions=False):
        out = super().forward(tokens, output_attentions)
        logits = torch.zeros(*tokens.shape, 10)
        logits[:, 9:].scatter_(2, tokens[:, : tokens.shape[1] - 9].unsqueeze(-1), 50.0)
        return SimpleNamespace(logits=logits, attentions=out.attentions)


def test_induction_icl_score_on_the_runs_own_sequences_compares_windows_of_positions():
    """probe: eval scores in-context learning as the text tasks do, late minus early windows of positions:
    the last eighth is copied (loss 0), the second sixteenth is not (ln 10). The repeated probe's single
    positions (the last one against a quarter of the way in, both copied) would read 0."""
    tokens = (torch.arange(40) % 10).repeat(4, 1)
    scalars = InductionCallback(probe="eval", num_sequences=4).on_checkpoint(
        context(CopyingModel(), tokens=tokens)).scalars
    assert scalars["induction/icl_score"] == pytest.approx(-np.log(10), abs=1e-3)


def test_weights_and_grads_callbacks():
    model = AttnOnlyTransformer(AttnOnlyConfig(vocab_size=10, n_ctx=12, d_model=8, n_heads=2, n_layers=2)).eval()
    initial = {k: v.clone() + 1.0 for k, v in model.state_dict().items()}
    ctx = context(model)
    ctx.initial_state = initial
    weights = WeightsCallback().on_checkpoint(ctx).scalars
    n_params = sum(p.numel() for p in model.parameters())
    assert weights["weights/distance_from_init"] == pytest.approx(n_params**0.5, rel=1e-6)
    groups = [k for k in weights if k.startswith("weights/norm/")]
    assert {"weights/norm/blocks.0", "weights/norm/blocks.1", "weights/norm/embed"}.issubset(groups)
    assert weights["weights/norm"] == pytest.approx(sum(weights[g] ** 2 for g in groups) ** 0.5)

    assert weights["weights/ln_gain"] == pytest.approx(1.0)
    with torch.no_grad():
        model.blocks[1].ln.weight.mul_(-3.0)
    gains = WeightsCallback().on_checkpoint(ctx).scalars
    assert gains["weights/ln_gain/blocks.1.ln"] == pytest.approx(3.0)
    assert gains["weights/ln_gain/blocks.0.ln"] == pytest.approx(1.0)
    assert gains["weights/ln_gain"] == pytest.approx(5.0 / 3.0)  # blocks.0.ln, blocks.1.ln, ln_final

    grads = GradsCallback(num_samples=16).on_checkpoint(ctx).scalars
    tokens = ctx.train_tokens
    loss = model(tokens, labels=tokens).loss
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))]).norm()
    assert grads["grads/norm"] == pytest.approx(float(expected), rel=1e-5)
    chunked = GradsCallback(num_samples=16, batch_size=5).on_checkpoint(ctx).scalars  # 5, 5, 5, 1 sequences
    assert chunked.keys() == grads.keys()
    assert all(chunked[k] == pytest.approx(grads[k], rel=1e-5) for k in grads)
    assert all(p.grad is None for p in model.parameters())


class FailingCallback(LossCallback):
    name = "failing"

    def on_checkpoint(self, ctx):
        if ctx.step == 2:
            raise RuntimeError("deliberate failure")
        return super().on_checkpoint(ctx)


def test_failing_callback_is_isolated_and_recorded(tmp_path):
    model = AttnOnlyTransformer(AttnOnlyConfig(vocab_size=10, n_ctx=12, d_model=8, n_heads=2, n_layers=1))
    task = InductionTask(vocab_size=10, seq_len=12, seed=0, eval_size=8)
    data = RunData(task, task.eval_tokens(), task.train_batch(0, 8), seed=0, run_dir=tmp_path)
    store = ResultStore(tmp_path)
    runner = CallbackRunner([FailingCallback(), WeightsCallback()], data, store, [0, 2, 4], 4)
    rng_before = torch.get_rng_state()
    for step in (0, 2, 4):
        runner.run(step, model, torch.device("cpu"))
    assert torch.equal(rng_before, torch.get_rng_state())  # callbacks do not move the global RNG
    metrics = read_metrics(tmp_path)
    assert sorted(metrics[metrics.callback == "failing"]["step"].unique()) == [0, 4]
    assert sorted(metrics[metrics.callback == "weights"]["step"].unique()) == [0, 2, 4]
    [failure] = store.failures()
    assert failure["step"] == 2 and "deliberate failure" in failure["traceback"]
    # the failure is retried by a later runner (it does not count as done)
    assert [c.name for c in CallbackRunner([FailingCallback()], data, store, [0, 2, 4], 4).pending(2)] == ["failing"]


def test_result_arrays_round_trip(tmp_path):
    store = ResultStore(tmp_path)
    store.write(7, "loss", "abc123", {"eval/loss": 1.5}, {"eval/loss_by_position": np.arange(3.0)})
    assert (7, "loss", "abc123") in store.completed()
    assert np.array_equal(store.load_arrays("loss", "abc123", 7)["eval/loss_by_position"], np.arange(3.0))


class WarningCallback(WeightsCallback):
    name = "warns"

    def on_checkpoint(self, ctx):
        import warnings

        for _ in range(3):  # e.g. a deprecation warned on every call inside the callback
            warnings.warn("chain did not mix", RuntimeWarning)
        return super().on_checkpoint(ctx)


def test_callback_warnings_go_to_the_log_not_the_console(tmp_path, caplog):
    import warnings

    model = AttnOnlyTransformer(AttnOnlyConfig(vocab_size=10, n_ctx=12, d_model=8, n_heads=2, n_layers=1))
    task = InductionTask(vocab_size=10, seq_len=12, seed=0, eval_size=8)
    data = RunData(task, task.eval_tokens(), task.train_batch(0, 8), seed=0, run_dir=tmp_path)
    runner = CallbackRunner([WarningCallback()], data, ResultStore(tmp_path), [0], 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any escaping warning would fail the test
        runner.run(0, model, torch.device("cpu"))
    assert caplog.text.count("chain did not mix") == 1  # logged once per call


def test_callbacks_can_be_removed_from_the_config():
    from devinterp.cli.train import compose_train_config

    assert [c.name for c in build_callbacks(compose_train_config(["~callbacks.grads"]).callbacks)] == \
        ["loss", "induction", "weights"]


@pytest.mark.parametrize("refined,labels", [("per_head", ["L0H0", "L0H1"]), ("per_layer", ["layer0"])])
def test_refined_llc_per_head_and_per_layer(refined, labels):
    from devinterp.callbacks.llc import LLCCallback

    model = AttnOnlyTransformer(AttnOnlyConfig(vocab_size=10, n_ctx=12, d_model=8, n_heads=2, n_layers=1)).eval()
    callback = LLCCallback(num_chains=2, num_draws=5, num_samples=16, batch_size=8, refined=refined)
    output = callback.on_checkpoint(context(model))
    assert output.arrays["llc/loss_trace"].shape == (2, 5)
    for label in labels:
        assert np.isfinite(output.scalars[f"llc/{label}/mean"])


class AnswerOracle(torch.nn.Module):
    """Modular addition: certain of (a + b) mod p at the `=` position, uniform everywhere else."""

    def __init__(self, modulus):
        super().__init__()
        self.modulus = modulus
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens):
        logits = torch.zeros(*tokens.shape, self.modulus + 1)
        answers = (tokens[:, 0] + tokens[:, 1]) % self.modulus
        logits[torch.arange(len(tokens)), 2, answers] = 30.0
        return SimpleNamespace(logits=logits)


def modular_context(model):
    task = ModularAdditionTask(modulus=5, seed=0, train_fraction=0.6)
    return CallbackContext(0, model, task, task.eval_tokens(), task.train_batch(0, 10**6), torch.device("cpu"), 0)


def test_loss_callback_scores_only_the_tokens_the_task_labels():
    output = LossCallback().on_checkpoint(modular_context(AnswerOracle(5)))
    scalars = output.scalars
    assert scalars["eval/loss"] < 1e-6 and scalars["train/fixed_loss"] < 1e-6  # a, b and = are not scored
    assert scalars["eval/accuracy"] == 1.0 and scalars["train/fixed_accuracy"] == 1.0
    by_position = output.arrays["eval/loss_by_position"]
    assert np.isnan(by_position[:2]).all() and by_position[2] < 1e-6
    # every token scored: the mean over all columns
    model = AttnOnlyTransformer(AttnOnlyConfig(vocab_size=10, n_ctx=12, d_model=8, n_heads=2, n_layers=1)).eval()
    ctx = context(model)
    expected = model(ctx.eval_tokens, labels=ctx.eval_tokens).loss.detach()
    assert LossCallback().on_checkpoint(ctx).scalars["eval/loss"] == pytest.approx(float(expected), rel=1e-5)


def test_grads_hessian_and_llc_use_the_tasks_labels(monkeypatch):
    import devinterp.callbacks.hessian
    from devinterp.callbacks.hessian import HessianCallback
    from devinterp.callbacks.llc import LLCCallback

    # A fixed init: at a random one the two losses below (both near log 6) can agree to 0.1 %.
    torch.manual_seed(1)
    model = AttnOnlyTransformer(AttnOnlyConfig(vocab_size=6, n_ctx=4, d_model=8, n_heads=2, n_layers=1)).eval()
    ctx = modular_context(model)
    tokens = ctx.train_tokens
    answer_loss = model(tokens, labels=ctx.task.labels(tokens)).loss
    assert float(answer_loss) != pytest.approx(float(model(tokens, labels=tokens).loss), rel=1e-3)

    expected = torch.cat([g.flatten() for g in torch.autograd.grad(answer_loss, list(model.parameters()))]).norm()
    grads = GradsCallback(num_samples=len(tokens)).on_checkpoint(ctx).scalars
    assert grads["grads/norm"] == pytest.approx(float(expected), rel=1e-5)

    llc = LLCCallback(num_chains=2, num_draws=2, num_samples=len(tokens), batch_size=4).on_checkpoint(ctx)
    assert llc.scalars["llc/init_loss"] == pytest.approx(float(answer_loss), rel=1e-5)

    seen = []

    def spy(model, loss_fn, batches, **kwargs):
        seen.extend(float(loss_fn(model, batch)) * len(batch[0]) for batch in batches)
        raise RuntimeError("spied")

    monkeypatch.setattr(devinterp.callbacks.hessian, "hessian_spectrum", spy)
    with pytest.raises(RuntimeError, match="spied"):
        HessianCallback(num_samples=len(tokens), batch_size=4).on_checkpoint(ctx)
    assert sum(seen) / len(tokens) == pytest.approx(float(answer_loss), rel=1e-5)
