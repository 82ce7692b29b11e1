"""Experiment loggers: metrics go to the run directory always, and to wandb when configured.

wandb conventions: every value is logged against `trainer/step` (the training step, also for
post-hoc results logged later), names keep their group prefix (`train/`, `eval/`, `llc/`,
`hessian/`, `induction/`, ...), the resolved config is the run config, and multirun jobs of one
experiment share a wandb group (the experiment name).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol

from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional

import numpy as np
import pandas as pd

WANDB_ID_FILE = "wandb_id.txt"


class LoggerName(str, Enum):
    none = "none"
    wandb = "wandb"


class WandbMode(str, Enum):
    offline = "offline"  # no account or network needed; `wandb sync` later
    online = "online"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    """Schema of configs/logger/."""

    name: LoggerName = LoggerName.none
    project: str = "devinterp"
    entity: Optional[str] = None
    mode: WandbMode = WandbMode.offline
    tags: List[str] = field(default_factory=list)


class MetricLogger(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def log_arrays(self, step: int, arrays: dict[str, np.ndarray]) -> None: ...

    def log_table(self, name: str, table: pd.DataFrame) -> None: ...

    def log_images(self, images: dict[str, Path]) -> None: ...

    def finish(self) -> None: ...


class NullLogger:
    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def log_arrays(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        pass

    def log_table(self, name: str, table: pd.DataFrame) -> None:
        pass

    def log_images(self, images: dict[str, Path]) -> None:
        pass

    def finish(self) -> None:
        pass


def array_table(array: np.ndarray) -> pd.DataFrame:
    """A 1-D or 2-D array in long format: columns `i` (and `j`) and `value`.
    For an LLC loss trace (chains, draws): i = chain, j = draw."""
    array = np.asarray(array)
    if array.ndim == 1:
        return pd.DataFrame({"i": np.arange(len(array)), "value": array})
    i, j = np.indices(array.shape)
    return pd.DataFrame({"i": i.ravel(), "j": j.ravel(), "value": array.ravel()})


class WandbLogger:
    """The wandb run of a run directory, stored under `<run_dir>/wandb`.

    Its id is kept in `<run_dir>/wandb_id.txt`, so a resumed training run, a post-hoc analysis or
    a report logs into the same wandb run. Offline mode needs no account or network.
    """

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict | None, group: str):
        import wandb  # here, not at the top: wandb takes seconds to import and most runs do not log to it

        self.wandb = wandb
        id_file = Path(run_dir) / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, mode=cfg.mode.value, dir=str(run_dir),
                              id=run_id, resume="allow", name=Path(run_dir).name, group=group,
                              tags=list(cfg.tags), config=config)
        self.run.define_metric("trainer/step")
        self.run.define_metric("*", step_metric="trainer/step")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if metrics:
            self.run.log({"trainer/step": step, **metrics})

    def log_arrays(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        tables = {name: self.wandb.Table(dataframe=array_table(a)) for name, a in arrays.items()
                  if np.asarray(a).ndim in (1, 2)}
        if tables:
            self.run.log({"trainer/step": step, **tables})

    def log_table(self, name: str, table: pd.DataFrame) -> None:
        self.run.log({name: self.wandb.Table(dataframe=table)})

    def log_images(self, images: dict[str, Path]) -> None:
        self.run.log({name: self.wandb.Image(str(path)) for name, path in images.items()})

    def finish(self) -> None:
        self.run.finish()


def build_logger(cfg: LoggerConfig, run_dir: Path, config: dict | None, group: str) -> MetricLogger:
    if cfg.name == LoggerName.wandb:
        return WandbLogger(cfg, run_dir, config, group)
    return NullLogger()
