"""Live local dashboard over run directories (`devinterp-dashboard runs_dir=...`, devinterp.cli.dashboard).

    config.py   DashboardConfig: what is served, where, how often the page polls
    data.py     read run directories robustly (never writes): runs, status, metrics, stages
    figures.py  plotly figures from loaded runs (pure)
    app.py      the Dash app: layout, polling callbacks, `serve`

Importing this package does not import Dash; only `app` needs it.
"""
