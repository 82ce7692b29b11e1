"""A seeded generator of LLC ground-truth cases: deep linear networks and reduced-rank regressions.

Each case is a regression y = W0 x + N(0, I) with x ~ N(0, I) and a true matrix W0 of a given rank
(nonzero singular values spread over [1, 2]), fitted by a deep linear network f(x) = W_L ... W_1 x
(L = 2 is reduced-rank regression) to the empirical minimizer of its n samples, gradient norm below
1e-5. The true learning coefficient comes from Aoyagi's formula (`devinterp.slt.theory`).

`generate_cases(count, seed)` draws the family: depth L in 2..5 (cycled, so every depth appears),
every width uniform in 2..12, the true rank uniform in 0..min(widths), n log-uniform in [1e3, 1e5].
Nothing in a case is chosen for the estimator: the point is to test its default path on cases no
one tuned for.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import TensorDataset

from devinterp.slt.theory import learning_coefficient_dln

from tests.slt.problems import DeepLinearNetwork, half_squared_error, train_to_minimum

MAX_GRAD_NORM = 1e-5


@dataclass(frozen=True)
class GroundTruthCase:
    widths: tuple[int, ...]  # (input, hidden..., output)
    rank: int  # rank of the true matrix W0
    n: int  # number of samples
    seed: int  # seeds data, true matrix and initialisation

    @property
    def true_llc(self) -> float:
        return learning_coefficient_dln(self.widths, self.rank)

    @property
    def num_params(self) -> int:
        return sum(a * b for a, b in zip(self.widths[:-1], self.widths[1:]))

    @property
    def name(self) -> str:
        kind = "RRR" if len(self.widths) == 3 else f"DLN{len(self.widths) - 1}"
        return f"{kind} {'-'.join(map(str, self.widths))} r={self.rank} n={self.n}"


def generate_cases(count: int, seed: int = 0) -> list[GroundTruthCase]:
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(count):
        depth = 2 + index % 4
        widths = tuple(int(w) for w in rng.integers(2, 13, size=depth + 1))
        rank = int(rng.integers(0, min(widths) + 1))
        n = int(round(10 ** rng.uniform(3, 5)))
        cases.append(GroundTruthCase(widths, rank, n, seed=int(rng.integers(2**31))))
    return cases


def build_case(case: GroundTruthCase, dtype: torch.dtype = torch.float64):
    """(model, data, grad_norm): the case's network at the empirical minimizer of its data.

    The minimizer is built in closed form, in float64: the best product of rank ≤ min(widths) is the
    reduced-rank least-squares fit (the OLS fit projected on the top right singular vectors of its
    fitted values), factored in balance (every layer carries S^(1/L) of its singular values, unused
    hidden units are zero), then polished by L-BFGS. The model is cast to `dtype` afterwards;
    `grad_norm` is ‖∇L_n‖ at the float64 weights.
    """
    gen = torch.Generator().manual_seed(case.seed)
    widths, r = case.widths, case.rank
    d_in, d_out, layers = widths[0], widths[-1], len(widths) - 1
    left = torch.linalg.qr(torch.randn(d_out, d_out, generator=gen, dtype=torch.float64))[0][:, :r]
    right = torch.linalg.qr(torch.randn(d_in, d_in, generator=gen, dtype=torch.float64))[0][:, :r]
    singular = torch.linspace(1.0, 2.0, r, dtype=torch.float64) if r > 1 else torch.ones(r, dtype=torch.float64)
    w_true = left @ torch.diag(singular) @ right.T
    x = torch.randn(case.n, d_in, generator=gen, dtype=torch.float64)
    y = x @ w_true.T + torch.randn(case.n, d_out, generator=gen, dtype=torch.float64)
    data = TensorDataset(x, y)

    k = min(widths)
    ols = torch.linalg.lstsq(x, y).solution  # (d_in, d_out): y ≈ x @ ols
    top_right = torch.linalg.svd(x @ ols, full_matrices=False)[2][:k].T  # (d_out, k)
    product = (ols @ top_right @ top_right.T).T  # (d_out, d_in), the rank-k least-squares fit
    u, s, vh = torch.linalg.svd(product, full_matrices=False)
    root = torch.diag(s[:k] ** (1.0 / layers))
    model = DeepLinearNetwork(widths, init_scale=0.0, generator=gen)
    with torch.no_grad():
        for index, layer in enumerate(model.layers):
            weight = torch.zeros_like(layer.weight)
            if index == 0:
                weight[:k] = root @ vh[:k]
            elif index == layers - 1:
                weight[:, :k] = u[:, :k] @ root
            else:
                weight[:k, :k] = root
            if layers == 1:
                weight = product
            layer.weight.copy_(weight)
    optimum = float(half_squared_error(model, data.tensors).detach())
    grad_norm = train_to_minimum(model, half_squared_error, data, tol=1e-12)
    if grad_norm >= MAX_GRAD_NORM or float(half_squared_error(model, data.tensors).detach()) > optimum + 1e-10:
        raise RuntimeError(f"{case.name}: not at the minimizer (gradient norm {grad_norm:.2e})")
    if dtype != torch.float64:
        model = model.to(dtype)
        data = TensorDataset(x.to(dtype), y.to(dtype))
    return model, data, grad_norm
