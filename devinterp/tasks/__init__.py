"""Deterministic, seeded, offline tasks: one module per task, with its config (see `base`)."""
from devinterp.tasks.base import (IGNORE_INDEX, NextTokenTask, Task, TaskConfig, build_task, derived_generator,
                                  icl_score, task_config, task_schemas)
from devinterp.tasks.induction import InductionTask, InductionTaskConfig
from devinterp.tasks.markov_icl import MarkovICLTask, MarkovICLTaskConfig
from devinterp.tasks.modular import ModularAdditionTask, ModularTaskConfig
from devinterp.tasks.text import TextTask, TextTaskConfig

__all__ = ["IGNORE_INDEX", "NextTokenTask", "Task", "TaskConfig", "build_task", "derived_generator", "icl_score",
           "task_config", "task_schemas", "InductionTask", "InductionTaskConfig", "MarkovICLTask",
           "MarkovICLTaskConfig", "ModularAdditionTask", "ModularTaskConfig", "TextTask", "TextTaskConfig"]
