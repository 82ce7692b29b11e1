import torch
from torch.func import functional_call, grad, jvp, vmap
from transformers import AutoModelForCausalLM

from devinterp.models import AttnOnlyConfig, AttnOnlyTransformer, count_parameters, head_parameter_masks
from devinterp.core.params import select_parameters


def tiny_model(**kw):
    torch.manual_seed(0)
    return AttnOnlyTransformer(AttnOnlyConfig(vocab_size=11, n_ctx=8, d_model=8, n_heads=2, n_layers=2, **kw))


def test_default_model_size():
    assert 40_000 < count_parameters(AttnOnlyTransformer(AttnOnlyConfig())) < 60_000


def test_save_and_load_through_transformers(tmp_path):
    model = tiny_model().eval()
    tokens = torch.randint(0, 11, (3, 8))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, AttnOnlyTransformer)
    assert torch.equal(loaded(tokens).logits, model(tokens).logits)


def test_causal_and_loss_convention():
    model = tiny_model().eval()
    tokens = torch.randint(0, 11, (2, 8))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    assert torch.allclose(model(tokens).logits[:, :5], model(changed).logits[:, :5])
    logits = model(tokens).logits
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), tokens[:, 1:].reshape(-1))
    assert torch.allclose(model(tokens, labels=tokens).loss, expected)


def test_attention_patterns_are_causal_distributions():
    model = tiny_model().eval()
    out = model(torch.randint(0, 11, (2, 8)), output_attentions=True)
    assert len(out.attentions) == 2
    pattern = out.attentions[0]
    assert pattern.shape == (2, 2, 8, 8)
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 2, 8))
    assert torch.all(pattern.triu(1) == 0)


def test_sdpa_matches_explicit():
    explicit, fused = tiny_model(), tiny_model(attn_impl="sdpa")
    tokens = torch.randint(0, 11, (2, 8))
    assert torch.allclose(explicit(tokens).logits, fused(tokens).logits, atol=1e-5)


def test_explicit_attention_supports_torch_func_transforms():
    model = tiny_model().double()
    tokens = torch.randint(0, 11, (2, 8))
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p):
        return functional_call(model, p, (tokens,), {"labels": tokens}).loss

    tangent = {k: torch.randn_like(v) for k, v in params.items()}
    _, hvp = jvp(grad(loss), (params,), (tangent,))  # forward-over-reverse
    assert all(torch.isfinite(v).all() for v in hvp.values())
    stacked = {k: torch.stack([v, v + 0.01]) for k, v in params.items()}
    grads = vmap(grad(loss))(stacked)
    assert grads["embed.weight"].shape == (2, 11, 8)


def test_head_masks_select_one_heads_slices():
    model = tiny_model()
    masks = select_parameters(model, head_parameter_masks(model, layer=1, head=0))
    d_head = 4
    assert masks["blocks.1.attn.qkv.weight"].sum() == 3 * d_head * 8
    assert masks["blocks.1.attn.out.weight"][:, :d_head].all()
    assert not masks["blocks.1.attn.out.weight"][:, d_head:].any()


def test_a_fused_attention_model_measures_with_explicit_attention():
    """Training mode uses the fused kernel; eval mode (every measurement) the explicit path, which has double
    backward: a model trained with attn_impl=sdpa still gets Hessian-vector products and the LLC calibration."""
    model = tiny_model(attn_impl="sdpa")
    tokens = torch.randint(0, 11, (2, 8))
    params = list(model.parameters())
    grads = torch.autograd.grad(model.train()(tokens, labels=tokens).loss, params, create_graph=True)
    try:
        torch.autograd.grad(sum((g * g).sum() for g in grads), params)
        fused_has_double_backward = True
    except RuntimeError:
        fused_has_double_backward = False
    grads = torch.autograd.grad(model.eval()(tokens, labels=tokens).loss, params, create_graph=True)
    torch.autograd.grad(sum((g * g).sum() for g in grads), params)  # must not raise
    assert not fused_has_double_backward  # else this test no longer tells the paths apart


def test_a_fused_attention_model_uses_the_kernel_only_where_nothing_differentiates_it(monkeypatch):
    """attn_impl=sdpa: the fused kernel in training steps and in inference mode (the loss callback), the
    explicit path in eval mode otherwise (SGLD chains, vmapped losses at w*, HVPs), with the same logits."""
    import devinterp.models.attention_only as attention_only

    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(attention_only.F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or fused(*a, **k))
    model, tokens = tiny_model(attn_impl="sdpa"), torch.randint(0, 11, (2, 8))

    def fused_calls(run) -> int:
        calls.clear()
        run()
        return len(calls)

    assert fused_calls(lambda: model.train()(tokens)) == 2  # one per layer
    model.eval()
    with torch.inference_mode():
        assert fused_calls(lambda: model(tokens)) == 2
        inference_logits = model(tokens).logits
    with torch.no_grad():
        assert fused_calls(lambda: model(tokens)) == 0
        assert torch.allclose(model(tokens).logits, inference_logits, atol=1e-5)
    params = {k: v.detach() for k, v in model.named_parameters()}
    assert fused_calls(lambda: vmap(lambda x: functional_call(model, params, (x[None],)).logits)(tokens)) == 0
