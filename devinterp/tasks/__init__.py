"""Deterministic, seeded, offline tasks: one module per task, with its config (see `base`)."""
from devinterp.tasks.base import (IGNORE_INDEX, NextTokenTask, Task, TaskConfig, build_task, derived_generator,
                                  icl_score, task_config, task_schemas, windowed_icl_score)
from devinterp.tasks.induction import InductionTask, InductionTaskConfig
from devinterp.tasks.markov_icl import MarkovICLTask, MarkovICLTaskConfig
from devinterp.tasks.modular import ModularAdditionTask, ModularTaskConfig
from devinterp.tasks.text import TextTask, TextTaskConfig
from devinterp.tasks.token_data import TokenData, TokenDataError, read_token_data
from devinterp.tasks.tokens import TokensTask, TokensTaskConfig

__all__ = ["IGNORE_INDEX", "NextTokenTask", "Task", "TaskConfig", "build_task", "derived_generator", "icl_score",
           "task_config", "task_schemas", "windowed_icl_score", "InductionTask", "InductionTaskConfig", "MarkovICLTask",
           "MarkovICLTaskConfig", "ModularAdditionTask", "ModularTaskConfig", "TextTask", "TextTaskConfig",
           "TokenData", "TokenDataError", "read_token_data", "TokensTask", "TokensTaskConfig"]
