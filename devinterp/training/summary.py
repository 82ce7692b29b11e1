"""A short, human-readable summary of a finished training run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from devinterp.store import checkpoints
from devinterp.store.metrics import metric_series, read_metrics
from devinterp.store.run_dir import read_run_config

MIN_DROP_NATS = 0.5


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    steps: int
    final_train_loss: float | None
    final_eval_loss: float | None
    drop_metric: str | None  # the in-context loss the drop was measured on
    drop_step: int | None  # first checkpoint step past the midpoint of the drop; None: no drop
    loss_before_drop: float | None
    loss_after_drop: float | None
    num_checkpoints: int
    checkpoint_bytes: int
    train_seconds: float | None  # wall time recorded at the last checkpoint (training + callbacks)


def loss_drop_step(series: pd.Series, min_drop: float = MIN_DROP_NATS) -> int | None:
    """Step at which a loss curve (indexed by step) completes half of its overall fall.

    The fall is from the highest value seen up to the curve's minimum to its final value; if that
    is less than `min_drop` nats there is no drop (None). Returns the first step after the
    maximum whose value is below the midpoint.
    """
    if len(series) < 2:
        return None
    series = series.sort_index()
    peak_step = series.idxmax()
    high, low = series.max(), series.iloc[-1]
    if high - low < min_drop:
        return None
    after_peak = series.loc[peak_step:]
    return int(after_peak[after_peak < (high + low) / 2].index[0])


def summarize_run(run_dir: Path) -> RunSummary:
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    metrics = read_metrics(run_dir)
    infos = checkpoints.list_checkpoints(run_dir)

    def last(name: str) -> float | None:
        series = metric_series(metrics, name)
        return float(series.iloc[-1]) if len(series) else None

    drop_metric = next((m for m in ("eval/loss_repeated", "eval/loss") if m in set(metrics["name"])), None)
    drop_step = before = after = None
    if drop_metric:
        curve = metric_series(metrics, drop_metric)
        drop_step = loss_drop_step(curve)
        before, after = float(curve.max()), float(curve.iloc[-1])
    return RunSummary(
        run_dir=run_dir,
        steps=int(config["steps"]),
        final_train_loss=last("train/loss"),
        final_eval_loss=last("eval/loss"),
        drop_metric=drop_metric,
        drop_step=drop_step,
        loss_before_drop=before,
        loss_after_drop=after,
        num_checkpoints=len(infos),
        checkpoint_bytes=sum(i.bytes for i in infos),
        train_seconds=infos[-1].wall_time if infos else None,
    )


def format_summary(s: RunSummary) -> str:
    parts = [f"Trained {s.steps} steps" + (f" in {s.train_seconds:.0f} s." if s.train_seconds else ".")]
    if s.final_eval_loss is not None:
        parts.append(f"Final eval loss {s.final_eval_loss:.3f} nats"
                     + (f", last train-batch loss {s.final_train_loss:.3f}." if s.final_train_loss is not None else "."))
    if s.drop_metric and s.drop_step is not None:
        parts.append(f"The in-context loss ({s.drop_metric}) dropped from {s.loss_before_drop:.3f} to "
                     f"{s.loss_after_drop:.3f} nats, crossing the midpoint at step {s.drop_step}.")
    elif s.drop_metric:
        parts.append(f"No drop of at least {MIN_DROP_NATS} nats in {s.drop_metric} "
                     f"(from {s.loss_before_drop:.3f} to {s.loss_after_drop:.3f}).")
    parts.append(f"{s.num_checkpoints} checkpoints, {s.checkpoint_bytes / 2**20:.1f} MiB in "
                 f"{s.run_dir / 'checkpoints'}.")
    return " ".join(parts)


def format_time_split(train_seconds: float, steps_trained: int, callback_seconds: dict[str, float],
                      follower_lag: float | None = None) -> str:
    """The time split: training (optimizer steps only) and each callback, with callback seconds as
    multiples of the training seconds ("x training"), the monitor's overhead ratio.

    With a follower (`follower_lag` given) the callbacks ran in another process beside training, so
    they did not add to its time; the lag is how long after training the follower was done."""
    rate = steps_trained / train_seconds if train_seconds else float("nan")
    line = f"Time: training {train_seconds:.1f} s ({rate:.1f} steps/s)"
    if not callback_seconds:
        return line + "."

    def ratio(seconds: float) -> str:
        return f"{seconds / train_seconds:.2f}x" if train_seconds else "n/a"

    total = sum(callback_seconds.values())
    parts = ", ".join(f"{name} {seconds:.1f} s ({ratio(seconds)})" for name, seconds in callback_seconds.items())
    where = " in a follower process beside training" if follower_lag is not None else ""
    line += f"; callbacks{where} {total:.1f} s = {ratio(total)} training: {parts}."
    if follower_lag is not None:
        line += f" The follower was done {follower_lag:.1f} s after training."
    return line
