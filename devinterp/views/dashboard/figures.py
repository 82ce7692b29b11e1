"""Plotly figures for the dashboard, built from loaded runs (pure: no I/O, no Dash).

Figures are plain plotly JSON dicts ({"data": [...], "layout": {...}}), which `dcc.Graph` takes
as is: building them through `plotly.graph_objects` validated every property on every poll and
took over a second for two 100-checkpoint runs on a shared CPU. The tests check every figure
against plotly's schema with `go.Figure(figure)`.

Conventions
- x is the training step (optimizer updates, see README "Where outputs go"); with `log_x` the
  axis is logarithmic and step 0 is not drawn (log 0 is undefined).
- In run-level charts the line style identifies the metric and the colour the run (or, with a
  single run, the metric too); in per-head charts the colour identifies the head and the line
  style the run.
- Every trace carries `meta = [run id, metric name]` so the page (and tests) can tell traces apart.
- Detected stages are shaded behind every chart: A (LLC rises while loss falls) blue, B (LLC
  falls while loss barely moves) orange, other grey; labelled at the top of the chart.
- Every figure keeps the user's zoom across live updates (`uirevision`) until the selection or
  the axis options change.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import plotly.io as pio
from plotly.colors import qualitative

from devinterp.store.metrics import metric_series
from devinterp.views.dashboard.data import RunSnapshot
from devinterp.views.stages import STAGE_COLORS

RUN_COLORS = qualitative.D3
HEAD_COLORS = qualitative.Dark24
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
STAGE_LABEL_COLORS = {"A": "#1f5f94", "B": "#b35900", "other": "#555555"}
HEAD_METRIC = re.compile(r"^induction/(?P<kind>prefix_matching|previous_token)/L(?P<layer>\d+)H(?P<head>\d+)$")
STEP_TITLE = "step (optimizer updates)"
HEIGHT = 340
MARKERS_UP_TO = 40  # draw point markers on lines with at most this many points

Figure = dict  # plotly figure JSON: {"data": [trace dicts], "layout": {...}}


def _alpha(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


# Stages are shaded in their type's colour (devinterp.views.stages), more transparent for plateaus.
STAGE_FILLS = {kind: _alpha(color, {"A": 0.14, "B": 0.18}.get(kind, 0.07)) for kind, color in STAGE_COLORS.items()}


@dataclass(frozen=True)
class PlotOptions:
    """Axis options chosen on the page."""

    log_x: bool = False
    log_y_loss: bool = False


@dataclass(frozen=True)
class Line:
    """One metric drawn as a line in a run-level chart (`secondary_y`: on the right-hand axis)."""

    metric: str
    label: str
    dash: str = "solid"
    secondary_y: bool = False


LOSS_LINES = (
    Line("train/loss", "train loss"),
    Line("eval/loss", "eval loss", "dash"),
    Line("eval/loss_repeated", "eval loss, repeated half", "dot"),
    Line("eval/loss_random", "eval loss, random half", "dashdot"),
)
ICL_LINES = (Line("eval/icl_score", "ICL score"),)
HESSIAN_LINES = (
    Line("hessian/top_1", "top eigenvalue λ₁"),
    Line("hessian/trace", "trace (right axis)", "dot", secondary_y=True),
)


@lru_cache(maxsize=1)
def _template_layout() -> dict:
    """The `plotly_white` template's layout (templates are resolved in Python, not in plotly.js)."""
    return {"template": {"layout": pio.templates["plotly_white"].layout.to_plotly_json()}}


def _values(array: np.ndarray) -> list:
    """JSON-ready list; NaN (a missing or non-finite value) becomes null, a gap in the line."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in array.tolist()]


def series(metrics: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric, in the table's (step) order."""
    values = metric_series(metrics, name)
    return values.index.to_numpy(), values.to_numpy(dtype=float)


def short_label(run: RunSnapshot, runs: list[RunSnapshot]) -> str:
    """The run's id, shortened to its last path component when that is unambiguous."""
    tail = run.run_id.rsplit("/", 1)[-1]
    return tail if sum(r.run_id.rsplit("/", 1)[-1] == tail for r in runs) == 1 else run.run_id


def _legend_name(run: RunSnapshot, runs: list[RunSnapshot], what: str) -> str:
    return what if len(runs) == 1 else f"{short_label(run, runs)} · {what}"


def _line(x: np.ndarray, y: np.ndarray, name: str, meta: list[str], color: str, dash: str = "solid",
          width: float = 2, **extra) -> dict:
    return {"type": "scatter", "x": x.tolist(), "y": _values(y), "name": name, "meta": meta,
            "mode": "lines+markers" if len(x) <= MARKERS_UP_TO else "lines",
            "line": {"color": color, "dash": dash, "width": width}, "marker": {"size": 5}, **extra}


def _axis(title: str, log: bool) -> dict:
    return {"title": {"text": title}, "type": "log" if log else "linear", "showline": True, "linecolor": "#888",
            "zeroline": False}


def _figure(traces: list[dict], title: str, y_title: str, options: PlotOptions, revision: str,
            log_y: bool = False) -> Figure:
    x_title = STEP_TITLE + (" — log scale, step 0 not shown" if options.log_x else "")
    layout = {
        **_template_layout(),
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "height": HEIGHT,
        "margin": {"l": 70, "r": 20, "t": 48, "b": 50},
        "hovermode": "x unified",
        "showlegend": bool(traces),  # also for a single trace: its legend names the head or run
        "legend": {"font": {"size": 11}, "bgcolor": "rgba(255,255,255,0.7)"},
        "uirevision": revision,
        "xaxis": _axis(x_title, options.log_x),
        "yaxis": _axis(y_title, log_y),
        "shapes": [],
        "annotations": [],
    }
    return {"data": traces, "layout": layout}


def _empty_note(fig: Figure, text: str) -> None:
    """Mark a chart without data: no axes, just a note saying which metrics it waits for."""
    for axis in ("xaxis", "yaxis", "yaxis2"):
        if axis in fig["layout"]:
            fig["layout"][axis]["visible"] = False
    fig["layout"]["annotations"].append({"text": text, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                                         "showarrow": False, "font": {"size": 13, "color": "#888"}})


def add_stages(fig: Figure, runs: list[RunSnapshot], options: PlotOptions) -> None:
    """Shade every selected run's stages; label them with their type (and, if several runs have
    stages, with the run too, one label row per run)."""
    layout = fig["layout"]
    staged = [run for run in runs if not run.stages.empty]
    for i, run in enumerate(staged):
        for stage in run.stages.itertuples(index=False):
            x0, x1 = float(stage.start_step), float(stage.end_step)
            if options.log_x:
                x0 = max(x0, 1.0)
            if x1 <= x0:
                continue
            label = stage.type if len(staged) == 1 else f"{stage.type} ({short_label(run, runs)})"
            layout["shapes"].append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0,
                                     "y1": 1, "fillcolor": STAGE_FILLS[stage.type], "line": {"width": 0},
                                     "layer": "below"})
            # Annotations on a log axis take log10 coordinates; shapes take data coordinates.
            center = math.log10(math.sqrt(x0 * x1)) if options.log_x else (x0 + x1) / 2
            layout["annotations"].append({"x": center, "y": 1.0 - 0.07 * i, "xref": "x", "yref": "paper", "yanchor": "top",
                                          "text": f"<b>{label}</b>", "showarrow": False,
                                          "font": {"size": 12, "color": STAGE_LABEL_COLORS[stage.type]}})


def run_chart(runs: list[RunSnapshot], lines: tuple[Line, ...], title: str, y_title: str, options: PlotOptions,
              revision: str, y2_title: str | None = None, log_y: bool = False) -> Figure:
    """A chart with one line per (run, metric) that exists; `y2_title` adds a right-hand axis."""
    traces = []
    for i, run in enumerate(runs):
        for j, line in enumerate(lines):
            x, y = series(run.metrics, line.metric)
            if len(x) == 0:
                continue
            # One run: a colour per metric reads best; several: the colour names the run.
            color = RUN_COLORS[(i if len(runs) > 1 else j) % len(RUN_COLORS)]
            axis = {"yaxis": "y2"} if line.secondary_y else {}
            traces.append(_line(x, y, _legend_name(run, runs, line.label), [run.run_id, line.metric], color,
                                line.dash, **axis))
    fig = _figure(traces, title, y_title, options, revision, log_y)
    if y2_title:
        fig["layout"]["yaxis2"] = {**_axis(y2_title, False), "overlaying": "y", "side": "right", "showgrid": False}
        fig["layout"]["legend"].update({"x": 1.1, "xanchor": "left"})
    if not traces:
        _empty_note(fig, "no " + ", ".join(line.metric for line in lines) + " yet")
    add_stages(fig, runs, options)
    return fig


def llc_chart(runs: list[RunSnapshot], options: PlotOptions, revision: str) -> Figure:
    """LLC mean per run with a ±1 std band (spread over SGLD chains) where `llc/std` exists; checkpoints
    whose estimate is not healthy (`llc/healthy` = 0) get hollow markers."""
    traces, title = [], "Local learning coefficient"
    for i, run in enumerate(runs):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        x, mean = series(run.metrics, "llc/mean")
        if len(x) == 0:
            continue
        std_x, std = series(run.metrics, "llc/std")
        std = pd.Series(std, index=std_x).reindex(x).to_numpy(dtype=float)
        if np.isfinite(std).any():
            keep = np.isfinite(std) & np.isfinite(mean)
            bx, lo, hi = x[keep], (mean - std)[keep], (mean + std)[keep]
            traces.append({"type": "scatter", "x": np.concatenate([bx, bx[::-1]]).tolist(),
                           "y": np.concatenate([hi, lo[::-1]]).tolist(), "fill": "toself",
                           "fillcolor": _alpha(color, 0.2), "line": {"width": 0}, "hoverinfo": "skip",
                           "mode": "lines", "meta": [run.run_id, "llc/std"],
                           "name": _legend_name(run, runs, "± 1 std over chains")})
        line = _line(x, mean, _legend_name(run, runs, "LLC λ̂ (chain mean)"), [run.run_id, "llc/mean"], color)
        healthy_x, healthy = series(run.metrics, "llc/healthy")
        unhealthy = pd.Series(healthy, index=healthy_x).reindex(x).to_numpy(dtype=float) < 0.5
        if unhealthy.any():  # hollow markers: the estimate failed a health check (devinterp.slt.llc)
            line["mode"] = "lines+markers"
            line["marker"] = {"size": 7, "symbol": ["circle-open" if bad else "circle" for bad in unhealthy],
                              "line": {"color": color, "width": 1.5}}
            line["text"] = ["biased (R̂, trend, divergence, noise or sign check failed)" if bad else ""
                            for bad in unhealthy]
            title = "Local learning coefficient (hollow markers: estimate not healthy)"
        traces.append(line)
        if run.adaptive is not None:  # the points the adaptive schedule's refinement rounds added
            a = run.adaptive
            added = np.isin(x, sorted(a.refined))
            traces.append({"type": "scatter", "mode": "markers", "x": _values(x[added]), "y": _values(mean[added]),
                           "marker": {"symbol": "triangle-up", "size": 9, "color": color},
                           "meta": [run.run_id, "adaptive"], "hoverinfo": "x+y",
                           "name": _legend_name(run, runs, f"adaptive: {len(a.measured)} of {len(a.checkpoint_steps)} "
                                                           f"checkpoints, {len(a.refined)} from {len(a.rounds) - 1} "
                                                           "refinement round(s)")})
    fig = _figure(traces, title, "LLC estimate λ̂ (dimensionless)", options, revision)
    if not traces:
        _empty_note(fig, "no llc/mean yet")
    add_stages(fig, runs, options)
    return fig


def head_metrics(metrics: pd.DataFrame, kind: str) -> list[tuple[int, int, str]]:
    """(layer, head, metric name) of the per-head `induction/<kind>/L{l}H{h}` metrics, sorted."""
    found = set()
    for name in metrics["name"].unique():
        match = HEAD_METRIC.match(name)
        if match and match["kind"] == kind:
            found.add((int(match["layer"]), int(match["head"]), name))
    return sorted(found)


def head_chart(runs: list[RunSnapshot], kind: str, title: str, options: PlotOptions, revision: str) -> Figure:
    """One line per (run, head) of an induction score; colour = head, line style = run."""
    per_run = [head_metrics(run.metrics, kind) for run in runs]
    heads = sorted({(layer, head) for found in per_run for layer, head, _ in found})
    colors = {h: HEAD_COLORS[i % len(HEAD_COLORS)] for i, h in enumerate(heads)}
    traces = []
    for i, (run, found) in enumerate(zip(runs, per_run)):
        for layer, head, name in found:
            x, y = series(run.metrics, name)
            label = f"L{layer}H{head}"
            traces.append(_line(x, y, _legend_name(run, runs, label), [run.run_id, name], colors[(layer, head)],
                                DASHES[i % len(DASHES)], width=1.8, legendgroup=label))
    fig = _figure(traces, title, "score (mean attention, 0–1)", options, revision)
    if not traces:
        _empty_note(fig, f"no induction/{kind}/L*H* yet")
    add_stages(fig, runs, options)
    return fig


CHART_IDS = ("loss", "icl", "llc", "hessian", "prefix_matching", "previous_token")


def build_charts(runs: list[RunSnapshot], options: PlotOptions) -> dict[str, Figure]:
    """Every dashboard chart, keyed by CHART_IDS (the Dash graph ids are `graph-<key>`). Runs with
    neither metrics nor stages (e.g. unreadable) are left out, so they take no colour or label."""
    runs = [run for run in runs if not (run.metrics.empty and run.stages.empty)]
    revision = "|".join(r.run_id for r in runs) + f"|{options.log_x}|{options.log_y_loss}"
    return {
        "loss": run_chart(runs, LOSS_LINES, "Loss", "loss (nats / token)", options, revision,
                          log_y=options.log_y_loss),
        "icl": run_chart(runs, ICL_LINES, "In-context learning score",
                         "ICL score (nats; late − early token loss)", options, revision),
        "llc": llc_chart(runs, options, revision),
        "hessian": run_chart(runs, HESSIAN_LINES, "Hessian of the loss", "top eigenvalue λ₁ (nats / param²)",
                             options, revision, y2_title="trace (nats / param²)"),
        "prefix_matching": head_chart(runs, "prefix_matching", "Induction: prefix-matching score per head",
                                      options, revision),
        "previous_token": head_chart(runs, "previous_token", "Induction: previous-token score per head",
                                     options, revision),
    }
