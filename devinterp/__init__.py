"""devinterp: a developmental-interpretability training-run monitor.

Data flows one way: trainer -> run directory (checkpoints, metrics) -> analysis -> report/dashboard.
Imports flow one way too, from the apps down (the README's "Layout"; tests/test_import_graph.py):

    cli/             the command-line apps (thin Hydra apps); train.py, report.py, dashboard.py: `python -m` aliases
    views/           report/ (stages, figures, HTML) and dashboard/ (live Dash page): read-only views of runs
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
