"""The apps' Hydra schemas: registered in Hydra's ConfigStore, so the YAML files in configs/ extend them.

The schemas themselves live beside the code they configure (`devinterp.training.config.TrainConfig`,
each task's and model's in its module, ...); `AnalyzeConfig` and `ReportConfig` configure the apps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from devinterp.analysis.executors import ExecutorConfig
from devinterp.core.devices import Device
from devinterp.models import model_schemas
from devinterp.tasks import task_schemas
from devinterp.training.config import TrainConfig
from devinterp.training.loggers import LoggerConfig
from devinterp.training.optim import OptimConfig
from devinterp.training.schedule import CheckpointConfig


# ----------------------------------------------------------------------------- analyze.yaml
@dataclass
class AnalyzeConfig:
    run_dir: str = MISSING
    callbacks: Dict[str, Any] = field(default_factory=dict)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # wandb: into the run's own wandb run
    steps: Optional[List[int]] = None  # only these checkpoint steps (default: every due one)
    device: Device = Device.auto
    progress: bool = True
    follow: bool = False  # measure checkpoints as they land until the run is finished (devinterp.analysis.follow)
    poll_seconds: float = 2.0  # follow: seconds between looks at the run directory
    stale_after: float = 600.0  # follow: give up when the trainer's status is this many seconds old


# ----------------------------------------------------------------------------- report.yaml
@dataclass
class ReportConfig:
    run_dir: str = MISSING
    llc: str = "llc/mean"  # metric whose critical points bound the stages
    llc_std: Optional[str] = "llc/std"  # its chain-to-chain spread
    llc_settings: Optional[str] = None  # settings hash of the primary LLC series; default: the run's own
    loss: str = "train/fixed_loss"  # the loss beside the LLC in the stage table (eval/loss if absent)
    ed_examples: int = 32  # eval sequences whose outputs feed essential dynamics
    device: Device = Device.auto
    out_dir: Optional[str] = None  # where the report goes; default <run_dir>/report
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # wandb: stages and figures to the run's wandb run


def register_configs() -> None:
    """Register the schemas; YAML files in configs/ extend them via their defaults lists."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    for name, schema in model_schemas().items():
        cs.store(group="model", name=f"{name}_schema", node=schema)
    for name, schema in task_schemas().items():
        cs.store(group="task", name=f"{name}_schema", node=schema)
    cs.store(group="optim", name="optim_schema", node=OptimConfig)
    cs.store(group="checkpoints", name="checkpoints_schema", node=CheckpointConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    cs.store(name="analyze_schema", node=AnalyzeConfig)
    cs.store(name="report_schema", node=ReportConfig)
    cs.store(group="executor", name="executor_schema", node=ExecutorConfig)
