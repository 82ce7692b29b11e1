"""The Dash app: page layout and the polling callbacks.

The page polls (`dcc.Interval`, every `interval` seconds) and
- refreshes the run list with status badges (training / analysing / finished / failed / stale),
- refreshes the table of selected runs (status, checkpoints, problems),
- redraws the charts only when a selected run's files changed (`data.change_signature`), so an
  idle page costs a few `stat` calls per poll and the user's zoom survives live updates.
  (The first poll after a page load may redraw once more: the browser can send it before it has
  stored the first signature.)
All assets (Dash, React, plotly.js) are served by Dash from the installed packages; the page
requests nothing outside this server.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

import dash
from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from devinterp.views.dashboard import data
from devinterp.views.dashboard.config import DashboardConfig
from devinterp.views.dashboard.figures import CHART_IDS, STAGE_FILLS, STAGE_LABEL_COLORS, PlotOptions, build_charts

log = logging.getLogger("devinterp.views.dashboard")

BADGE_COLORS = {"training": "#2ca02c", "analysing": "#9467bd", "finished": "#1f77b4", "failed": "#d62728",
                "stale": "#e6a100", "error": "#8c1c13"}
GRAPH_CONFIG = {"displaylogo": False, "responsive": True,
                "toImageButtonOptions": {"format": "png", "scale": 2}}
# No debug UI, and no version check (it would ask dash-version.plotly.com from the browser).
DEV_TOOLS = {"debug": False, "dev_tools_ui": False, "dev_tools_props_check": False, "dev_tools_hot_reload": False,
             "dev_tools_disable_version_check": True}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       background: #f6f7f9; color: #222; }
.header { background: #20262e; color: #fff; padding: 10px 18px; display: flex; align-items: baseline; gap: 18px; }
.header h1 { font-size: 19px; margin: 0; font-weight: 600; }
.header .sub { font-size: 13px; color: #c9d1d9; }
.page { display: flex; align-items: flex-start; }
.sidebar { width: 330px; flex: none; padding: 12px 14px; box-sizing: border-box; background: #fff;
           border-right: 1px solid #dde1e6; min-height: calc(100vh - 44px); }
.sidebar h2, .main h2 { font-size: 14px; text-transform: uppercase; letter-spacing: .04em; color: #555; margin: 10px 0 6px; }
.run-list { max-height: 55vh; overflow-y: auto; font-size: 13px; }
.axis-options { font-size: 13px; }
.run-list label { display: flex; align-items: flex-start; gap: 6px; padding: 3px 0; cursor: pointer; }
.run-name { word-break: break-all; }
.run-detail { color: #666; font-size: 11.5px; }
.badge { display: inline-block; color: #fff; border-radius: 9px; padding: 0 7px; font-size: 11px; font-weight: 600;
         line-height: 17px; margin-right: 5px; }
.main { flex: 1; padding: 8px 14px; min-width: 0; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 10px; }
.chart { background: #fff; border: 1px solid #dde1e6; border-radius: 4px; }
table.runs { border-collapse: collapse; font-size: 13px; background: #fff; margin-bottom: 8px; }
table.runs td, table.runs th { border: 1px solid #dde1e6; padding: 3px 8px; text-align: left; vertical-align: top; }
.problems { color: #8c1c13; font-size: 12px; margin: 0; padding-left: 16px; }
.legend-note { font-size: 12px; color: #444; line-height: 1.6; }
.swatch { display: inline-block; width: 12px; height: 12px; vertical-align: middle; margin-right: 4px; border-radius: 2px; }
"""
INDEX = """<!DOCTYPE html>
<html>
  <head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}<style>""" + STYLE + """</style></head>
  <body>{%app_entry%}<footer>{%config%}{%scripts%}{%renderer%}</footer></body>
</html>"""


def badge(name: str) -> html.Span:
    return html.Span(name, className="badge", style={"background": BADGE_COLORS.get(name, "#555")})


def run_options(cfg: DashboardConfig, now: float) -> list[dict]:
    """Checklist options: one per run, labelled with its badge, id and status detail."""
    options = []
    for path in data.find_runs(cfg.runs_dir):
        try:
            status = data.load_status(path, now, cfg.stale_after)
        except Exception as e:  # never let one run break the list (e.g. permissions)
            status = data.RunStatus("error", f"{type(e).__name__}: {e}")
        rid = data.run_id(cfg.runs_dir, path)
        label = html.Span([badge(status.badge), html.Span(rid, className="run-name"),
                           html.Div(status.detail, className="run-detail")])
        options.append({"label": label, "value": rid})
    return options


def default_selection(cfg: DashboardConfig) -> list[str]:
    """The run whose status was updated last (runs with an unreadable status come last)."""
    def updated(path: Path) -> float:
        try:
            return data.read_status_file(path).updated or 0.0
        except data.RunDataError:
            return -1.0

    runs = data.find_runs(cfg.runs_dir)
    return [data.run_id(cfg.runs_dir, max(runs, key=updated))] if runs else []


def stage_legend() -> html.Div:
    def item(kind: str, text: str) -> html.Div:
        style = {"background": STAGE_FILLS[kind], "border": f"1px solid {STAGE_LABEL_COLORS[kind]}"}
        return html.Div([html.Span(className="swatch", style=style), text])

    return html.Div([
        html.Div("Shaded stages (from report/stages.csv):"),
        item("A", "A: LLC rises while loss falls"),
        item("B", "B: LLC falls while loss barely moves"),
        item("other", "other"),
    ], className="legend-note")


def layout(cfg: DashboardConfig) -> html.Div:
    """The page; built per page load so a reload picks up new runs."""
    now = time.time()
    return html.Div([
        html.Div([html.H1("devinterp dashboard"),
                  html.Span(f"{Path(cfg.runs_dir).resolve()} · polling every {cfg.interval:g} s", className="sub")],
                 className="header"),
        html.Div([
            html.Div([
                html.H2("Runs"),
                dcc.Checklist(id="runs", options=run_options(cfg, now), value=default_selection(cfg),
                              className="run-list"),
                html.H2("Axes"),
                dcc.Checklist(id="axis-options", options=[{"label": " log-scale steps (x)", "value": "log_x"},
                                                          {"label": " log-scale loss (y)", "value": "log_y_loss"}],
                              value=[], className="axis-options"),
                html.H2("Legend"),
                stage_legend(),
            ], className="sidebar"),
            html.Div([
                html.Div(id="run-table"),
                html.Div([html.Div(dcc.Graph(id=f"graph-{name}", config=GRAPH_CONFIG), className="chart")
                          for name in CHART_IDS], className="charts"),
            ], className="main"),
        ], className="page"),
        dcc.Interval(id="poll", interval=int(cfg.interval * 1000)),
        dcc.Store(id="signature"),
    ])


def load_selected(cfg: DashboardConfig, selected: list[str] | None, cache: data.PartCache) -> list[data.RunSnapshot]:
    """Load the selected runs; an unexpected failure becomes that run's error, not the page's."""
    now, runs = time.time(), []
    for rid, path in data.resolve_run_ids(cfg.runs_dir, selected):
        try:
            runs.append(data.load_run(cfg.runs_dir, path, now, cfg.stale_after, cache))
        except Exception as e:
            log.exception("loading %s failed", path)
            status = data.RunStatus("error", f"{type(e).__name__}: {e}")
            runs.append(data.RunSnapshot(rid, path, status, data.empty_metrics(), data.empty_stages(), (),
                                     (f"unexpected {type(e).__name__}: {e}",)))
    return runs


def run_table(runs: list[data.RunSnapshot]) -> html.Table | html.Div:
    if not runs:
        return html.Div("No run selected: tick one or more runs on the left (several overlay, e.g. seeds).",
                        className="legend-note")
    rows = [html.Tr([html.Th("run"), html.Th("status"), html.Th("checkpoints"), html.Th("metric rows"),
                     html.Th("problems")])]
    for run in runs:
        problems = html.Ul([html.Li(e) for e in run.errors], className="problems") if run.errors else "—"
        last = f"{len(run.checkpoint_steps)} (last step {run.checkpoint_steps[-1]})" if run.checkpoint_steps else "0"
        rows.append(html.Tr([html.Td(run.run_id), html.Td([badge(run.status.badge), run.status.detail]),
                             html.Td(last), html.Td(str(len(run.metrics))), html.Td(problems)]))
    return html.Table(rows, className="runs")


def signature(cfg: DashboardConfig, selected: list[str] | None, axis_options: list[str] | None) -> str:
    parts = [repr(sorted(axis_options or []))]
    parts += [repr((rid, data.change_signature(path))) for rid, path in data.resolve_run_ids(cfg.runs_dir, selected)]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def create_app(cfg: DashboardConfig) -> Dash:
    """The Dash app for `cfg` (not yet serving)."""
    app = Dash(__name__, title="devinterp dashboard", update_title=None, serve_locally=True,
               assets_ignore=".*", index_string=INDEX)
    app.layout = lambda: layout(cfg)
    app.enable_dev_tools(**DEV_TOOLS)
    cache = data.PartCache()
    # One load at a time: the table and chart callbacks of a poll would otherwise parse the same
    # new part files twice; the second waits and then finds them in the cache.
    load_lock = threading.Lock()

    def load(selected):
        with load_lock:
            return load_selected(cfg, selected, cache)

    @app.callback(Output("runs", "options"), Input("poll", "n_intervals"))
    def refresh_run_list(_n):
        return run_options(cfg, time.time())

    @app.callback(Output("run-table", "children"), Input("poll", "n_intervals"), Input("runs", "value"))
    def refresh_run_table(_n, selected):
        return run_table(load(selected))

    @app.callback([Output(f"graph-{name}", "figure") for name in CHART_IDS] + [Output("signature", "data")],
                  Input("poll", "n_intervals"), Input("runs", "value"), Input("axis-options", "value"),
                  State("signature", "data"))
    def refresh_charts(_n, selected, axis_options, previous):
        current = signature(cfg, selected, axis_options)
        if dash.ctx.triggered_id == "poll" and current == previous:
            raise PreventUpdate  # nothing changed on disk: keep the page as it is
        axis_options = axis_options or []
        options = PlotOptions(log_x="log_x" in axis_options, log_y_loss="log_y_loss" in axis_options)
        charts = build_charts(load(selected), options)
        return [charts[name] for name in CHART_IDS] + [current]

    return app


def serve(cfg: DashboardConfig) -> None:
    """Serve the dashboard until interrupted (Flask's threaded server, fine for one user)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per poll request
    app = create_app(cfg)
    print(f"devinterp-dashboard: serving {Path(cfg.runs_dir).resolve()} at http://{cfg.host}:{cfg.port}/", flush=True)
    app.run(host=cfg.host, port=cfg.port, **DEV_TOOLS)
