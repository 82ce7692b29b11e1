"""The key numbers of language-model stage runs (experiment=lm_stages), for the README and closing notes.

    python scripts/lm_stages_summary.py RUN_DIR [RUN_DIR ...]

Per run (after `devinterp-report`, whose report/stages.csv it prints):
- the LLC at each measured checkpoint beside the loss, the n-gram scores, the ICL score and the strongest
  previous-token and prefix-matching heads;
- when things form: the step where the bigram score (ngram/kl_2) is lowest (the model matches the corpus
  bigrams, then moves beyond them), and the steps where the strongest previous-token and prefix-matching
  scores first cover half and 90 % of their rise over the run;
- the smallest LLC fall the report could call a robust B there: MIN_SPREADS chain spreads (the median
  std over chains of the checkpoints measured while the previous-token score rises).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from devinterp.store.metrics import read_metrics
from devinterp.store.run_dir import REPORT_DIRNAME, STAGES_FILE
from devinterp.transitions.metrics import to_wide
from devinterp.transitions.robustness import MIN_SPREADS

COLUMNS = {"llc/mean": "llc", "llc/std": "llc_std", "llc/healthy": "healthy", "train/fixed_loss": "train_loss",
           "eval/loss": "eval_loss", "ngram/kl_2": "kl_2", "ngram/kl_3": "kl_3", "eval/icl_score": "icl",
           "induction/previous_token_max": "prev_tok", "induction/prefix_matching_max": "prefix_match"}


def wide(run_dir: Path) -> pd.DataFrame:
    table = to_wide(read_metrics(run_dir))
    return table[[name for name in COLUMNS if name in table.columns]].rename(columns=COLUMNS)


def rise_step(series: pd.Series, fraction: float) -> int | None:
    """The first step where `series` has covered `fraction` of its rise from its first value to its maximum."""
    series = series.dropna()
    if series.empty:
        return None
    start, top = series.iloc[0], series.max()
    return int(series.index[np.argmax(series.values >= start + fraction * (top - start))])


def summarize(run_dir: Path) -> None:
    table = wide(run_dir)
    print(f"\n=== {run_dir}")
    measured = table[table["llc"].notna()] if "llc" in table else table.iloc[0:0]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(measured.round(3).to_string())
    forms = {"bigram score lowest": int(table["kl_2"].idxmin()) if "kl_2" in table else None}
    for name in ("prev_tok", "prefix_match"):
        if name in table:
            half, most = rise_step(table[name], 0.5), rise_step(table[name], 0.9)
            first, last = table[name].dropna().iloc[[0, -1]]
            forms[f"{name} {first:.3f} -> {last:.3f} (max {table[name].max():.3f}): half / 90 % of its rise at"] = \
                f"{half} / {most}"
    for what, step in forms.items():
        print(f"{what}: {step}")
    if len(measured) and "prev_tok" in table:
        start, end = rise_step(table["prev_tok"], 0.1), rise_step(table["prev_tok"], 0.9)
        window = measured[(measured.index >= start) & (measured.index <= end)]
        spread = float(window["llc_std"].median()) if len(window) else float("nan")
        print(f"previous-token rise (10-90 %) {start}-{end}: {len(window)} LLC estimates inside, median chain "
              f"spread {spread:.3g}; a B there needs an LLC fall of >= {MIN_SPREADS * spread:.3g} to be robust")
    stages = run_dir / REPORT_DIRNAME / STAGES_FILE
    if stages.is_file():
        frame = pd.read_csv(stages)
        cols = [c for c in ("type", "start_step", "end_step", "llc_start", "llc_end", "loss_start", "loss_end",
                            "robustness") if c in frame]
        print(frame[cols].round(3).to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    for run_dir in parser.parse_args().run_dirs:
        summarize(run_dir)


if __name__ == "__main__":
    main()
