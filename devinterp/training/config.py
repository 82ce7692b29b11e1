"""The typed configuration of a training run (the schema of configs/train.yaml) and its value checks.

Every config group is backed by a dataclass: the model's and the task's in their own modules
(`devinterp.models`, `devinterp.tasks`), the optimizer's, the checkpoints' and the logger's beside
the code that uses them. A wrong key or a wrongly typed value is rejected when the config is composed;
`validate_train_config` then checks values that types cannot express (positive step counts, a
vocabulary large enough for the task, an existing text file, ...) and raises `ConfigError` naming the
key and the value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from omegaconf import MISSING

from devinterp.core.devices import Device
from devinterp.core.errors import ConfigError, SettingError, require
from devinterp.models import ModelConfig
from devinterp.store.run_dir import RUN_CONFIG_FILE
from devinterp.tasks import TaskConfig
from devinterp.training.loggers import LoggerConfig
from devinterp.training.optim import OptimConfig
from devinterp.training.schedule import CheckpointConfig


class AnalyzeMode(str, Enum):
    live = "live"  # the callbacks run inside the training loop, at their steps
    follow = "follow"  # a follower process measures each checkpoint as it lands (devinterp.analysis.follow)


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # {name: {_target_: devinterp.callbacks.X, schedule: {...}, settings...}}; see configs/callbacks/
    callbacks: Dict[str, Any] = field(default_factory=dict)
    train_sample_size: int = 1024  # fixed training sequences callbacks measure on (LLC data, grads)
    name: str = "induction"  # experiment name: runs go to <runs_root>/<name>/
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    device: Device = Device.auto
    runs_root: str = "runs"
    run_dir: Optional[str] = None  # default <runs_root>/<name>/<date>_<time>_seed<seed>
    resume: bool = False  # continue run_dir from its last complete checkpoint
    log_every: int = 5  # record train/loss every this many steps
    progress: bool = True  # progress bar on stderr
    analyze: AnalyzeMode = AnalyzeMode.live  # where the callbacks run: in the loop, or in a follower process
    follower_threads: Optional[int] = None  # analyze=follow: torch threads of the follower (default: half the cores)


def validate_train_config(cfg: TrainConfig) -> None:
    """Check values; raise ConfigError naming the first offending key and value."""
    groups = {"checkpoints": lambda: cfg.checkpoints.validate(cfg.steps),
              "optim": lambda: cfg.optim.validate(cfg.steps),
              "task": cfg.task.validate,
              "model": lambda: cfg.model.validate(cfg.task.name, cfg.task.needed_vocab_size(), cfg.task.seq_len)}
    try:
        _validate_run(cfg)
        for prefix, validate in groups.items():
            try:
                validate()
            except SettingError as e:
                raise e.within(prefix) from None
        _validate_device_and_resume(cfg)
    except SettingError as e:
        raise ConfigError(str(e)) from None


def _validate_run(cfg: TrainConfig) -> None:
    require(cfg.steps > 0, "steps", cfg.steps, "must be a positive number of training steps")
    require(cfg.batch_size > 0, "batch_size", cfg.batch_size, "must be positive")
    require(cfg.log_every > 0, "log_every", cfg.log_every, "must be positive")
    require(cfg.train_sample_size > 0, "train_sample_size", cfg.train_sample_size, "must be positive")
    require(cfg.follower_threads is None or cfg.follower_threads > 0, "follower_threads", cfg.follower_threads,
            "must be positive or null")


def _validate_device_and_resume(cfg: TrainConfig) -> None:
    require(cfg.device != Device.cuda or torch.cuda.is_available(), "device", "cuda",
            "CUDA is not available on this machine")
    if cfg.resume:
        require(cfg.run_dir is not None, "resume", True, "needs run_dir=<the run directory to continue>")
        require((Path(cfg.run_dir) / RUN_CONFIG_FILE).is_file(), "run_dir", cfg.run_dir,
                f"is not a devinterp run directory (no {RUN_CONFIG_FILE}) and cannot be resumed")
