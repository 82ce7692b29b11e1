"""Each task is one module and one YAML file: the YAML's schema is the module's config, which
validates its values, names the vocabulary it needs and builds the task through its `_target_`."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from devinterp.core.errors import SettingError
from devinterp.tasks import InductionTaskConfig, build_task, task_config, task_schemas
from devinterp.cli.configs import CONFIG_DIR
from devinterp.cli.train import compose_train_config


def task_names() -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / "task").glob("*.yaml"))


@pytest.mark.parametrize("name", task_names())
def test_every_task_yaml_has_a_schema_that_builds_its_task(name, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("a small corpus of text, long enough for a few windows of bytes. " * 40)
    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.arange(8000) % 50)  # a 1-D stream, cut into windows of seq_len
    paths = {"text": text, "tokens": tokens}
    overrides = [f"task={name}"] + ([f"task.path={paths[name]}", "task.seq_len=16"] if name in paths else [])
    cfg = OmegaConf.to_object(compose_train_config(overrides)).task
    assert type(cfg) is task_schemas()[name]
    cfg.validate()
    task = build_task(cfg, seed=0)
    assert task.name == name and task.vocab_size == cfg.needed_vocab_size()
    batch = task.train_batch(0, 3)
    assert batch.shape[1] == cfg.seq_len and 0 <= int(batch.min()) and int(batch.max()) < task.vocab_size


def test_stored_values_without_a_target_get_their_schemas():
    """A run's config.yaml from before tasks carried `_target_` still builds its task."""
    stored = {"name": "induction", "seq_len": 8, "eval_size": 16, "vocab_size": 8, "min_period": None,
              "max_period": None, "bigram_concentration": None}
    cfg = task_config(stored)
    assert cfg == InductionTaskConfig(seq_len=8, eval_size=16, vocab_size=8)
    assert torch.equal(build_task(cfg, seed=1).train_batch(3, 2), build_task(cfg, seed=1).train_batch(3, 2))


def test_validation_names_the_key_relative_to_the_task():
    with pytest.raises(SettingError, match=r"^min_period=9: must not exceed task.max_period=8"):
        InductionTaskConfig(min_period=9, max_period=8).validate()
