"""`devinterp-report`: stages, figures and a self-contained HTML page for one run.

Writes `<run_dir>/report/` (or `out_dir`): `index.html` (figures embedded, opens offline), the
PNG figures, `stages.csv` (detect_transitions' table) and `essential_dynamics.csv` (candidate
boundaries). Reads the run only: a metrics part or checkpoint that cannot be read is left out,
and the report's notes name it.

Stages come from the run's primary LLC series (`series.choose_primary`); each other complete LLC
series of the run, and each other seed of a multirun directory, is put through the same stage
detection, and a primary A or B stage that does not reappear in every one of them is marked
fragile (`devinterp.transitions.robustness`). The LLC figure overlays them all.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from devinterp.analysis.outputs import checkpoint_outputs
from devinterp.slt.llc import MIN_ESS, failed_checks
from devinterp.store.adaptive import AdaptiveRecord, read_adaptive_record
from devinterp.store.atomic import atomic_write_text
from devinterp.store.calibration import CALIBRATION_DIRNAME
from devinterp.store.metrics import metric_series, read_metrics_and_problems
from devinterp.store.run_dir import REPORT_DIRNAME, STAGES_FILE
from devinterp.store.unreadable import UnreadableFileError
from devinterp.transitions import detect_transitions, essential_dynamics
from devinterp.transitions.detect import STAGE_COLUMNS
from devinterp.transitions.movers import MOVER_METRICS
from devinterp.transitions.robustness import ROBUSTNESS_COLUMN, mark_chain_spread, mark_robustness
from devinterp.views.report import figures
from devinterp.views.report.series import (LLCSeries, calibration_record, choose_primary, describe_settings,
                                           is_complete, live_settings_hash, metrics_view, run_llc_settings, seed_runs,
                                           split_llc_series)

log = logging.getLogger(__name__)
# The loss beside the LLC in the stage table (evidence only: the type is the sign of the LLC change):
# by default the training loss on the run's fixed training sample, the loss the model is fitted to (for
# grokking, the held-out loss falls during the B stage while this one holds); else the eval loss.
DEFAULT_LOSS = "train/fixed_loss"
FALLBACK_LOSS = "eval/loss"
REPORT_PAGE = "index.html"
REPORT_STAGE_COLUMNS = [*STAGE_COLUMNS, ROBUSTNESS_COLUMN]  # the report's stage table (stages.csv)


@dataclass
class Report:
    directory: Path
    stages: pd.DataFrame
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ed_boundaries: list[int] = field(default_factory=list)
    compared: dict[str, pd.DataFrame] = field(default_factory=dict)  # label -> stages of another series or seed

    @property
    def page(self) -> Path:
        """The self-contained HTML page."""
        return self.directory / REPORT_PAGE


@dataclass
class RunLLC:
    """One run's metrics as the report reads them: `metrics` is the view with the primary LLC
    series (`series.metrics_view`), `rows` every stored row, `labels` and `settings` name and
    describe each series (by settings hash)."""

    run_dir: Path
    rows: pd.DataFrame
    metrics: pd.DataFrame
    series: dict[str, LLCSeries]
    primary: str | None
    why: str
    labels: dict[str, str]
    settings: dict[str, str]


def read_run_llc(run_dir: Path, llc: str, llc_settings: str | None, notes: list[str]) -> RunLLC:
    """Read a run's metrics and pick its primary LLC series (ValueError for an unknown `llc_settings`)."""
    rows, unreadable = read_metrics_and_problems(run_dir, latest_only=False)
    notes += [f"Skipped an unreadable metrics part (its rows are missing here): {e}" for e in unreadable]
    series = split_llc_series(rows, llc)
    live = live_settings_hash(run_dir) if series else None
    records = {h: calibration_record(run_dir, s) for h, s in series.items()}
    primary, why = (None, "")
    if series or llc_settings is not None:
        try:
            primary, why = choose_primary(series, llc_settings, live, {h for h, r in records.items() if r})
        except ValueError as e:
            raise ValueError(f"{e} (in {run_dir})") from None
    labels, settings = {}, {}
    for h in series:
        record, entry = records[h], run_llc_settings(run_dir) if h == live else None
        localization = (record or {}).get("localization", (entry or {}).get("localization"))
        labels[h] = f"llc-{h}" + (f" (γ={localization:g})" if isinstance(localization, (int, float)) else "")
        if record:
            settings[h] = f"auto-calibrated on checkpoint step {record['reference_step']} (the settings note below)"
        elif entry:
            settings[h] = "the run's config: " + describe_settings(
                {k: v for k, v in entry.items() if k not in ("_target_", "schedule")})
        else:
            settings[h] = "not recorded in the run (only the settings hash)"
    return RunLLC(Path(run_dir), rows, metrics_view(rows, series, primary), series, primary, why, labels, settings)


def find_stages(metrics: pd.DataFrame, llc: str, loss: str, llc_std: str | None, notes: list[str],
                point_steps: list[int] | None = None) -> pd.DataFrame:
    """The stage table of one LLC series (`detect_transitions`); `point_steps`: the checkpoints an adaptively
    scheduled series chose from (`adaptive_schedule`)."""
    logged = set(metrics["name"].unique())
    if llc not in logged:
        notes.append(f"No '{llc}' metric in this run: no stages (run devinterp-analyze with the llc callback).")
        return pd.DataFrame(columns=REPORT_STAGE_COLUMNS)
    healthy = health_metric(llc)
    present = [name for name in dict.fromkeys((loss, FALLBACK_LOSS)) if name in logged]
    if present and present[0] != loss:
        notes.append(f"No '{loss}' metric in this run: the stages' loss evidence uses '{present[0]}'.")

    def if_logged(name: str | None) -> str | None:  # optional metrics: not every task logs them
        return name if name in logged else None

    try:
        stages = detect_transitions(metrics, llc=llc, loss=present[0] if present else None,
                                    llc_std=if_logged(llc_std), llc_healthy=if_logged(healthy),
                                    icl_score=if_logged("eval/icl_score"),
                                    prefix_matching=if_logged("induction/prefix_matching_max"),
                                    movers=MOVER_METRICS, point_steps=point_steps)
    except ValueError as e:
        notes.append(f"Stage detection not possible: {e}")
        return pd.DataFrame(columns=REPORT_STAGE_COLUMNS)
    stages[ROBUSTNESS_COLUMN] = ""
    return stages


def adaptive_schedule(run: RunLLC, llc: str, notes: list[str]) -> AdaptiveRecord | None:
    """The adaptive schedule record of the run's primary LLC series (`devinterp.store.adaptive`), or None
    when it was not scheduled adaptively; a note says what it measured and saved."""
    if run.primary is None:
        return None
    try:
        record = read_adaptive_record(run.run_dir, llc.rsplit("/", 1)[0], run.primary)
    except UnreadableFileError as e:
        notes.append(f"Skipped an unreadable adaptive-schedule record: {e}")
        return None
    if record is None:
        return None
    measured, total = len(record.measured), len(record.checkpoint_steps)
    notes.append(f"LLC scheduled adaptively: {measured} of {total} checkpoints measured ({measured / total:.0%}): "
                 f"{len(record.rounds[0])} coarse, {len(record.refined)} added in {len(record.rounds) - 1} refinement "
                 f"round(s) (triangles in the LLC figure); {total - measured} estimates saved against measuring "
                 "every checkpoint.")
    return record


def format_stages(stages: pd.DataFrame) -> str:
    """The stage table as the apps print it (the evidence, in the report, left out)."""
    if stages.empty:
        return "no stages detected"
    columns = [c for c in STAGE_COLUMNS if c not in ("llc_z", "evidence")]
    if ROBUSTNESS_COLUMN in stages.columns and stages[ROBUSTNESS_COLUMN].astype(bool).any():
        columns.append(ROBUSTNESS_COLUMN)
    return stages[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}")


def stage_summary(stages: pd.DataFrame) -> str:
    """'A 0–80, B 80–1231' (plateaus left out), or 'none'."""
    return ", ".join(f"{s.type} {s.start_step}–{s.end_step}" for s in stages.itertuples()
                     if s.type != "other") or "none"


def compare_settings(run: RunLLC, llc: str, loss: str, llc_std: str | None,
                     notes: list[str]) -> dict[str, pd.DataFrame]:
    """Stages of each other complete LLC series of `run` (label -> stage table); notes say which
    series there are, their settings, and which were left out."""
    if run.primary is None:
        return {}
    primary = run.series[run.primary]
    compared = {}
    for h, series in run.series.items():
        head = f"LLC series {run.labels[h]}, {len(series.steps)} steps, settings {run.settings[h]}"
        if h == run.primary:
            notes.append(f"{head}: the primary series ({run.why}); its stages are reported.")
            continue
        if not is_complete(series, primary):
            shared = len(set(series.steps) & set(primary.steps))
            notes.append(f"{head}: not compared, it has values at {shared} of the primary's {len(primary.steps)} "
                         "steps (complete it with devinterp-analyze).")
            continue
        own_notes: list[str] = []
        compared[run.labels[h]] = find_stages(metrics_view(run.rows, run.series, h), llc, loss, llc_std, own_notes)
        notes.append(f"{head}: compared; its stages: {stage_summary(compared[run.labels[h]])}."
                     + "".join(f" {n}" for n in own_notes))
    return compared


def compare_seeds(seeds: list[Path], llc: str, loss: str, llc_std: str | None, llc_settings: str | None,
                  notes: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, pd.Series]]:
    """Stages and LLC curves (label: the run directory's name) of the other seed runs of a multirun."""
    compared, curves = {}, {}
    for seed_dir in seeds:
        own_notes: list[str] = []
        run = read_run_llc(seed_dir, llc, llc_settings, own_notes)
        if run.primary is None:
            notes.append(f"Seed run {seed_dir.name}: no '{llc}' metric; not compared.")
            continue
        record = adaptive_schedule(run, llc, [])
        compared[seed_dir.name] = find_stages(run.metrics, llc, loss, llc_std, own_notes,
                                              record.checkpoint_steps if record else None)
        curves[seed_dir.name] = metric_series(run.metrics, llc).sort_index()
        notes.append(f"Seed run {seed_dir.name} (LLC series {run.labels[run.primary]}): stages "
                     f"{stage_summary(compared[seed_dir.name])}." + "".join(f" {n}" for n in own_notes))
    return compared, curves


def prefix_metric(llc: str, name: str) -> str:
    """A metric stored beside an LLC metric: (`llc/mean`, "precise") -> `llc/precise`."""
    return llc.rsplit("/", 1)[0] + "/" + name


def health_metric(llc: str) -> str:
    """The health verdict stored beside an LLC metric: `llc/mean` -> `llc/healthy`."""
    return prefix_metric(llc, "healthy")


def llc_notes(run_dir: Path, metrics: pd.DataFrame, llc: str) -> list[str]:
    """What the LLC was measured with (the run's calibration records, see devinterp.callbacks.llc)
    and which checkpoints failed which health check."""
    notes = []
    for path in sorted((run_dir / CALIBRATION_DIRNAME).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            settings = describe_settings(record["settings"])
            notes.append(f"LLC settings (calibrated once on checkpoint step {record['reference_step']}, "
                         f"{path.name}): {settings}, localization={record['localization']:.3g}. "
                         f"{record['reason']}."
                         + (f" Localization check: λ̂ changes by {record['localization_change']:+.0%} at 3γ."
                            if math.isfinite(record.get("localization_change", math.nan)) else ""))
            notes += [f"LLC calibration problem: {problem}" for problem in record.get("problems", [])]
        except (OSError, ValueError, KeyError, TypeError) as e:
            notes.append(f"Skipped an unreadable LLC calibration record {path}: {e}")
    wide = metrics[metrics["name"].str.startswith(llc.rsplit("/", 1)[0] + "/")].pivot_table(
        index="step", columns="name", values="value", aggfunc="last")
    healthy = health_metric(llc)
    if healthy in wide.columns and (wide[healthy] < 0.5).any():
        bad = wide[wide[healthy] < 0.5]
        prefix = llc.rsplit("/", 1)[0]
        counts = Counter(check for step, row in bad.iterrows()
                         for check in failed_checks(row.get(f"{prefix}/mean", math.nan),
                                                    {name.removeprefix(prefix + "/"): value for name, value in row.items()}))
        described = ", ".join(f"{name} at {count}" for name, count in counts.items())
        notes.append(f"{len(bad)} of {len(wide)} LLC estimates are biased by a health check (hollow markers; "
                     f"{described or 'see llc/*'}): steps {', '.join(str(int(s)) for s in bad.index)}. Stage "
                     "detection leaves them out or down-weights them (see the stage evidence).")
    precise = prefix_metric(llc, "precise")
    if precise in wide.columns and (wide[precise] < 0.5).any():
        notes.append(f"{int((wide[precise] < 0.5).sum())} of {len(wide)} LLC estimates are imprecise (ESS < "
                     f"{MIN_ESS:g}): unbiased, with a wide error bar (`llc/stderr`).")
    return notes


def build_report(run_dir: Path, llc: str = "llc/mean", loss: str = DEFAULT_LOSS, llc_std: str | None = "llc/std",
                 ed_examples: int = 32, device: str = "cpu", out_dir: Path | None = None,
                 llc_settings: str | None = None) -> Report:
    """Write the report of `run_dir` into `out_dir` (default `<run_dir>/report`).

    `run_dir` is a run, or a multirun directory of seed runs: then the first run (in name order)
    is reported and the others are compared with it. `llc_settings` picks the primary LLC series
    by settings hash (default: see `series.choose_primary`); ValueError if a run has no such series."""
    run_dir = Path(run_dir)
    seeds = seed_runs(run_dir)
    main_run = seeds[0] if seeds else run_dir
    out = Path(out_dir) if out_dir is not None else run_dir / REPORT_DIRNAME
    notes: list[str] = [f"Multirun: reporting {main_run.name}, comparing the seed runs "
                        f"{', '.join(p.name for p in seeds[1:]) or '(none)'}."] if seeds else []
    run = read_run_llc(main_run, llc, llc_settings, notes)
    seed_stages, seed_curves = compare_seeds(seeds[1:], llc, loss, llc_std, llc_settings, notes)
    out.mkdir(parents=True, exist_ok=True)
    metrics = run.metrics
    record = adaptive_schedule(run, llc, notes)
    stages = find_stages(metrics, llc, loss, llc_std, notes, record.checkpoint_steps if record else None)
    compared = compare_settings(run, llc, loss, llc_std, notes)
    if not stages.empty:
        stages = mark_robustness(stages, compared, "LLC settings")
        stages = mark_robustness(stages, seed_stages, "seeds")
        if llc_std and (metrics["name"] == llc_std).any():
            stages = mark_chain_spread(stages, metrics, llc_std)
    notes += llc_notes(main_run, metrics, llc)
    atomic_write_text(out / STAGES_FILE, stages.to_csv(index=False))
    overlay = {label: metric_series(metrics_view(run.rows, run.series, h), llc).sort_index()
               for h, label in run.labels.items() if label in compared}
    overlay.update({f"seed run {name}": curve for name, curve in seed_curves.items()})
    llc_label = "LLC (mean over chains)" + (f", {run.labels[run.primary]}" + (f", run {main_run.name}" if seeds else "")
                                            if overlay else "")
    made = draw_figures(metrics, stages, out, llc, llc_std, llc_label, overlay, record.refined if record else set())
    ed_boundaries, ed_figure = essential_dynamics_boundaries(main_run, stages, out, ed_examples, device, notes)
    report = Report(out, stages, [p for p in [*made, ed_figure] if p is not None], notes, ed_boundaries,
                    {**compared, **seed_stages})
    atomic_write_text(report.page, render_html(run_dir, report))
    return report


def draw_figures(metrics: pd.DataFrame, stages: pd.DataFrame, out: Path, llc: str, llc_std: str | None,
                 llc_label: str, overlay: dict[str, pd.Series], refined: set[int]) -> list[Path | None]:
    """The report's figures over training into `out` (None for each without data)."""
    return [
        figures.line_plot(metrics, stages, {"train/loss": "train (batch)", "eval/loss": "eval",
                                            "eval/loss_repeated": "eval, repeated tokens"},
                          "Loss", "cross-entropy (nats)", out / "loss.png"),
        figures.line_plot(metrics, stages, {llc: llc_label}, "Local learning coefficient", "λ̂", out / "llc.png",
                          band=(llc, llc_std) if llc_std else None, healthy=health_metric(llc), extra=overlay,
                          refined=refined),
        figures.line_plot(metrics, stages, {"hessian/top_1": "top eigenvalue"}, "Hessian: sharpness",
                          "eigenvalue", out / "hessian_top.png"),
        figures.line_plot(metrics, stages, {"hessian/trace": "trace"}, "Hessian: trace", "tr(H)",
                          out / "hessian_trace.png"),
        figures.line_plot(metrics, stages, {"eval/icl_score": "eval set", "induction/icl_score": "induction probe"},
                          "In-context learning score (late minus early loss)", "nats", out / "icl_score.png"),
        figures.line_plot(metrics, stages, ngram_scores(metrics),
                          "n-gram scores: KL(corpus n-gram statistics ‖ model)", "nats", out / "ngram.png"),
        figures.heads_plot(metrics, stages, "induction/prefix_matching/", "Prefix-matching (induction) score per head",
                           out / "prefix_matching.png"),
        figures.heads_plot(metrics, stages, "induction/previous_token/", "Previous-token score per head",
                           out / "previous_token.png"),
    ]


def ngram_scores(metrics: pd.DataFrame) -> dict[str, str]:
    """{metric: label} of the logged `ngram/kl_<n>` scores (the `ngram` callback), by n."""
    orders = sorted(int(m.group(1)) for name in metrics["name"].unique()
                    if (m := re.fullmatch(r"ngram/kl_(\d+)", str(name))))
    return {f"ngram/kl_{n}": ("bigram" if n == 2 else f"{n}-gram") for n in orders}


def essential_dynamics_boundaries(run_dir: Path, stages: pd.DataFrame, out: Path, ed_examples: int, device: str,
                                  notes: list[str]) -> tuple[list[int], Path | None]:
    """Essential dynamics of the run's checkpoints: its candidate boundaries (also into
    `essential_dynamics.csv`) and its figure; notes say which checkpoints it skipped, or why it failed."""
    try:
        outputs = checkpoint_outputs(run_dir, num_examples=ed_examples, device=device)
        for error in outputs.skipped:
            notes.append(f"Essential dynamics skipped checkpoint step {error.step}, which cannot be loaded: {error}")
        ed = essential_dynamics(outputs.outputs, outputs.steps)
        boundaries = [int(s) for s in ed.boundary_steps]
        figure = figures.essential_dynamics_plot(ed, stages, out / "essential_dynamics.png")
        atomic_write_text(out / "essential_dynamics.csv",
                          pd.DataFrame({"boundary_step": boundaries}).to_csv(index=False))
        return boundaries, figure
    except (ValueError, FileNotFoundError) as e:
        notes.append(f"Essential dynamics not possible: {e}")
        return [], None


def _stage_row(i: int, s) -> str:
    """One stage as an HTML table row; its classes (type, robustness) colour it."""
    robustness = html.escape(str(getattr(s, ROBUSTNESS_COLUMN, "")))
    return (f"<tr class='t{html.escape(str(s.type))} {robustness}'><td>{i + 1}</td><td>{s.type}</td>"
            f"<td>{s.start_step}</td><td>{s.end_step}</td><td>{s.llc_start:.3g} → {s.llc_end:.3g}</td>"
            f"<td>{s.loss_start:.3g} → {s.loss_end:.3g}</td><td>{s.confidence:.3f}</td><td>{robustness}</td>"
            f"<td>{html.escape(str(s.evidence))}</td></tr>")


def render_html(run_dir: Path, report: Report) -> str:
    """One self-contained page: figures inlined as base64 PNG, no external assets."""
    rows = "".join(_stage_row(i, s) for i, s in enumerate(report.stages.itertuples()))
    images = "".join(
        f"<figure><img alt='{p.stem}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
        f"</figure>" for p in report.figures)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    ed = ", ".join(map(str, report.ed_boundaries)) or "none"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>devinterp report: {html.escape(run_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
tr.tA td:nth-child(2) {{ color: #1f77b4; font-weight: bold; }} tr.tB td:nth-child(2) {{ color: #ff7f0e; font-weight: bold; }}
tr.fragile td:nth-child(8) {{ color: #d62728; font-weight: bold; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Developmental stages of {html.escape(str(run_dir))}</h1>
<p>Stage boundaries are critical points of the smoothed LLC curve against ln(step + 1). <b style="color:#1f77b4">Type A</b>:
LLC rises significantly (complexity grows). <b style="color:#ff7f0e">Type B</b>: LLC falls significantly (the model
simplifies). The type comes from the sign of the LLC change (Hoogland et al. 2024); the loss change is evidence, given
beside it as a fraction of the loss's range. Confidence: posterior probability that the LLC moved in the stage's
direction. Robustness: an A or B stage is <b>fragile</b> when another LLC series of this run (other settings) or
another seed has no stage of the same type overlapping it, or when its LLC change is smaller than the spread of the
chains (the median std over chains within the stage); robust otherwise (blank: nothing to judge).
The evidence names the movers: the metrics that changed most over the stage, as a fraction of their range.</p>
<table><tr><th>#</th><th>type</th><th>start step</th><th>end step</th><th>LLC</th><th>loss</th><th>confidence</th>
<th>robustness</th><th>evidence</th></tr>{rows}</table>
<p>Essential-dynamics boundary candidates (steps): {ed}</p>
<ul>{notes}</ul>
{images}
</body></html>
"""
