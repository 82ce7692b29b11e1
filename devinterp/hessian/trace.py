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

Sharing a probe with the density (`lanczos_relation_sample`): when the deflation basis V is a Lanczos
basis, V H V^T = T (its tridiagonal matrix), so for any probe g

    (P g)^T H (P g) = g^T (H g) - 2 c . (V H g) + c^T T c,    c = V g,

needs only H g. An SLQ run started from g / ||g|| computes H g as its first product, so the same
product serves the trace term of g and the first Lanczos step of g's quadrature. Sound because both
estimators only need g to be a Rademacher vector drawn independently of H and of V: the trace term is
exactly the deflated Hutchinson term of g (the identity is algebra, not an approximation), and the
quadrature of g is SLQ with probe g; the two estimates are then correlated, which neither needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from devinterp.hessian.lanczos import LanczosRun, random_unit_vector
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


def rademacher_probes(count: int, generator: torch.Generator, op: SymmetricOperator) -> torch.Tensor:
    """`count` Rademacher vectors (entries +-1) as rows, drawn one after another from `generator`."""
    if count == 0:
        return torch.zeros(0, op.dim, dtype=op.dtype, device=op.device)
    return torch.stack([_rademacher(op.dim, generator, op) for _ in range(count)])


def apply_to_rows(op: SymmetricOperator, vectors: torch.Tensor) -> torch.Tensor:
    """H v for each row v of `vectors`: in one batched call when the operator has `matmat`."""
    if len(vectors) == 0:
        return torch.zeros_like(vectors)
    matmat = getattr(op, "matmat", None)
    if matmat is not None:
        return matmat(vectors)
    return torch.stack([op.matvec(v) for v in vectors])


def project_off(vectors: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """Rows of `vectors` with their components along the (orthonormal) rows of `basis` removed, twice
    (for an orthogonal projection to working precision)."""
    if basis is None:
        return vectors
    for _ in range(2):
        vectors = vectors - (vectors @ basis.T) @ basis
    return vectors


def tridiagonal_form(alphas: np.ndarray, betas: np.ndarray, c: np.ndarray) -> float:
    """c^T T c for the symmetric tridiagonal T with diagonal `alphas` and off-diagonal `betas[:-1]`
    (a `LanczosRun`'s coefficients)."""
    c = np.asarray(c, dtype=np.float64)
    return float(np.sum(alphas * c**2) + 2 * np.sum(betas[:-1] * c[:-1] * c[1:]))


def lanczos_relation_sample(g: torch.Tensor, hg: torch.Tensor, run: LanczosRun | None) -> float:
    """(P g)^T H (P g) from H g, with P the projector off the basis of the Lanczos run `run` (kept
    basis; see the module docstring); g^T H g when `run` is None."""
    g, hg = g.double(), hg.double()  # the terms cancel: keep round-off far below the Hutchinson noise
    if run is None:
        return float(g @ hg)
    basis = run.basis.double()
    c, c_h = basis @ g, basis @ hg
    return float(g @ hg) - 2 * float(c @ c_h) + tridiagonal_form(run.alphas, run.betas, c.cpu().numpy())


def trace_from_samples(samples: list[float], basis_trace: float, rank: int) -> TraceEstimate:
    """basis_trace + the mean of the Hutchinson terms, with its standard error (see the module docstring)."""
    values = np.array(samples, dtype=np.float64)
    num_probes = len(values)
    stderr = float(values.std(ddof=1) / np.sqrt(num_probes)) if num_probes > 1 else float("nan")
    value = float(basis_trace + values.mean()) if num_probes else float("nan")
    return TraceEstimate(value, stderr, num_probes, rank)


def deflated_hutchinson(
    op: SymmetricOperator,
    num_probes: int,
    generator: torch.Generator,
    basis: torch.Tensor | None = None,
    basis_trace: float = 0.0,
) -> TraceEstimate:
    """basis_trace + Hutchinson estimate of tr(P H P), P the projector off the rows of `basis`
    (orthonormal, shape (r, dim), or None for plain Hutchinson); `basis_trace` must be tr(basis H basis^T).
    Costs `num_probes` products, taken in one batched call when the operator has `matmat` (none if the
    basis spans the whole space)."""
    rank = 0 if basis is None else basis.shape[0]
    if rank >= op.dim:
        return TraceEstimate(float(basis_trace), 0.0, 0, rank)
    return trace_from_samples(deflated_samples(op, rademacher_probes(num_probes, generator, op), basis),
                              basis_trace, rank)


def deflated_samples(op: SymmetricOperator, probes: torch.Tensor, basis: torch.Tensor | None) -> list[float]:
    """The Hutchinson terms (P g)^T H (P g) of the rows g of `probes`, P the projector off the rows of
    `basis` (None: no projection); one product per probe, in one batched call when possible."""
    projected = project_off(probes, basis)
    return (projected * apply_to_rows(op, projected)).sum(dim=1).tolist()


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
