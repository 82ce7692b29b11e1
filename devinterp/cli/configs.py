"""The apps' Hydra configs: where the YAML files are, and the schemas they extend.

The YAML files ship inside the package (`devinterp/configs/`, package data) and are found through
`importlib.resources`, so an installed wheel runs from any directory. Every config group is backed
by a dataclass registered here as `<option>_schema` (e.g. `task/induction_schema`), so a wrong key or
type is rejected when the config is composed. The dataclasses live beside the code they configure:
`TrainConfig` in `devinterp.training.config`, each model's and task's in its own module (found by
`model_schemas` and `task_schemas`), `ExecutorConfig` in `devinterp.analysis.executors`; the
analyze and report apps register their own top-level schema.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from devinterp.analysis.executors import ExecutorConfig
from devinterp.models import model_schemas
from devinterp.tasks import task_schemas
from devinterp.training.config import TrainConfig
from devinterp.training.loggers import LoggerConfig
from devinterp.training.optim import OptimConfig
from devinterp.training.schedule import CheckpointConfig

CONFIG_DIR = Path(str(importlib.resources.files("devinterp") / "configs"))


def register_configs() -> None:
    """Register the schemas of every config group; the YAML files extend them via their defaults lists."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for name, schema in model_schemas().items():
        store.store(group="model", name=f"{name}_schema", node=schema)
    for name, schema in task_schemas().items():
        store.store(group="task", name=f"{name}_schema", node=schema)
    store.store(group="optim", name="optim_schema", node=OptimConfig)
    store.store(group="checkpoints", name="checkpoints_schema", node=CheckpointConfig)
    store.store(group="logger", name="logger_schema", node=LoggerConfig)
    store.store(group="executor", name="executor_schema", node=ExecutorConfig)


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """The config the app over `<config_name>.yaml` would run with for `overrides` (outside a Hydra app)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name=config_name):
        return compose(config_name=config_name, overrides=overrides)
