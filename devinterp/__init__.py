"""devinterp: a developmental-interpretability training-run monitor.

Data flows one way: trainer -> run directory (checkpoints, metrics) -> analysis -> report/dashboard.

    config.py        typed Hydra schemas and value checks for every app
    models/          the attention-only transformer and GPT-2, built from configs
    tasks/           deterministic, seeded data: induction, in-context Markov chains, bytes of text
    training/        the training loop, optimizers, checkpoint schedule
    checkpoints.py   atomic dense checkpoints; `load(run_dir, step)`
    store/           the run directory: atomic writes, metrics table, callback results
    callbacks/       measurements at checkpoint steps (loss, llc, hessian, induction, weights, grads)
    slt/             the LLC estimator (SGLD), its calibration and known learning coefficients
    hessian/         Hessian-vector products, Lanczos, trace, spectral density
    analysis/        post-hoc runs of the callbacks over saved checkpoints (local, processes, Ray)
    transitions/     stage detection (type A/B) and essential dynamics
    report/          figures and the self-contained HTML report
    dashboard/       the live local dashboard (Dash)
    train.py, analyze.py, report/cli.py, dashboard/cli.py, cli.py   the command-line apps
"""
