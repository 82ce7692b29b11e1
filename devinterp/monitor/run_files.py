"""A run directory for training that devinterp did not run: its data sample, config and eval set.

`devinterp.Monitor` (someone's own loop, or the Hugging Face Trainer through
`devinterp.integrations.hf`) and `devinterp.analyze_checkpoints` (checkpoint folders from elsewhere)
both measure a model on data they are handed. They write the same run directory as `devinterp-train`
(see `devinterp.store.run_dir`), so the analysis, the report, the dashboard and the follower read it
unchanged:

    data.safetensors          the rows measured on: `input_ids` (and `labels`), training sample first,
                              then the evaluation set (the task `tokens` reads it, see devinterp.tasks.tokens)
    eval_tokens.safetensors   the evaluation set, as for every run
    config.yaml               seed, steps, checkpoint schedule, the task (`tokens` over data.safetensors,
                              named relative to the run directory), the callbacks, the model's class,
                              the loss function (`loss_fn`: its importable name, or null for the model's
                              own loss) and `source` (monitor, hf_trainer, checkpoints)

Only a sample of the data is kept: `eval_size` rows for evaluation and up to `train_sample_size` for
the callbacks' training sample (the LLC, the Hessian, the gradients), drawn once, seeded.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save

from devinterp.core.errors import ConfigError
from devinterp.store.atomic import atomic_write_bytes, atomic_write_text
from devinterp.store.run_dir import RUN_CONFIG_FILE, unique_run_dir
from devinterp.tasks import TokenData, TokensTask, TokensTaskConfig, derived_generator
from devinterp.tasks.tokens import MIN_TRAIN_ROWS
from devinterp.training.trainer import load_or_create_eval_tokens

DATA_FILE = "data.safetensors"
SAMPLE_STREAM = 3  # derived_generator stream of the sample (the tasks use 0-2)
MIN_SEQUENCES = MIN_TRAIN_ROWS + 1


def split_sample(data: TokenData, eval_size: int, train_sample_size: int, seed: int,
                 name: str) -> tuple[TokenData, int]:
    """The rows kept: up to `train_sample_size` training rows, then `eval_count` evaluation rows, drawn
    without replacement (seeded). The evaluation set is `eval_size` rows, or a fifth of the data when
    that leaves fewer than MIN_TRAIN_ROWS for training. Returns (rows, eval_count); ConfigError naming
    the data (`name`) when it has fewer than MIN_SEQUENCES rows."""
    n = len(data)
    if n < MIN_SEQUENCES:
        raise ConfigError(f"{name}: too few sequences ({n}); at least {MIN_SEQUENCES} are needed "
                          f"(an evaluation set and {MIN_TRAIN_ROWS} training sequences)")
    eval_count = min(eval_size, max(1, n // 5)) if n - eval_size < MIN_TRAIN_ROWS else eval_size
    order = torch.randperm(n, generator=derived_generator(seed, SAMPLE_STREAM))
    train_rows = order[eval_count:][:train_sample_size]
    return data.rows(torch.cat([train_rows, order[:eval_count]])), eval_count


def check_vocabulary(data: TokenData, model: torch.nn.Module, name: str) -> None:
    """ConfigError naming the data if a token id is beyond the model's vocabulary (a model whose config
    has a `vocab_size`; inputs that are token ids)."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    largest = data.max_token()
    if isinstance(vocab, int) and largest is not None and largest >= vocab:
        raise ConfigError(f"{name}: token id {largest} is beyond the model's vocabulary (vocab_size={vocab})")


def model_description(model: torch.nn.Module) -> dict:
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "num_parameters": sum(p.numel() for p in model.parameters())}


def create_run_dir(run_dir: Path, sample: TokenData, eval_count: int, seed: int,
                   config: Mapping) -> tuple[Path, TokensTask, dict]:
    """A new run directory at `run_dir` (or `run_dir_1`, ... if it exists: never reused) holding the
    sample, the eval set and config.yaml (`config`, with the task, seed, training sample size and
    run_dir added). Returns it, its task and the config written."""
    run_dir = unique_run_dir(Path(run_dir))
    run_dir.mkdir(parents=True)
    tensors = {"input_ids": sample.inputs.contiguous()}
    if sample.labels is not None:
        tensors["labels"] = sample.labels.contiguous()
    atomic_write_bytes(run_dir / DATA_FILE, save(tensors))
    task_cfg = TokensTaskConfig(path=DATA_FILE, eval_size=eval_count)
    task = TokensTask(str(run_dir / DATA_FILE), seed=seed, eval_size=eval_count)
    load_or_create_eval_tokens(run_dir, task)
    config = {**config, "seed": seed, "task": OmegaConf.to_container(OmegaConf.structured(task_cfg)),
              "train_sample_size": task.num_train, "run_dir": str(run_dir)}
    write_config(run_dir, config)
    return run_dir, task, config


def write_config(run_dir: Path, config: Mapping) -> None:
    """config.yaml, atomically (rewritten as the run learns its model and its length)."""
    atomic_write_text(Path(run_dir) / RUN_CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(dict(config))))
