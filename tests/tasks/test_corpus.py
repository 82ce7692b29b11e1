"""task=corpus: real text from the Python install, a BPE vocabulary trained once and cached by hash."""
import pytest
import torch

from devinterp.core.errors import SettingError
from devinterp.tasks import build_task, task_config


def corpus(cache_dir, **values):
    cfg = task_config({"name": "corpus", "cache_dir": str(cache_dir), "vocab_size": 1024, **values})
    cfg.validate()
    return build_task(cfg, seed=0)


@pytest.mark.slow(seconds=20)
def test_the_corpus_is_deterministic_cached_and_held_out(tmp_path):
    first = corpus(tmp_path / "a")
    cached = sorted((tmp_path / "a").iterdir())
    assert [p.suffix for p in cached] == [".safetensors", ".json"] and "docs-" in cached[0].name
    stamp = cached[0].stat().st_mtime_ns
    assert torch.equal(corpus(tmp_path / "a").tokens, first.tokens) and cached[0].stat().st_mtime_ns == stamp
    assert torch.equal(corpus(tmp_path / "b").tokens, first.tokens)  # trained again: the same vocabulary
    assert len(first.tokens) > 300_000 and int(first.tokens.max()) < 1024
    held_out = first.tokens[first.split:]
    window = first.eval_tokens()[0]
    assert any(torch.equal(held_out[i:i + len(window)], window) for i in range(len(held_out) - len(window) + 1))
    assert first.train_batch(5, 8).shape == (8, 128) and torch.equal(first.train_batch(5, 8), first.train_batch(5, 8))


def test_bad_corpus_settings_are_named(tmp_path):
    with pytest.raises(SettingError, match="source='poems'"):
        task_config({"name": "corpus", "source": "poems"}).validate()
    with pytest.raises(SettingError, match="vocab_size=100"):
        task_config({"name": "corpus", "vocab_size": 100}).validate()
