"""Each model is one module and one YAML file: the YAML's schema is the module's config, which
validates its values and builds the model through its `_target_`."""
import pytest
import torch
from omegaconf import OmegaConf

from devinterp.core.errors import SettingError
from devinterp.models import AttnOnlyModelConfig, build_model, count_parameters, model_schemas
from devinterp.cli.configs import CONFIG_DIR
from devinterp.cli.train import compose_train_config


@pytest.mark.parametrize("name", sorted(path.stem for path in (CONFIG_DIR / "model").glob("*.yaml")))
def test_every_model_yaml_has_a_schema_that_builds_its_model(name):
    cfg = OmegaConf.to_object(compose_train_config([f"model={name}", "model.d_model=16", "model.n_heads=2"])).model
    assert type(cfg) is model_schemas()[name]
    cfg.validate("induction", 64, 64)
    model = build_model(cfg, task_vocab_size=11, task_seq_len=8, seed=0)
    assert model(torch.randint(0, 11, (2, 8))).logits.shape == (2, 8, 11)
    again = build_model(cfg, task_vocab_size=11, task_seq_len=8, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))  # seeded
    assert count_parameters(model) == count_parameters(again)


def test_validation_names_the_key_relative_to_the_model():
    with pytest.raises(SettingError, match=r"^vocab_size=10: smaller than the vocabulary task=induction needs \(64\)"):
        AttnOnlyModelConfig(vocab_size=10).validate("induction", 64, 64)
