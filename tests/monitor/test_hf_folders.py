"""Checkpoint folders from elsewhere: steps from folder names, sharded and .bin weights, nothing run."""
import json

import pytest
import torch

from devinterp.monitor.hf_folders import CheckpointFolderError, find_checkpoints, load_checkpoint
from tests.monitor.tiny import tiny_gpt2


def test_steps_are_read_from_the_names_a_trainer_or_save_pretrained_gives(tmp_path):
    for name in ("checkpoint-500", "step_10", "20", "global_step30", "ckpt-7"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "runs").mkdir()  # no config.json: not a checkpoint
    assert [(f.step, f.path.name) for f in find_checkpoints(tmp_path)] == [
        (7, "ckpt-7"), (10, "step_10"), (20, "20"), (30, "global_step30"), (500, "checkpoint-500")]
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / "config.json").write_text("{}")
    with pytest.raises(CheckpointFolderError, match="step 20 again"):
        find_checkpoints(tmp_path)
    with pytest.raises(CheckpointFolderError, match="one checkpoint"):
        find_checkpoints(tmp_path / "20")


def test_sharded_safetensors_and_a_plain_bin_load_the_same_weights(tmp_path):
    model = tiny_gpt2(seed=3)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="4KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    if not (tmp_path / "bin" / "pytorch_model.bin").is_file():  # transformers that always writes safetensors
        (tmp_path / "bin" / "model.safetensors").unlink()
        torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    for folder in ("sharded", "bin"):
        loaded = load_checkpoint(tmp_path / folder)
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), (folder, name)


def test_remote_code_is_never_asked_for(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path / "checkpoint-1")
    config = tmp_path / "checkpoint-1" / "config.json"
    values = json.loads(config.read_text())
    config.write_text(json.dumps({**values, "auto_map": {"AutoModelForCausalLM": "evil.Model"},
                                  "architectures": ["EvilModel"]}))
    (tmp_path / "checkpoint-1" / "evil.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w')\n")
    assert type(load_checkpoint(tmp_path / "checkpoint-1")).__name__ == "GPT2LMHeadModel"
    assert not (tmp_path / "pwned").exists()
