"""callbacks_config: the callbacks= of the apps for Python callers (presets, names, overrides)."""
import pytest

from devinterp.callbacks import build_callbacks, callbacks_config
from devinterp.core.errors import ConfigError


def test_presets_names_and_overrides():
    study = callbacks_config("study")
    assert {"loss", "llc", "hessian"} <= set(study)
    assert set(callbacks_config(["loss", "llc"])) == {"loss", "llc"}
    changed = callbacks_config(["study", "llc.num_draws=100", "callbacks.hessian.top_k=1", "~grads"])
    assert changed["llc"]["num_draws"] == 100 and changed["hessian"]["top_k"] == 1 and "grads" not in changed
    assert callbacks_config(None) == {} and callbacks_config({"loss": study["loss"]}) == {"loss": study["loss"]}
    assert [c.name for c in build_callbacks(callbacks_config(["loss", "weights"]))] == ["loss", "weights"]


@pytest.mark.parametrize("spec, words", [("nonsense", "nonsense"), (["loss", "llc.num_draws=3"], "no callback 'llc'"),
                                         (["loss", "~grads"], "~callbacks.grads"),
                                         (["loss", "loss.batch_size=[unclosed"], "cannot parse")])
def test_bad_specs_name_what_is_wrong(spec, words):
    with pytest.raises(ConfigError) as error:
        callbacks_config(spec)
    assert words in str(error.value) and len(str(error.value).splitlines()) == 1, str(error.value)
