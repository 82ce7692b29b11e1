"""Optimizer and learning-rate schedule from an OptimConfig (the schema of configs/optim/)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional

import torch

from devinterp.core.errors import require


class OptimizerName(str, Enum):
    adamw = "adamw"
    sgd = "sgd"


class LRSchedule(str, Enum):
    constant = "constant"
    linear = "linear"  # linear decay to 0 after warmup
    cosine = "cosine"  # cosine decay to 0 after warmup


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    # adamw: added to √(second moment); larger values damp the huge steps Adam takes when gradients
    # become tiny (e.g. near zero training loss), which otherwise cause loss spikes
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    warmup_steps: int = 0
    schedule: LRSchedule = LRSchedule.constant
    grad_clip: Optional[float] = 1.0  # max global grad norm; null disables clipping

    def validate(self, steps: int) -> None:
        """Check values for a run of `steps` steps; raise SettingError naming the first bad key and value."""
        require(self.lr > 0, "lr", self.lr, "must be positive")
        require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        require(self.eps > 0, "eps", self.eps, "must be positive")
        require(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", list(self.betas),
                "must be two numbers in [0, 1)")
        require(0 <= self.warmup_steps < steps, "warmup_steps", self.warmup_steps, f"must be in [0, steps={steps})")
        require(self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip, "must be positive or null")


def build_optimizer(cfg: OptimConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == OptimizerName.adamw:
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of cfg.lr at `step`: linear warmup, then constant / linear / cosine decay to 0."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == LRSchedule.constant:
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    if cfg.schedule == LRSchedule.linear:
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, total_steps))
