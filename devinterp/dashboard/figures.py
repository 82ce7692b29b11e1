"""Plotly figures for the dashboard, built from loaded runs (pure: no I/O, no Dash).

Conventions
- x is the training step (optimizer updates, see README "Where outputs go"); with `log_x` the
  axis is logarithmic and step 0 is not drawn (log 0 is undefined).
- In run-level charts the colour identifies the run and the line style the metric; in per-head
  charts the colour identifies the head and the line style the run.
- Detected stages are shaded behind every chart: A (LLC rises while loss falls) blue, B (LLC
  falls while loss barely moves) orange, other grey; labelled at the top of the chart.
- Every figure keeps the user's zoom across live updates (`uirevision`) until the selection or
  the axis options change.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from devinterp.dashboard.data import RunData

RUN_COLORS = qualitative.D3
HEAD_COLORS = qualitative.Dark24
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
STAGE_COLORS = {"A": "rgba(31, 119, 180, 0.14)", "B": "rgba(255, 127, 14, 0.18)", "other": "rgba(127, 127, 127, 0.12)"}
STAGE_LABEL_COLORS = {"A": "#1f5f94", "B": "#b35900", "other": "#555555"}
HEAD_METRIC = re.compile(r"^induction/(?P<kind>prefix_matching|previous_token)/L(?P<layer>\d+)H(?P<head>\d+)$")
STEP_TITLE = "step (optimizer updates)"
HEIGHT = 340


@dataclass(frozen=True)
class PlotOptions:
    """Axis options chosen on the page."""

    log_x: bool = False
    log_y_loss: bool = False


@dataclass(frozen=True)
class Line:
    """One metric drawn as a line in a run-level chart."""

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
    Line("hessian/trace", "trace", "dot", secondary_y=True),
)


def series(metrics: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric, in step order."""
    rows = metrics[metrics["name"] == name]
    return rows["step"].to_numpy(), rows["value"].to_numpy()


def short_label(run: RunData, runs: list[RunData]) -> str:
    """The run's id, shortened to its last path component when that is unambiguous."""
    tail = run.run_id.rsplit("/", 1)[-1]
    return tail if sum(r.run_id.rsplit("/", 1)[-1] == tail for r in runs) == 1 else run.run_id


def _legend_name(run: RunData, runs: list[RunData], what: str) -> str:
    return what if len(runs) == 1 else f"{short_label(run, runs)} · {what}"


def _base(fig: go.Figure, title: str, y_title: str, options: PlotOptions, revision: str, log_y: bool = False,
          secondary: bool = False) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        height=HEIGHT,
        margin={"l": 70, "r": 20, "t": 48, "b": 50},
        template="plotly_white",
        hovermode="x unified",
        legend={"font": {"size": 11}, "bgcolor": "rgba(255,255,255,0.7)"},
        uirevision=revision,
    )
    x_title = STEP_TITLE + (" — log scale, step 0 not shown" if options.log_x else "")
    fig.update_xaxes(title_text=x_title, type="log" if options.log_x else "linear", showline=True, linecolor="#888")
    y_axes = {"secondary_y": False} if secondary else {}
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear", showline=True, linecolor="#888", **y_axes)
    return fig


def _empty_note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font={"size": 13, "color": "#888"})


def add_stages(fig: go.Figure, runs: list[RunData], options: PlotOptions) -> None:
    """Shade every selected run's stages; label them with their type (and run, if several)."""
    for run in runs:
        for stage in run.stages.itertuples(index=False):
            x0, x1 = float(stage.start_step), float(stage.end_step)
            if options.log_x:
                x0 = max(x0, 1.0)
                if x1 <= x0:
                    continue
            label = stage.type if len(runs) == 1 else f"{stage.type} ({short_label(run, runs)})"
            fig.add_vrect(x0=x0, x1=x1, fillcolor=STAGE_COLORS[stage.type], line_width=0, layer="below")
            # Annotations on a log axis take log10 coordinates; shapes take data coordinates.
            center = np.sqrt(x0 * x1) if options.log_x else (x0 + x1) / 2
            fig.add_annotation(x=np.log10(center) if options.log_x else center, y=1.0, xref="x", yref="paper",
                               yanchor="top", text=f"<b>{label}</b>", showarrow=False,
                               font={"size": 12, "color": STAGE_LABEL_COLORS[stage.type]})


def run_chart(runs: list[RunData], lines: tuple[Line, ...], title: str, y_title: str, options: PlotOptions,
              revision: str, y2_title: str | None = None, log_y: bool = False) -> go.Figure:
    """A chart with one line per (run, metric) that exists."""
    fig = make_subplots(specs=[[{"secondary_y": True}]]) if y2_title else go.Figure()
    drawn = 0
    for i, run in enumerate(runs):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        for line in lines:
            x, y = series(run.metrics, line.metric)
            if len(x) == 0:
                continue
            trace = go.Scatter(x=x, y=y, mode="lines+markers" if len(x) <= 40 else "lines",
                               name=_legend_name(run, runs, line.label), meta=[run.run_id, line.metric],
                               line={"color": color, "dash": line.dash, "width": 2}, marker={"size": 5})
            if y2_title:
                fig.add_trace(trace, secondary_y=line.secondary_y)
            else:
                fig.add_trace(trace)
            drawn += 1
    _base(fig, title, y_title, options, revision, log_y, secondary=bool(y2_title))
    if y2_title:
        fig.update_yaxes(title_text=y2_title, secondary_y=True, showgrid=False)
    if not drawn:
        _empty_note(fig, "no " + ", ".join(line.metric for line in lines) + " yet")
    add_stages(fig, runs, options)
    return fig


def llc_chart(runs: list[RunData], options: PlotOptions, revision: str) -> go.Figure:
    """LLC mean per run with a ±1 std band (spread over SGLD chains) where `llc/std` exists."""
    fig = go.Figure()
    drawn = 0
    for i, run in enumerate(runs):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        x, mean = series(run.metrics, "llc/mean")
        if len(x) == 0:
            continue
        std = pd.Series(dict(zip(*series(run.metrics, "llc/std")))).reindex(x).to_numpy(dtype=float)
        if np.isfinite(std).any():
            band_x = np.concatenate([x, x[::-1]])
            band_y = np.concatenate([mean + std, (mean - std)[::-1]])
            fig.add_trace(go.Scatter(x=band_x, y=band_y, fill="toself", fillcolor=_alpha(color, 0.2),
                                     line={"width": 0}, hoverinfo="skip", meta=[run.run_id, "llc/std"],
                                     name=_legend_name(run, runs, "± std over chains")))
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers" if len(x) <= 40 else "lines",
                                 name=_legend_name(run, runs, "LLC λ̂"), meta=[run.run_id, "llc/mean"],
                                 line={"color": color, "width": 2}, marker={"size": 5}))
        drawn += 1
    _base(fig, "Local learning coefficient", "LLC estimate λ̂ (dimensionless)", options, revision)
    if not drawn:
        _empty_note(fig, "no llc/mean yet")
    add_stages(fig, runs, options)
    return fig


def _alpha(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def head_metrics(metrics: pd.DataFrame, kind: str) -> list[tuple[int, int, str]]:
    """(layer, head, metric name) of the per-head `induction/<kind>/L{l}H{h}` metrics, sorted."""
    found = set()
    for name in metrics["name"].unique():
        match = HEAD_METRIC.match(name)
        if match and match["kind"] == kind:
            found.add((int(match["layer"]), int(match["head"]), name))
    return sorted(found)


def head_chart(runs: list[RunData], kind: str, title: str, options: PlotOptions, revision: str) -> go.Figure:
    """One line per (run, head) of an induction score; colour = head, line style = run."""
    fig = go.Figure()
    heads = sorted({(layer, head) for run in runs for layer, head, _ in head_metrics(run.metrics, kind)})
    colors = {h: HEAD_COLORS[i % len(HEAD_COLORS)] for i, h in enumerate(heads)}
    for i, run in enumerate(runs):
        for layer, head, name in head_metrics(run.metrics, kind):
            x, y = series(run.metrics, name)
            label = f"L{layer}H{head}"
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=_legend_name(run, runs, label),
                                     meta=[run.run_id, name], legendgroup=label,
                                     line={"color": colors[(layer, head)], "dash": DASHES[i % len(DASHES)], "width": 1.8}))
    _base(fig, title, "score (mean attention, 0–1)", options, revision)
    if not heads:
        _empty_note(fig, f"no induction/{kind}/L*H* yet")
    add_stages(fig, runs, options)
    return fig


@dataclass(frozen=True)
class ChartSet:
    """All dashboard charts, in page order (ids match the Dash graph ids)."""

    loss: go.Figure
    icl: go.Figure
    llc: go.Figure
    hessian: go.Figure
    prefix_matching: go.Figure
    previous_token: go.Figure


CHART_IDS = ("loss", "icl", "llc", "hessian", "prefix_matching", "previous_token")


def build_charts(runs: list[RunData], options: PlotOptions) -> ChartSet:
    revision = "|".join(r.run_id for r in runs) + f"|{options.log_x}|{options.log_y_loss}"
    return ChartSet(
        loss=run_chart(runs, LOSS_LINES, "Loss", "loss (nats / token)", options, revision, log_y=options.log_y_loss),
        icl=run_chart(runs, ICL_LINES, "In-context learning score",
                      "ICL score (nats; late − early token loss)", options, revision),
        llc=llc_chart(runs, options, revision),
        hessian=run_chart(runs, HESSIAN_LINES, "Hessian of the loss", "top eigenvalue λ₁ (nats / param²)",
                          options, revision, y2_title="trace (nats / param², dotted)"),
        prefix_matching=head_chart(runs, "prefix_matching", "Induction: prefix-matching score per head", options, revision),
        previous_token=head_chart(runs, "previous_token", "Induction: previous-token score per head", options, revision),
    )
