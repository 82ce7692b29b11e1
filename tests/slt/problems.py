"""Models with known learning coefficients, trained to the empirical minimizer of generated data.

All are Gaussian regression models with unit noise, so the per-sample negative log-likelihood is
½‖y − f(x)‖² (up to a constant), which is what `half_squared_error` returns (mean over the batch).
Everything is float64 so loss differences of order λ/nβ are resolved exactly enough.
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import TensorDataset


def half_squared_error(model: torch.nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return 0.5 * ((y - model(x)) ** 2).sum(-1).mean()


class Potential(torch.nn.Module):
    """A 'model' whose loss is a fixed potential K(w) of its weight vector (data only sets n)."""

    def __init__(self, w0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w0, dtype=torch.float64).clone())


class PolynomialModel(torch.nn.Module):
    """y = x · ∏ w_i^{p_i}; at the origin λ = 1 / (2 max p_i)."""

    def __init__(self, powers, w0):
        super().__init__()
        self.powers = tuple(powers)
        self.w = torch.nn.Parameter(torch.as_tensor(w0, dtype=torch.float64).clone())

    def forward(self, x):
        factor = torch.ones((), dtype=self.w.dtype)
        for wi, p in zip(self.w, self.powers):
            factor = factor * wi**p
        return x * factor


class DeepLinearNetwork(torch.nn.Module):
    """f(x) = W_L ... W_1 x, widths (input, hidden..., output), no biases."""

    def __init__(self, widths, init_scale: float, generator: torch.Generator):
        super().__init__()
        self.layers = torch.nn.ModuleList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layer = torch.nn.Linear(fan_in, fan_out, bias=False, dtype=torch.float64)
            with torch.no_grad():
                layer.weight.copy_(init_scale * torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64))
            self.layers.append(layer)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def train_to_minimum(
    model, loss_fn, data, *, gd_steps: int = 0, lr: float = 0.05, max_iter: int = 2000, tol: float = 1e-9
) -> float:
    """Full-batch training on the whole dataset: `gd_steps` of plain gradient descent (which keeps the
    layers of a deep linear network balanced when started small), then L-BFGS until the gradient norm
    is below `tol`. Returns the final gradient norm."""
    batch = data.tensors
    gd = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(gd_steps):
        gd.zero_grad()
        loss_fn(model, batch).backward()
        gd.step()
    optimizer = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=0.0,
        history_size=50, line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(model, batch)
        loss.backward()
        return loss

    for _ in range(5):
        optimizer.step(closure)
    optimizer.zero_grad()
    loss_fn(model, batch).backward()
    grad_norm = math.sqrt(sum(float((p.grad**2).sum()) for p in model.parameters()))
    optimizer.zero_grad()
    return grad_norm


def polynomial_problem(powers, n: int, seed: int):
    """Data y = 0·x + N(0, 1) (true weights at the origin), model trained from a small random init."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    y = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    data = TensorDataset(x, y)
    w0 = 0.1 * torch.randn(len(powers), generator=gen, dtype=torch.float64)
    model = PolynomialModel(powers, w0)
    grad_norm = train_to_minimum(model, half_squared_error, data)
    return model, data, grad_norm


def dln_problem(widths, rank: int, n: int, seed: int, init_scale: float = 0.1, gd_steps: int = 2000):
    """Deep linear network data: x ~ N(0, I), y = W0 x + N(0, I) with W0 of the given rank
    (singular values 1..2); the model is trained from a small init to the empirical minimizer
    (gradient descent, then L-BFGS polish)."""
    gen = torch.Generator().manual_seed(seed)
    d_in, d_out = widths[0], widths[-1]
    left = torch.linalg.qr(torch.randn(d_out, d_out, generator=gen, dtype=torch.float64))[0][:, :rank]
    right = torch.linalg.qr(torch.randn(d_in, d_in, generator=gen, dtype=torch.float64))[0][:, :rank]
    singular = torch.linspace(1.0, 2.0, rank, dtype=torch.float64) if rank > 1 else torch.ones(rank, dtype=torch.float64)
    w_true = left @ torch.diag(singular) @ right.T
    x = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    y = x @ w_true.T + torch.randn(n, d_out, generator=gen, dtype=torch.float64)
    data = TensorDataset(x, y)
    model = DeepLinearNetwork(widths, init_scale, gen)
    grad_norm = train_to_minimum(model, half_squared_error, data, gd_steps=gd_steps)
    return model, data, grad_norm
