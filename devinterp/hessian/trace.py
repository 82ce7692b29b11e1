"""Trace estimation: Hutchinson on the complement of a deflation subspace (Hutch++).

For an orthonormal basis Q (rows) of a subspace and P = I - Q^T Q,

    tr(H) = tr(Q H Q^T) + tr(P H P),

the first term computed exactly and the second estimated by Hutchinson with Rademacher probes g:
E[(P g)^T H (P g)] = tr(P H P). When Q captures the large eigenvalues the second term has a much
smaller variance than plain Hutchinson on H. Hutch++ (Meyer, Musco, Musco, Williamson 2021) builds Q
from a random sketch, orth(H S); `hessian_spectrum` instead passes the orthonormal Krylov basis of
its extreme-eigenvalue Lanczos run, whose exact part tr(V H V^T) = sum(alphas) is already known
(no extra products), so every probe goes to the Hutchinson part. Either way Q is drawn independently
of the probes, so the estimate is unbiased given Q.

Standard error: the sample standard deviation of the per-probe Hutchinson terms over sqrt(#probes)
(the exact part adds none). It is 0 when the deflation space is the whole space (the trace is exact).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from devinterp.hessian.lanczos import random_unit_vector
from devinterp.hessian.linear_operator import SymmetricOperator


@dataclass(frozen=True)
class TraceEstimate:
    """tr(H) estimate (units of H) with its standard error; `deflation_rank` = dim of Q, `num_probes`
    = Hutchinson probes (products spent on the sketch are not included)."""

    value: float
    stderr: float
    num_probes: int
    deflation_rank: int


def _rademacher(dim: int, generator: torch.Generator, op: SymmetricOperator) -> torch.Tensor:
    return random_unit_vector(dim, generator, op.dtype, op.device) * dim**0.5


def deflated_hutchinson(
    op: SymmetricOperator,
    num_probes: int,
    generator: torch.Generator,
    basis: torch.Tensor | None = None,
    basis_trace: float = 0.0,
) -> TraceEstimate:
    """basis_trace + Hutchinson estimate of tr(P H P), P the projector off the rows of `basis`
    (orthonormal, shape (r, dim), or None for plain Hutchinson); `basis_trace` must be tr(basis H basis^T).
    Costs `num_probes` products (none if the basis spans the whole space)."""
    rank = 0 if basis is None else basis.shape[0]
    if rank >= op.dim:
        return TraceEstimate(float(basis_trace), 0.0, 0, rank)
    samples = []
    for _ in range(num_probes):
        g = _rademacher(op.dim, generator, op)
        if basis is not None:
            for _ in range(2):  # twice, for an orthogonal projection to working precision
                g = g - basis.T @ (basis @ g)
        samples.append(float(g @ op.matvec(g)))
    samples_arr = np.array(samples, dtype=np.float64)
    stderr = float(samples_arr.std(ddof=1) / np.sqrt(num_probes)) if num_probes > 1 else float("nan")
    value = float(basis_trace + samples_arr.mean()) if num_probes else float("nan")
    return TraceEstimate(value, stderr, num_probes, rank)


def hutchpp(op: SymmetricOperator, num_matvecs: int, generator: torch.Generator) -> TraceEstimate:
    """Hutch++ with `num_matvecs` products in all: a third sketch H S, a third for tr(Q H Q^T), the
    rest (at least a third) Hutchinson probes on the complement. Fewer than 3 products: Hutchinson."""
    sketch = min(num_matvecs // 3, op.dim)
    if sketch == 0:
        return deflated_hutchinson(op, num_matvecs, generator)
    s = torch.stack([_rademacher(op.dim, generator, op) for _ in range(sketch)], dim=1)
    y = torch.stack([op.matvec(col) for col in s.T], dim=1)
    q, _ = torch.linalg.qr(y)
    basis = q.T.contiguous()
    basis_trace = sum(float(row @ op.matvec(row)) for row in basis)
    return deflated_hutchinson(op, num_matvecs - 2 * sketch, generator, basis, basis_trace)
