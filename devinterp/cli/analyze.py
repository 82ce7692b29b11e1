"""`devinterp-analyze` (also `python -m devinterp.cli.analyze`): callbacks over saved checkpoints.

    devinterp-analyze run_dir=runs/induction/<run>                  # default callbacks
    devinterp-analyze run_dir=... callbacks=[loss,induction]         # a chosen set
    devinterp-analyze run_dir=... callbacks.induction.num_sequences=128   # new settings: new entries
    devinterp-analyze run_dir=... executor=process                   # this machine's cores
    devinterp-analyze run_dir=... executor=ray executor.address=auto # an existing Ray cluster
    devinterp-analyze run_dir=... follow=true callbacks=study        # beside a running training run

Re-running skips (checkpoint, callback, settings) results already stored. Prints the time split
per callback at the end. Exit codes: 0 when everything asked for is stored; 1 when some callback
runs failed (a damaged checkpoint, a callback that raised): the last line gives their count and
where they are recorded (`<run_dir>/failures/`), and re-running retries them; 2 for bad
configuration (one line naming the key, before any work starts). With follow=true it
measures each checkpoint as it lands and exits when the run is finished and everything is stored
(code 0), or, with code 1 and a message, when training failed or the trainer fell silent for
stale_after seconds (see devinterp.analysis.follow).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from devinterp.analysis import analyze
from devinterp.analysis.executors import ExecutorConfig, ExecutorName
from devinterp.analysis.follow import DEFAULT_POLL_SECONDS, DEFAULT_STALE_AFTER, FollowResult, follow_run
from devinterp.analysis.posthoc import AnalysisResult, log_results
from devinterp.callbacks import Callback, build_callbacks
from devinterp.cli.configs import CONFIG_DIR, register_configs
from devinterp.cli.errors import EXIT_FAILED, preflight
from devinterp.core.devices import Device, resolve_device
from devinterp.core.errors import ConfigError
from devinterp.store import checkpoints
from devinterp.store.results import FAILURES_DIRNAME
from devinterp.store.run_dir import RUN_CONFIG_FILE, read_run_config
from devinterp.training.loggers import LoggerConfig, build_logger


@dataclass
class AnalyzeConfig:
    """Schema of configs/analyze.yaml."""

    run_dir: str = MISSING
    callbacks: Dict[str, Any] = field(default_factory=dict)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # wandb: into the run's own wandb run
    steps: Optional[List[int]] = None  # only these checkpoint steps (default: every due one)
    device: Device = Device.auto
    progress: bool = True
    follow: bool = False  # measure checkpoints as they land until the run is finished (devinterp.analysis.follow)
    poll_seconds: float = DEFAULT_POLL_SECONDS  # follow: seconds between looks at the run directory
    stale_after: float = DEFAULT_STALE_AFTER  # follow: give up when the trainer's status is this many seconds old


PROG = "devinterp-analyze"
register_configs()
ConfigStore.instance().store(name="analyze_schema", node=AnalyzeConfig)


def check_analyze_config(cfg: DictConfig) -> None:
    analyze_cfg: AnalyzeConfig = OmegaConf.to_object(cfg)
    run_dir = Path(analyze_cfg.run_dir)
    if not (run_dir / RUN_CONFIG_FILE).is_file():
        raise ConfigError(f"run_dir={analyze_cfg.run_dir!r}: not a devinterp run directory (no {RUN_CONFIG_FILE})")
    if analyze_cfg.follow:
        check_follow_config(analyze_cfg)
    available = [info.step for info in checkpoints.list_checkpoints(run_dir)]
    if not available and not analyze_cfg.follow:
        raise ConfigError(f"run_dir={analyze_cfg.run_dir!r}: the run has no complete checkpoint yet")
    missing = sorted(set(analyze_cfg.steps or []) - set(available))
    if missing:
        raise ConfigError(f"steps={missing}: no checkpoint at these steps in {run_dir}")
    if analyze_cfg.executor.name == ExecutorName.ray:
        try:
            import ray  # noqa: F401  (only whether it is there: Ray is an optional extra)
        except ImportError:
            raise ConfigError("executor=ray: Ray is not installed (pip install -e '.[ray]')") from None
    if not build_callbacks(cfg.callbacks):
        raise ConfigError("callbacks: none selected")


def check_follow_config(analyze_cfg: AnalyzeConfig) -> None:
    if analyze_cfg.executor.name != ExecutorName.local:
        raise ConfigError(f"executor={analyze_cfg.executor.name.value}: follow=true measures one checkpoint at a "
                          f"time as it lands, in this process (executor=local)")
    if analyze_cfg.steps is not None:
        raise ConfigError("steps: follow=true measures every due checkpoint; steps= is for a one-off analysis")
    for key in ("poll_seconds", "stale_after"):
        if not getattr(analyze_cfg, key) > 0:
            raise ConfigError(f"{key}={getattr(analyze_cfg, key)!r}: must be positive")


def run_follower(cfg: DictConfig) -> FollowResult:
    """`follow=true`: measure checkpoints as they land; exits with the follower's code."""
    analyze_cfg: AnalyzeConfig = OmegaConf.to_object(cfg)
    callbacks = build_callbacks(cfg.callbacks)
    result = follow_run(Path(analyze_cfg.run_dir), callbacks, device=str(resolve_device(analyze_cfg.device)),
                        poll_seconds=analyze_cfg.poll_seconds, stale_after=analyze_cfg.stale_after,
                        progress=analyze_cfg.progress)
    split = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(result.callback_seconds.items()))
    print(result.message + (f" (callbacks: {split})" if split else ""),
          file=sys.stdout if result.exit_code == 0 else sys.stderr)
    _log_to_logger(analyze_cfg, result.run_dir, result.steps_analysed, callbacks)
    return result


def _log_to_logger(analyze_cfg: AnalyzeConfig, run_dir: Path, steps: list[int], callbacks: list[Callback]) -> None:
    if not steps:
        return
    logger = build_logger(analyze_cfg.logger, run_dir, None, group=read_run_config(run_dir)["name"])
    try:
        log_results(logger, run_dir, steps, callbacks)
    finally:
        logger.finish()


def run_analysis(cfg: DictConfig) -> AnalysisResult:
    analyze_cfg: AnalyzeConfig = OmegaConf.to_object(cfg)
    callbacks = build_callbacks(cfg.callbacks)
    result = analyze(
        Path(analyze_cfg.run_dir),
        callbacks,
        executor=analyze_cfg.executor,
        device=str(resolve_device(analyze_cfg.device)),
        steps=analyze_cfg.steps,
        progress=analyze_cfg.progress,
    )
    split = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(result.callback_seconds.items()))
    print(f"analysed {len(result.steps_analysed)} checkpoints of {result.run_dir} in {result.seconds:.1f} s"
          + (f" (callbacks: {split})" if split else " (nothing left to do)"))
    _log_to_logger(analyze_cfg, result.run_dir, result.steps_analysed, callbacks)
    if result.failures:
        print(failure_summary(result), file=sys.stderr)
    return result


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def failure_summary(result: AnalysisResult) -> str:
    """One line: how many callback runs failed, which checkpoints could not be read, where to look."""
    line = f"{PROG}: {plural(result.failures, 'callback run')} failed"
    if result.unreadable:
        steps = ", ".join(map(str, sorted(result.unreadable)))
        line += f" ({plural(len(result.unreadable), 'checkpoint')} could not be read: step {steps})"
    return line + f"; details in {result.run_dir / FAILURES_DIRNAME}/ (re-run to retry them)"


@hydra.main(config_path=str(CONFIG_DIR), config_name="analyze", version_base="1.3")
def hydra_app(cfg: DictConfig) -> None:
    if cfg.follow:
        sys.exit(run_follower(cfg).exit_code)
    result = run_analysis(cfg)
    if result.failures:
        raise SystemExit(EXIT_FAILED)


def main() -> None:
    preflight(PROG, CONFIG_DIR, "analyze", sys.argv[1:], check=check_analyze_config, error_types=(ConfigError,))
    hydra_app()


if __name__ == "__main__":
    main()
