"""Hessian spectrum of the loss: top/bottom eigenvalues (Lanczos), trace (deflated Hutchinson /
Hutch++) and eigenvalue density (stochastic Lanczos quadrature), from Hessian-vector products.

    from devinterp.hessian import hessian_spectrum
    res = hessian_spectrum(model, loss_fn, batches)      # loss_fn(model, batch) -> mean loss
    res.top.values, res.top.residuals, res.bottom.values, res.trace, res.trace_stderr
    res.density.grid, res.density.values, res.density.mass_near_zero, res.num_hvps, res.seconds

Modules: `hvp` (the operator H v), `lanczos` (Krylov iteration, extreme eigenpairs), `trace`,
`density` (SLQ), `spectrum` (`hessian_spectrum`, which combines them).
"""
from devinterp.hessian.density import SpectralDensity, slq_density
from devinterp.hessian.hvp import HessianOperator, hvp_operator
from devinterp.hessian.lanczos import extreme_eigenpairs, lanczos
from devinterp.hessian.linear_operator import MatrixOperator
from devinterp.hessian.spectrum import Eigenvalues, HessianResult, hessian_spectrum
from devinterp.hessian.trace import TraceEstimate, deflated_hutchinson, hutchpp

__all__ = [
    "hessian_spectrum",
    "HessianResult",
    "hvp_operator",
    "HessianOperator",
    "Eigenvalues",
    "SpectralDensity",
    "TraceEstimate",
    "MatrixOperator",
    "lanczos",
    "extreme_eigenpairs",
    "slq_density",
    "deflated_hutchinson",
    "hutchpp",
]
