"""Small float64 models, uneven batches and an independent dense-Hessian reference."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
from torch import nn

from devinterp.models.attention_only import AttnOnlyConfig, AttnOnlyTransformer
from tests.helpers import one_torch_thread


@pytest.fixture(autouse=True)
def single_thread():
    """The test models are tiny: one thread avoids oversubscribing the shared CPU (restored after)."""
    with one_torch_thread():
        yield


@dataclass
class Problem:
    model: nn.Module
    loss_fn: Callable[[nn.Module, Any], torch.Tensor]
    batches: list[Any]
    # the same loss written with torch.func.functional_call, for the independent reference
    functional_loss: Callable[[dict[str, torch.Tensor], Any], torch.Tensor]


def mse_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor]) -> torch.Tensor:
    return model(batch[0], labels=batch[0]).loss


def make_mlp_problem(seed: int = 0) -> Problem:
    """tanh MLP 4 -> 10 -> 3 (83 parameters), MSE on 27 examples in batches of 10, 10, 7."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 10), nn.Tanh(), nn.Linear(10, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(27, 4, generator=g, dtype=torch.float64)
    y = torch.randn(27, 3, generator=g, dtype=torch.float64)

    def functional_loss(params, batch):
        return ((torch.func.functional_call(model, params, (batch[0],)) - batch[1]) ** 2).mean()

    return Problem(model, mse_loss, [(x[i : i + 10], y[i : i + 10]) for i in range(0, 27, 10)], functional_loss)


def make_attn_problem(seed: int = 0, layer_norm: bool = True) -> Problem:
    """Attention-only transformer with 160 parameters (128 without LayerNorm), 20 sequences of
    6 tokens in batches of 8, 8, 4."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        config = AttnOnlyConfig(vocab_size=5, n_ctx=6, d_model=4, n_heads=2, n_layers=1, layer_norm=layer_norm, init_std=0.5)
        model = AttnOnlyTransformer(config).double()
    x = torch.randint(0, 5, (20, 6), generator=g)

    def functional_loss(params, batch):
        return torch.func.functional_call(model, params, (batch[0],), {"labels": batch[0]}).loss

    return Problem(model, lm_loss, [(c,) for c in x.split(8)], functional_loss)


@pytest.fixture(scope="module")
def mlp_problem() -> Problem:
    return make_mlp_problem()


@pytest.fixture(scope="module")
def attn_problem() -> Problem:
    return make_attn_problem()


def flat_loss(problem: Problem) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor]:
    """(f, w0): the batch-size-weighted mean loss as a function of all parameters flattened, written
    independently of devinterp.hessian (weights: number of rows of each batch's first tensor)."""
    named = {n: p.detach() for n, p in problem.model.named_parameters()}
    shapes = [p.shape for p in named.values()]
    sizes = [p.numel() for p in named.values()]
    total = sum(b[0].shape[0] for b in problem.batches)

    def f(w: torch.Tensor) -> torch.Tensor:
        params = {n: c.view(s) for n, c, s in zip(named, w.split(sizes), shapes)}
        return sum(b[0].shape[0] / total * problem.functional_loss(params, b) for b in problem.batches)

    return f, torch.cat([p.reshape(-1) for p in named.values()])


def dense_hessian(problem: Problem) -> torch.Tensor:
    """Reference Hessian over all parameters, by `torch.autograd.functional.hessian` (one double
    backward per row). torch.func.hessian (vmap-based) is not used here: in torch 2.13 it returns wrong
    LayerNorm-weight rows when the LayerNorm input is differentiated too (see test_hvp.py)."""
    f, w0 = flat_loss(problem)
    h = torch.autograd.functional.hessian(f, w0)
    return (h + h.T) / 2
