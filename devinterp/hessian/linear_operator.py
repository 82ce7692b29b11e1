"""The minimal interface the spectral algorithms need from a symmetric linear operator.

`lanczos`, `slq_density` and `estimate_trace` only ever call `op.matvec(v)` on 1-D tensors of length
`op.dim` (dtype `op.dtype`, device `op.device`), so they run unchanged on the Hessian-vector-product
operator of a network (`devinterp.hessian.hvp_operator`) and on an explicit matrix (`MatrixOperator`,
used by the tests and handy for checking the algorithms on a known spectrum).
"""
from __future__ import annotations

from typing import Protocol

import torch


class SymmetricOperator(Protocol):
    """A symmetric linear map on R^dim, available only through matrix-vector products."""

    dim: int
    dtype: torch.dtype
    device: torch.device

    def matvec(self, v: torch.Tensor) -> torch.Tensor: ...


class MatrixOperator:
    """A dense symmetric matrix as a `SymmetricOperator`; counts its products in `num_matvecs`."""

    def __init__(self, matrix: torch.Tensor):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.dim = matrix.shape[0]
        self.dtype = matrix.dtype
        self.device = matrix.device
        self.num_matvecs = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.num_matvecs += 1
        return self.matrix @ v
