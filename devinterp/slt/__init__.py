"""Singular learning theory tools: the local learning coefficient (LLC) estimator and its calibration.

    from devinterp.slt import estimate_llc, calibrate
    res = estimate_llc(model, loss_fn, data, **calibrate(model, loss_fn, data).recommended)
    res.mean, res.stderr, res.healthy, res.problems

See `devinterp.slt.llc` for the conventions (nβ = n / log n with n = len(data) by default) and the
health checks, `devinterp.slt.calibration` for the rule that chooses the settings.
"""
from devinterp.slt.calibration import CalibrationResult, calibrate
from devinterp.slt.llc import LLCResult, default_nbeta, estimate_llc
from devinterp.slt.theory import learning_coefficient_dln, learning_coefficient_rrr

__all__ = [
    "estimate_llc",
    "LLCResult",
    "calibrate",
    "CalibrationResult",
    "default_nbeta",
    "learning_coefficient_dln",
    "learning_coefficient_rrr",
]
