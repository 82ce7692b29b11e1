"""The Hessian-vector-product operator against dense Hessians, finite differences and closed forms."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from devinterp.hessian import hvp_operator
from devinterp.models.attention_only import head_parameter_masks

from .conftest import dense_hessian, flat_loss, lm_loss, make_attn_problem, mse_loss

METHODS = ["jvp", "double_backward"]


def random_vector(dim: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["mlp_problem", "attn_problem"])
def test_hvp_matches_dense_hessian(name, method, request):
    problem = request.getfixturevalue(name)
    h = dense_hessian(problem)
    op = hvp_operator(problem.model, problem.loss_fn, problem.batches, method=method)
    assert op.dim == h.shape[0]
    for seed in range(3):
        v = random_vector(op.dim, seed)
        expected = h @ v
        assert torch.allclose(op.matvec(v), expected, rtol=1e-10, atol=1e-10 * expected.abs().max())
    assert op.num_hvps == 3


def test_dense_reference_matches_finite_differences(attn_problem):
    """Guard for the reference itself: columns of the dense Hessian against central differences
    of the gradient (independent of any second-order autodiff)."""
    f, w0 = flat_loss(attn_problem)
    h = dense_hessian(attn_problem)
    grad = torch.func.grad(f)
    eps = 1e-5
    for j in [0, 30, 44, 100, 133, 159]:  # embedding, position, LayerNorm, QKV, final LayerNorm, unembedding
        e = torch.zeros_like(w0)
        e[j] = eps
        column = (grad(w0 + e) - grad(w0 - e)) / (2 * eps)
        assert torch.allclose(column, h[:, j], atol=1e-6 * h.abs().max())


def test_torch_func_hessian_agrees_without_layernorm():
    """On a model without LayerNorm the vmap-based torch.func.hessian agrees with the operator too.
    (With LayerNorm, torch 2.13's torch.func.hessian is wrong in the LayerNorm-weight rows.)"""
    problem = make_attn_problem(seed=1, layer_norm=False)
    f, w0 = flat_loss(problem)
    h = torch.func.hessian(f)(w0)
    op = hvp_operator(problem.model, problem.loss_fn, problem.batches)
    v = random_vector(op.dim)
    assert torch.allclose(op.matvec(v), h @ v, rtol=1e-10, atol=1e-10 * h.abs().max())


def test_least_squares_closed_form():
    """For L(w) = mean_i (x_i . w + b - y_i)^2 / 2 the Hessian over (w, b) is [X 1]^T [X 1] / N."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    y = torch.randn(50, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(6, 1).double()

    def loss_fn(m, batch):
        return 0.5 * ((m(batch[0]) - batch[1]) ** 2).mean()

    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 50, 16)]  # 16, 16, 16, 2
    op = hvp_operator(model, loss_fn, batches)
    design = torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], dim=1)
    expected = design.T @ design / 50
    assert torch.allclose(op.to_dense(), expected, rtol=1e-12, atol=1e-12)


def test_smaller_last_batch_is_weighted_by_size(mlp_problem):
    """Batches of 10, 10, 7 give the Hessian of the mean over all 27 examples, i.e. the same operator
    as one batch of 27; the unweighted mean of per-batch Hessians differs."""
    whole = tuple(torch.cat(parts) for parts in zip(*mlp_problem.batches))
    split = hvp_operator(mlp_problem.model, mse_loss, mlp_problem.batches)
    single = hvp_operator(mlp_problem.model, mse_loss, [whole])
    v = random_vector(split.dim)
    assert torch.allclose(split.matvec(v), single.matvec(v), rtol=1e-10, atol=1e-12)
    unweighted = sum(hvp_operator(mlp_problem.model, mse_loss, [b]).matvec(v) for b in mlp_problem.batches) / 3
    assert not torch.allclose(unweighted, single.matvec(v), rtol=1e-3)
    assert split.batch_sizes == [10, 10, 7]


def test_params_selector_restricts_to_a_submatrix(attn_problem):
    """A glob selector and a per-head mask give the corresponding principal submatrix of H."""
    h = dense_hessian(attn_problem)
    model = attn_problem.model
    offsets, start = {}, 0
    for name, p in model.named_parameters():
        offsets[name] = torch.arange(start, start + p.numel()).view(p.shape)
        start += p.numel()

    masks = head_parameter_masks(model, layer=0, head=1)
    index = torch.cat([offsets[n][m] for n, m in masks.items()])
    op = hvp_operator(model, lm_loss, attn_problem.batches, params=masks)
    assert op.dim == len(index) == 3 * 2 * 4 + 3 * 2 + 4 * 2
    assert torch.allclose(op.to_dense(), h[index][:, index], rtol=1e-10, atol=1e-12)

    op = hvp_operator(model, lm_loss, attn_problem.batches, params="blocks.0.attn.*")
    index = torch.cat([offsets[n].reshape(-1) for n in offsets if n.startswith("blocks.0.attn.")])
    v = random_vector(op.dim)
    assert torch.allclose(op.matvec(v), h[index][:, index] @ v, rtol=1e-10, atol=1e-12)


def test_model_is_not_modified_and_eval_mode_is_used():
    """Dropout would make the operator random: the model must be in eval mode during the products,
    and its flags, weights and .grad must be as before afterwards."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Dropout(0.5), nn.Tanh(), nn.Linear(5, 1)).double()
    model[3].eval()  # a mixed train/eval state must be restored exactly
    x, y = torch.randn(12, 3, generator=g, dtype=torch.float64), torch.randn(12, 1, generator=g, dtype=torch.float64)
    seen_training = []

    def loss_fn(m, batch):
        seen_training.append(any(mod.training for mod in m.modules()))
        return mse_loss(m, batch)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    batches = [(x, y)]
    for method in METHODS:
        op = hvp_operator(model, loss_fn, batches, method=method)
        v = random_vector(op.dim)
        assert torch.equal(op.matvec(v), op.matvec(v))  # no dropout noise
    assert seen_training and not any(seen_training)
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert batches[0][0] is x and batches[0][1] is y


def test_dtype_conversion_uses_a_copy(mlp_problem):
    """dtype=float32 on a float64 model: products in float32, the caller's model untouched."""
    op = hvp_operator(mlp_problem.model, mse_loss, mlp_problem.batches, dtype=torch.float32)
    assert next(mlp_problem.model.parameters()).dtype == torch.float64
    v = random_vector(op.dim)
    hv = op.matvec(v)
    assert hv.dtype == torch.float32
    expected = hvp_operator(mlp_problem.model, mse_loss, mlp_problem.batches).matvec(v)
    assert torch.allclose(hv.double(), expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


@pytest.mark.parametrize("method", METHODS)
def test_gpt2_attention_subset_matches_dense(method):
    """GPT-2 (eager attention): the operator on one layer's attention weights (tied embeddings
    elsewhere) against the dense Hessian of that subset."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2, attn_implementation="eager")
        model = GPT2LMHeadModel(config).double()
    x = torch.randint(0, 11, (6, 8), generator=torch.Generator().manual_seed(0))
    batches = [(x[:4],), (x[4:],)]
    selected = ["transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias"]
    named = dict(model.named_parameters())
    sizes = [named[n].numel() for n in selected]

    def next_token_loss(logits, tokens):
        # Written out because transformers' own loss casts the logits to float32, which would limit
        # this float64 comparison to ~1e-8.
        return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), tokens[:, 1:].reshape(-1))

    def loss_fn(m, batch):
        return next_token_loss(m(batch[0]).logits, batch[0])

    def f(w):
        params = {n: c.view(named[n].shape) for n, c in zip(selected, w.split(sizes))}
        return sum(
            b[0].shape[0] / 6 * next_token_loss(torch.func.functional_call(model, params, (b[0],)).logits, b[0])
            for b in batches
        )

    w0 = torch.cat([named[n].detach().reshape(-1) for n in selected])
    model.eval()
    h = torch.autograd.functional.hessian(f, w0)
    model.train()
    op = hvp_operator(model, loss_fn, batches, params="transformer.h.0.attn.c_attn.*", method=method)
    assert op.dim == w0.numel()
    v = random_vector(op.dim)
    assert torch.allclose(op.matvec(v), h @ v, rtol=1e-9, atol=1e-9 * h.abs().max())
    assert model.training


@pytest.mark.parametrize("params", [None, "head"])
def test_batched_products_match_single_ones(attn_problem, params):
    """matmat: one vmapped call for several vectors, the same products as matvec, each one counted."""
    selector = head_parameter_masks(attn_problem.model, layer=0, head=1) if params == "head" else None
    op = hvp_operator(attn_problem.model, lm_loss, attn_problem.batches, params=selector)
    vectors = torch.stack([random_vector(op.dim, seed) for seed in range(4)])
    batched = op.matmat(vectors)
    assert op.num_hvps == 4 and not op._vmap_failed
    single = torch.stack([op.matvec(v) for v in vectors])
    assert torch.allclose(batched, single, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        op.matmat(vectors[0])
