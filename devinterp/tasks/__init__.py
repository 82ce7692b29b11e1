"""Deterministic, seeded, offline tasks; `build_task` turns a task config into a Task."""
from __future__ import annotations

from devinterp.config import (InductionTaskConfig, MarkovICLTaskConfig, ModularTaskConfig, TaskConfig,
                              TextTaskConfig)
from devinterp.tasks.base import IGNORE_INDEX, NextTokenTask, Task, derived_generator, icl_score
from devinterp.tasks.induction import InductionTask
from devinterp.tasks.markov_icl import MarkovICLTask
from devinterp.tasks.modular import ModularAdditionTask
from devinterp.tasks.text import TextTask

__all__ = ["IGNORE_INDEX", "NextTokenTask", "Task", "InductionTask", "MarkovICLTask", "ModularAdditionTask", "TextTask",
           "build_task", "derived_generator", "icl_score"]


def build_task(cfg: TaskConfig, seed: int) -> Task:
    if isinstance(cfg, InductionTaskConfig):
        return InductionTask(vocab_size=cfg.vocab_size, seq_len=cfg.seq_len, seed=seed,
                             eval_size=cfg.eval_size, min_period=cfg.min_period, max_period=cfg.max_period,
                             bigram_concentration=cfg.bigram_concentration)
    if isinstance(cfg, MarkovICLTaskConfig):
        return MarkovICLTask(num_states=cfg.num_states, seq_len=cfg.seq_len, seed=seed,
                             eval_size=cfg.eval_size, concentration=cfg.concentration)
    if isinstance(cfg, TextTaskConfig):
        return TextTask(path=cfg.path, seq_len=cfg.seq_len, seed=seed, eval_size=cfg.eval_size,
                        eval_fraction=cfg.eval_fraction)
    if isinstance(cfg, ModularTaskConfig):
        return ModularAdditionTask(modulus=cfg.modulus, seed=seed, train_fraction=cfg.train_fraction,
                                   eval_size=cfg.eval_size)
    raise ValueError(f"unknown task config {type(cfg).__name__}")
