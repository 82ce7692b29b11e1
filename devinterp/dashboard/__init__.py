"""Live local dashboard over run directories (`devinterp-dashboard runs_dir=...`).

    data.py     read run directories robustly (never writes): runs, status, metrics, stages
    figures.py  plotly figures from loaded runs (pure)
    app.py      the Dash app: layout, polling callbacks
    cli.py      `devinterp-dashboard key=value ...` and `python -m devinterp.dashboard`

Importing this package does not import Dash; only `app` and `cli.main` need it.
"""
