"""Experiment loggers: metrics go to the run directory always, and to wandb when configured."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol

from devinterp.config import LoggerConfig, LoggerName

WANDB_ID_FILE = "wandb_id.txt"


class MetricLogger(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def finish(self) -> None: ...


class NullLogger:
    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbLogger:
    """wandb run stored under `<run_dir>/wandb`, x-axis = training step.

    The wandb run id is kept in `<run_dir>/wandb_id.txt`, so a resumed training run (or a later
    post-hoc analysis) logs into the same wandb run. Offline mode needs no account or network.
    """

    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict, group: str):
        import wandb

        id_file = Path(run_dir) / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            mode=cfg.mode.value,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            name=Path(run_dir).name,
            group=group,
            tags=list(cfg.tags),
            config=config,
        )
        self.run.define_metric("trainer/step")
        self.run.define_metric("*", step_metric="trainer/step")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({"trainer/step": step, **metrics})

    def finish(self) -> None:
        self.run.finish()


def build_logger(cfg: LoggerConfig, run_dir: Path, config: dict, group: str) -> MetricLogger:
    if cfg.name == LoggerName.wandb:
        return WandbLogger(cfg, run_dir, config, group)
    return NullLogger()
