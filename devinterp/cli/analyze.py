"""`devinterp-analyze` (also `python -m devinterp.cli.analyze`): callbacks over saved checkpoints.

    devinterp-analyze run_dir=runs/induction/<run>                  # default callbacks
    devinterp-analyze run_dir=... callbacks=[loss,induction]         # a chosen set
    devinterp-analyze run_dir=... callbacks.induction.num_sequences=128   # new settings: new entries
    devinterp-analyze run_dir=... executor=process                   # this machine's cores
    devinterp-analyze run_dir=... executor=ray executor.address=auto # an existing Ray cluster
    devinterp-analyze run_dir=... follow=true callbacks=study        # beside a running training run
    devinterp-analyze checkpoints=out/ data=tokens.npy callbacks=study   # checkpoint-<step>/ folders from elsewhere

With checkpoints=DIR (folders a Hugging Face Trainer or save_pretrained wrote, `checkpoint-<step>/`) and
data=FILE (token ids: .npy, .npz, .pt, .safetensors or a saved datasets directory), the folders are read
without running anything in them and imported into a run directory (run_dir=, default DIR/devinterp;
see devinterp.monitor.checkpoint_folders), which is then analysed like a run of ours and reported with
devinterp-report. Bad folders or data (none found, a folder name without a step, a config transformers
cannot build, unsafe or unreadable weights, token ids beyond the vocabulary, too few sequences) exit 2
with one line naming the file.

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
from omegaconf import DictConfig, OmegaConf

from devinterp.analysis import analyze
from devinterp.analysis.executors import ExecutorConfig, ExecutorName
from devinterp.analysis.follow import DEFAULT_POLL_SECONDS, DEFAULT_STALE_AFTER, FollowResult, follow_run
from devinterp.analysis.posthoc import AnalysisResult, check_run_config, log_results
from devinterp.callbacks import Callback, build_callbacks
from devinterp.cli.configs import CONFIG_DIR, register_configs
from devinterp.cli.errors import EXIT_FAILED, fail, preflight
from devinterp.core.devices import Device, resolve_device
from devinterp.core.errors import ConfigError
from devinterp.monitor import analyze_checkpoints
from devinterp.monitor.checkpoint_folders import check_input, default_run_dir
from devinterp.monitor.run_files import split_sample
from devinterp.store import checkpoints
from devinterp.store.results import FAILURES_DIRNAME
from devinterp.store.run_dir import RUN_CONFIG_FILE, read_run_config
from devinterp.training.loggers import LoggerConfig, build_logger


@dataclass
class AnalyzeConfig:
    """Schema of configs/analyze.yaml."""

    run_dir: Optional[str] = None  # the run to analyse; with checkpoints=: where the imported run goes
    # a folder of checkpoint-<step>/ folders written elsewhere; `checkpoints=` on the command line (see ALIASES)
    checkpoints_dir: Optional[str] = None
    data: Optional[str] = None  # checkpoints=: the token ids to measure on (a file or a datasets directory)
    seq_len: Optional[int] = None  # checkpoints=: cuts a 1-D token stream into sequences of this length
    seed: int = 0  # checkpoints=: seeds the data sample and the measurements
    eval_size: int = 256  # checkpoints=: held-out sequences of the data
    train_sample_size: int = 1024  # checkpoints=: training sequences the callbacks measure on
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
# `checkpoints=DIR` is the key users type; Hydra would take it for devinterp-train's config group of that
# name (configs/checkpoints/), so the app reads it as checkpoints_dir.
ALIASES = {"checkpoints": "checkpoints_dir"}
register_configs()
ConfigStore.instance().store(name="analyze_schema", node=AnalyzeConfig)


def check_analyze_config(cfg: DictConfig) -> None:
    analyze_cfg: AnalyzeConfig = OmegaConf.to_object(cfg)
    if analyze_cfg.checkpoints_dir is not None:
        check_checkpoints_config(analyze_cfg, cfg)
        return
    if analyze_cfg.data is not None:
        raise ConfigError(f"data={analyze_cfg.data!r}: only with checkpoints=DIR (a run directory has its own data)")
    if analyze_cfg.run_dir is None:
        raise ConfigError("run_dir: missing (the run directory to analyse), or give checkpoints=DIR data=FILE")
    run_dir = Path(analyze_cfg.run_dir)
    if not (run_dir / RUN_CONFIG_FILE).is_file():
        raise ConfigError(f"run_dir={analyze_cfg.run_dir!r}: not a devinterp run directory (no {RUN_CONFIG_FILE})")
    check_run_config(run_dir)
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


def check_checkpoints_config(analyze_cfg: AnalyzeConfig, cfg: DictConfig) -> None:
    """checkpoints=DIR data=FILE: the folders and the data (see devinterp.monitor.checkpoint_folders)."""
    if analyze_cfg.data is None:
        raise ConfigError(f"data: missing (the token ids to measure checkpoints={analyze_cfg.checkpoints_dir} on)")
    if analyze_cfg.follow or analyze_cfg.steps is not None:
        raise ConfigError(f"{'follow' if analyze_cfg.follow else 'steps'}: not with checkpoints= (every folder is "
                          "analysed once)")
    if analyze_cfg.seq_len is not None and analyze_cfg.seq_len < 2:
        raise ConfigError(f"seq_len={analyze_cfg.seq_len}: must be at least 2")
    for key in ("eval_size", "train_sample_size"):
        if getattr(analyze_cfg, key) <= 0:
            raise ConfigError(f"{key}={getattr(analyze_cfg, key)}: must be positive")
    checked = check_input(Path(analyze_cfg.checkpoints_dir), analyze_cfg.data, checkpoints_run_dir(analyze_cfg),
                          seq_len=analyze_cfg.seq_len)
    split_sample(checked.data, analyze_cfg.eval_size, analyze_cfg.train_sample_size, analyze_cfg.seed,
                 checked.data_name)
    if not build_callbacks(cfg.callbacks):
        raise ConfigError("callbacks: none selected")


def checkpoints_run_dir(analyze_cfg: AnalyzeConfig) -> Path:
    return Path(analyze_cfg.run_dir) if analyze_cfg.run_dir is not None else default_run_dir(analyze_cfg.checkpoints_dir)


def run_checkpoints_analysis(cfg: DictConfig) -> AnalysisResult:
    """checkpoints=DIR: import the folders into a run directory and analyse it."""
    analyze_cfg: AnalyzeConfig = OmegaConf.to_object(cfg)
    try:
        done = analyze_checkpoints(analyze_cfg.checkpoints_dir, analyze_cfg.data, checkpoints_run_dir(analyze_cfg),
                                   OmegaConf.to_container(cfg.callbacks, resolve=True), seq_len=analyze_cfg.seq_len,
                                   seed=analyze_cfg.seed, eval_size=analyze_cfg.eval_size,
                                   train_sample_size=analyze_cfg.train_sample_size,
                                   device=str(resolve_device(analyze_cfg.device)), executor=analyze_cfg.executor,
                                   progress=analyze_cfg.progress)
    except ConfigError as e:  # a folder found bad only when its weights are read
        fail(PROG, str(e))
    print(f"imported {len(done.imported)} checkpoints of {analyze_cfg.checkpoints_dir} into {done.run_dir}")
    report_analysis(analyze_cfg, done.analysis, build_callbacks(cfg.callbacks))
    return done.analysis


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
    logger = build_logger(analyze_cfg.logger, run_dir, None, group=read_run_config(run_dir).get("name"))
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
    report_analysis(analyze_cfg, result, callbacks)
    return result


def report_analysis(analyze_cfg: AnalyzeConfig, result: AnalysisResult, callbacks: list[Callback]) -> None:
    """What an analysis prints: the callbacks it skipped, its time split, its failures; its results to the logger."""
    for line in result.skipped:
        print(f"{PROG}: {line}", file=sys.stderr)
    split = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(result.callback_seconds.items()))
    print(f"analysed {len(result.steps_analysed)} checkpoints of {result.run_dir} in {result.seconds:.1f} s"
          + (f" (callbacks: {split})" if split else " (nothing left to do)"))
    _log_to_logger(analyze_cfg, result.run_dir, result.steps_analysed, callbacks)
    if result.failures:
        print(failure_summary(result), file=sys.stderr)


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
    result = run_checkpoints_analysis(cfg) if cfg.checkpoints_dir is not None else run_analysis(cfg)
    if result.failures:
        raise SystemExit(EXIT_FAILED)


def with_aliases(argv: list[str]) -> list[str]:
    """`checkpoints=DIR` -> `checkpoints_dir=DIR` (ALIASES); other arguments as they are."""
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        out.append(f"{ALIASES[key]}={value}" if eq and key in ALIASES else arg)
    return out


def main() -> None:
    sys.argv[1:] = with_aliases(sys.argv[1:])
    preflight(PROG, CONFIG_DIR, "analyze", sys.argv[1:], check=check_analyze_config, error_types=(ConfigError,))
    hydra_app()


if __name__ == "__main__":
    main()
