"""devinterp: a developmental-interpretability training-run monitor.

    from devinterp import Monitor, analyze_checkpoints                      # any training run
    from devinterp import estimate_llc, calibrate, hessian_spectrum        # the estimators
    from devinterp import detect_transitions, essential_dynamics           # stages of a run

These names load their subpackage on first use (module `__getattr__`), so `import devinterp` and the
import of any one subpackage stay cheap: the estimators do not pull in the trainer, the monitor does
not pull in the dashboard, and no import starts a chain back up the layers below.

Data flows one way: trainer or monitor -> run directory (checkpoints, metrics) -> analysis -> report/dashboard.
Imports flow one way too, from the apps down (the README's "Layout"; tests/test_import_graph.py):

    cli/             the command-line apps (thin Hydra apps); train.py, report.py, dashboard.py: `python -m` aliases
    views/           report/ (stages, figures, HTML) and dashboard/ (live Dash page): read-only views of runs
    integrations/    thin callbacks for other frameworks over the monitor (hf.py: the Hugging Face Trainer)
    monitor/         training devinterp did not run: Monitor (any loop), checkpoint folders from elsewhere
    training/        the training loop, its config, optimizer, checkpoint schedule, loggers, summary
    analysis/        callbacks over saved checkpoints (local, processes, Ray), or following a run
    callbacks/       measurements at checkpoint steps (loss, llc, hessian, induction, weights, grads)
    slt/             the LLC estimator (SGLD), its calibration and known learning coefficients
    hessian/         Hessian-vector products, Lanczos, trace, spectral density
    transitions/     stage detection (type A/B), its evidence, essential dynamics
    models/          one module per model, with its config; built from `_target_`
    tasks/           one module per task, with its config; deterministic, seeded, offline data
    store/           the run directory: layout, atomic writes, metrics, checkpoints, callback results
    core/            configuration errors, device choice, progress bars, parameter selectors, log files
    configs/         the YAML configs (package data)
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> the module that defines it
EXPORTS = {
    "estimate_llc": "devinterp.slt",
    "calibrate": "devinterp.slt",
    "hessian_spectrum": "devinterp.hessian",
    "detect_transitions": "devinterp.transitions",
    "essential_dynamics": "devinterp.transitions",
    "Monitor": "devinterp.monitor",
    "analyze_checkpoints": "devinterp.monitor",
}
__all__ = list(EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily (below)
    from devinterp.hessian import hessian_spectrum
    from devinterp.monitor import Monitor, analyze_checkpoints
    from devinterp.slt import calibrate, estimate_llc
    from devinterp.transitions import detect_transitions, essential_dynamics


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module 'devinterp' has no attribute {name!r}")
    value = getattr(importlib.import_module(EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *EXPORTS])
