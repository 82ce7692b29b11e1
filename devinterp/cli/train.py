"""`devinterp-train` (also `python -m devinterp.train`): the Hydra training app.

    devinterp-train                                  # default induction run
    devinterp-train steps=500 optim.lr=3e-4 model.n_layers=1
    devinterp-train experiment=markov_icl
    devinterp-train -m seed=0,1,2                    # one run directory per job
    devinterp-train resume=true run_dir=runs/induction/2026-11-23_16-00-00_seed0
    devinterp-train callbacks=study analyze=follow   # callbacks in a follower process beside training

Bad configuration exits with code 2 and one line naming the key and value; nothing is created.
A failed write (a full disk, a read-only directory) exits with code 1 and one line naming the
file; the run can be resumed once the cause is fixed.
A resumed run keeps the config stored in its run directory; only `device`, `progress`, `logger`,
`analyze` and `follower_threads` may be given anew.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

import hydra
import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from devinterp.analysis.follow import Follower
from devinterp.callbacks import build_callbacks
from devinterp.cli.configs import CONFIG_DIR, compose_config, register_configs
from devinterp.cli.errors import EXIT_FAILED, fail, override_key, preflight, split_argv
from devinterp.core.devices import resolve_device
from devinterp.core.errors import ConfigError
from devinterp.core.logfile import log_to_file, stop_logging_to_file
from devinterp.store import checkpoints
from devinterp.store.atomic import atomic_write_text
from devinterp.store.results import ResultStore
from devinterp.store.run_dir import (LOG_FILE, OVERRIDES_FILE, RUN_CONFIG_FILE, read_run_config, unique_run_dir,
                                     write_status)
from devinterp.training.config import AnalyzeMode, TrainConfig, validate_train_config
from devinterp.training.loggers import build_logger
from devinterp.training.summary import format_summary, format_time_split, summarize_run
from devinterp.training.trainer import TrainResult, train

PROG = "devinterp-train"
# Top-level keys a resumed run may take from the command line; the rest comes from the run dir.
RESUMABLE_KEYS = {"resume", "run_dir", "device", "progress", "logger", "analyze", "follower_threads"}

log = logging.getLogger("devinterp")
register_configs()


def compose_train_config(overrides: list[str]) -> DictConfig:
    """The config `devinterp-train <overrides>` would run with (outside a Hydra app)."""
    return compose_config("train", overrides)


def check_train_config(cfg: DictConfig) -> None:
    validate_train_config(OmegaConf.to_object(cfg))
    build_callbacks(cfg.callbacks)


def _is_resumable(override: str) -> bool:
    return override_key(override).split(".")[0].split("/")[0] in RESUMABLE_KEYS


def resume_config(requested: DictConfig, overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """Config and overrides of a resumed run: the run's own, plus the resumable overrides.

    Raises ConfigError if an override would change the stored config, or if configs/ changed
    since the run started so that its config can no longer be recomposed.
    """
    run_dir = Path(requested.run_dir)
    stored = OmegaConf.create(read_run_config(run_dir))
    for override in overrides:
        key = override_key(override)
        if not _is_resumable(override) and OmegaConf.select(requested, key) != OmegaConf.select(stored, key):
            raise ConfigError(
                f"{key}={OmegaConf.select(requested, key)!r}: a resumed run keeps its stored value "
                f"{OmegaConf.select(stored, key)!r} (from {run_dir / RUN_CONFIG_FILE})"
            )
    stored_overrides = yaml.safe_load((run_dir / OVERRIDES_FILE).read_text()) or []
    merged = [o for o in stored_overrides if not _is_resumable(o)] + [o for o in overrides if _is_resumable(o)]
    cfg = compose_train_config(merged)
    recomposed = without_targets(OmegaConf.to_container(cfg, resolve=True))
    stored_plain = without_targets(OmegaConf.to_container(stored, resolve=True))
    for key in set(recomposed) | set(stored_plain):
        if key not in RESUMABLE_KEYS and recomposed.get(key) != stored_plain.get(key):
            raise ConfigError(f"{key}: configs/ changed since {run_dir} started; cannot resume it exactly")
    return cfg, merged


def without_targets(config):
    """`config` (plain containers) without its `_target_` keys: they say where the code that builds a
    model, task or callback lives, which may move (runs from before tasks had one have none), not what
    the run computes."""
    if isinstance(config, dict):
        return {key: without_targets(value) for key, value in config.items() if key != "_target_"}
    if isinstance(config, list):
        return [without_targets(value) for value in config]
    return config


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return unique_run_dir(Path(cfg.runs_root) / cfg.name / f"{stamp}_seed{cfg.seed}")


def prepare_run_dir(cfg: DictConfig, train_cfg: TrainConfig, overrides: list[str]) -> Path:
    """Create the run directory (reopen it when resuming) and store config and overrides."""
    if train_cfg.resume:
        return Path(train_cfg.run_dir)
    run_dir = unique_run_dir(Path(train_cfg.run_dir)) if train_cfg.run_dir else default_run_dir(train_cfg)
    run_dir.mkdir(parents=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["run_dir"] = str(run_dir)
    atomic_write_text(run_dir / RUN_CONFIG_FILE, OmegaConf.to_yaml(resolved))
    atomic_write_text(run_dir / OVERRIDES_FILE, yaml.safe_dump([o for o in overrides if not o.startswith("run_dir=")]))
    return run_dir


def run(cfg: DictConfig, overrides: list[str]) -> TrainResult:
    """Validate `cfg`, create the run directory and train. Returns the TrainResult."""
    train_cfg: TrainConfig = OmegaConf.to_object(cfg)
    validate_train_config(train_cfg)
    callbacks = build_callbacks(cfg.callbacks)
    run_dir = prepare_run_dir(cfg, train_cfg, overrides)
    if train_cfg.resume:
        checkpoints.remove_incomplete(run_dir)
        ResultStore(run_dir).remove_stale_locks()
    log_to_file(run_dir / LOG_FILE)
    log.info("run directory %s", run_dir)
    logger = build_logger(train_cfg.logger, run_dir, OmegaConf.to_container(cfg, resolve=True), group=train_cfg.name)
    follower = None
    threads = torch.get_num_threads()  # start_follower gives training fewer; restored when it ends
    if train_cfg.analyze == AnalyzeMode.follow and callbacks:
        follower = start_follower(train_cfg, run_dir, OmegaConf.to_container(cfg.callbacks, resolve=True))
        callbacks = []
    try:
        result = train(train_cfg, run_dir, logger, callbacks)
    except BaseException:
        log.exception("training failed")
        try:
            write_status(run_dir, "failed", checkpoints.latest_step(run_dir) or 0)
        except OSError:
            log.exception("could not mark the run failed")  # e.g. the disk is still full
        raise
    finally:
        logger.finish()
        stop_logging_to_file()
        torch.set_num_threads(threads)
    if follower is not None:
        if train_cfg.progress:
            print("training done; waiting for the follower to measure the last checkpoints", file=sys.stderr)
        outcome = follower.wait()
        result = dataclasses.replace(result, callback_seconds=outcome.get("seconds") or {},
                                     follower_lag_seconds=outcome.get("lag_seconds"))
    return result


def run_or_exit(cfg: DictConfig, overrides: list[str]) -> TrainResult:
    """`run`, but an OSError (full disk, read-only directory) exits 1 with one line naming the file."""
    try:
        return run(cfg, overrides)
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None


def start_follower(train_cfg: TrainConfig, run_dir: Path, callbacks_cfg: dict) -> Follower:
    """`analyze=follow`: the callbacks go to a follower process (devinterp.analysis.follow) with
    `follower_threads` torch threads (default half the cores); training keeps the other cores."""
    cores = os.cpu_count() or 1
    threads = train_cfg.follower_threads or max(1, cores // 2)
    torch.set_num_threads(max(1, cores - threads))
    log.info("analyze=follow: follower with %d threads, training with %d", threads, torch.get_num_threads())
    return Follower(run_dir, callbacks_cfg, device=str(resolve_device(train_cfg.device)), threads=threads)


def run_summary(result: TrainResult) -> str:
    """What devinterp-train prints at the end of a run: its directory, summary and time split."""
    return "\n".join([f"run directory: {result.run_dir}", format_summary(summarize_run(result.run_dir)),
                      format_time_split(result.train_seconds, result.steps_trained, result.callback_seconds,
                                        follower_lag=result.follower_lag_seconds)])


def report(result: TrainResult) -> None:
    print(run_summary(result))


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def hydra_app(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.lstrip("+~").startswith("hydra")]
    if hydra_cfg.mode == RunMode.MULTIRUN and cfg.run_dir is None:
        cfg = cfg.copy()
        cfg.run_dir = str(Path(hydra_cfg.sweep.dir) / f"{hydra_cfg.job.num}_seed{cfg.seed}")
    report(run_or_exit(cfg, overrides))


def main() -> None:
    argv = sys.argv[1:]
    configs = preflight(PROG, CONFIG_DIR, "train", argv, check=check_train_config, error_types=(ConfigError,))
    overrides, multirun = split_argv(argv)
    if configs and configs[0].resume:
        if multirun:
            fail(PROG, "resume=true cannot be combined with a multirun (-m)")
        try:
            cfg, merged = resume_config(configs[0], overrides)
        except ConfigError as e:
            fail(PROG, str(e))
        report(run_or_exit(cfg, merged))
        return
    hydra_app()


if __name__ == "__main__":
    main()
