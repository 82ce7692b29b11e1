"""The report's figures (matplotlib, PNG). Every plot over training shares the conventions:
x = training step on a symmetric-log axis (linear below 10), detected stages shaded (type A blue,
type B orange, other grey) and labelled at the top ("B2 fragile" when the stage is fragile)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from devinterp.store.metrics import metric_series  # noqa: E402
from devinterp.views.stages import STAGE_COLORS  # noqa: E402



def series(metrics: pd.DataFrame, name: str) -> pd.Series:
    return metric_series(metrics, name).sort_index()


def shade_stages(ax, stages: pd.DataFrame) -> None:
    for i, stage in enumerate(stages.itertuples()):
        color = STAGE_COLORS.get(stage.type, STAGE_COLORS["other"])
        ax.axvspan(stage.start_step, stage.end_step, color=color, alpha=0.10 if stage.type != "other" else 0.05, lw=0)
        if i:
            ax.axvline(stage.start_step, color="black", lw=0.6, ls="--", alpha=0.5)
        middle = np.sqrt(max(stage.start_step, 1) * max(stage.end_step, 1))
        fragile = " fragile" if getattr(stage, "robustness", "") == "fragile" else ""
        ax.text(middle, 1.0, f"{stage.type}{i + 1}{fragile}", transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=9, fontweight="bold", color=color)


def _axes(title: str, ylabel: str, stages: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, pad=16)
    ax.grid(alpha=0.3)
    return fig, ax


def _finish(fig, ax, stages: pd.DataFrame, path: Path) -> Path:
    shade_stages(ax, stages)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def line_plot(metrics, stages, names: dict[str, str], title: str, ylabel: str, path: Path,
              band: tuple[str, str] | None = None, healthy: str | None = None,
              extra: dict[str, pd.Series] | None = None, refined: set[int] | None = None) -> Path | None:
    """Curves `names` ({metric: label}); `band=(mean, std)` draws mean ± std; `healthy` (a 1/0 metric)
    marks the first curve's points where it is 0 with hollow markers; `extra` ({label: series indexed
    by step}) overlays thinner dashed curves (other LLC series, other seeds); `refined` (steps) marks the
    first curve's points that an adaptive schedule's refinement rounds added. None if no data."""
    present = {n: label for n, label in names.items() if (metrics["name"] == n).any()}
    if not present:
        return None
    fig, ax = _axes(title, ylabel, stages)
    for name, label in present.items():
        s = series(metrics, name)
        ax.plot(s.index, s.values, lw=1.4, label=label, marker="." if len(s) < 60 else None)
    for label, s in (extra or {}).items():
        ax.plot(s.index, s.values, lw=1.0, ls="--", alpha=0.8, label=label)
    if band and (metrics["name"] == band[1]).any():
        mean, std = series(metrics, band[0]), series(metrics, band[1]).reindex(series(metrics, band[0]).index)
        ax.fill_between(mean.index, mean - std, mean + std, alpha=0.25, label="± chain std")
    if healthy and (metrics["name"] == healthy).any():
        first = series(metrics, next(iter(present)))
        bad = series(metrics, healthy).reindex(first.index) < 0.5
        if bad.any():
            ax.scatter(first.index[bad], first.values[bad], s=36, facecolors="white", edgecolors="black", zorder=3,
                       label="not healthy (see notes)")
    if refined:
        first = series(metrics, next(iter(present)))
        added = first[first.index.isin(refined)]
        ax.scatter(added.index, added.values, s=40, marker="^", color="tab:green", zorder=4,
                   label="added by adaptive refinement")
    return _finish(fig, ax, stages, path)


def heads_plot(metrics, stages, prefix: str, title: str, path: Path) -> Path | None:
    """One line per head for metrics named `<prefix>L<l>H<h>`."""
    names = sorted(n for n in metrics["name"].unique() if n.startswith(prefix))
    if not names:
        return None
    fig, ax = _axes(title, "attention score", stages)
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        s = series(metrics, name)
        ax.plot(s.index, s.values, lw=1.2, color=cmap(i % 10), label=name[len(prefix):])
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    return _finish(fig, ax, stages, path)


def essential_dynamics_plot(ed, stages: pd.DataFrame, path: Path) -> Path:
    """PC1-PC2 trajectory coloured by log step, the smoothed curve, and candidate boundaries."""
    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    k = ed.projections.shape[1]
    y_index = 1 if k > 1 else 0
    points = ax.scatter(ed.projections[:, 0], ed.projections[:, y_index], c=ed.log_steps, cmap="viridis", s=14)
    ax.plot(ed.smoothed[:, 0], ed.smoothed[:, y_index], color="black", lw=0.8, alpha=0.7, label="smoothed")
    for step in ed.boundary_steps:
        i = int(np.argmin(np.abs(ed.steps - step)))
        ax.scatter(ed.projections[i, 0], ed.projections[i, y_index], marker="x", color="red", s=60,
                   label="ED boundary" if step == ed.boundary_steps[0] else None)
        ax.annotate(f"{int(step)}", (ed.projections[i, 0], ed.projections[i, y_index]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    for n, stage in enumerate(stages.itertuples()):
        i = int(np.argmin(np.abs(ed.steps - stage.start_step)))
        ax.scatter(ed.projections[i, 0], ed.projections[i, y_index], marker="o", facecolors="none",
                   edgecolors=STAGE_COLORS.get(stage.type, "grey"), s=90,
                   label=f"start of LLC stage {stage.type}{n + 1}")
    ratio = ed.explained_variance_ratio
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%} of variance)")
    ax.set_ylabel(f"PC{y_index + 1} ({ratio[y_index]:.0%} of variance)")
    ax.set_title("Essential dynamics: trajectory of the outputs")
    ax.legend(fontsize=7, loc="best")
    fig.colorbar(points, ax=ax, label="ln(step + 1)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
