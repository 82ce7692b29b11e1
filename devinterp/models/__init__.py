"""Models built from configs (never downloaded): the attention-only transformer and GPT-2."""
from __future__ import annotations

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedModel

from devinterp.models.attention_only import AttnOnlyConfig, AttnOnlyTransformer, head_parameter_masks

transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bar per checkpoint
AutoConfig.register(AttnOnlyConfig.model_type, AttnOnlyConfig, exist_ok=True)
AutoModelForCausalLM.register(AttnOnlyConfig, AttnOnlyTransformer, exist_ok=True)

__all__ = ["AttnOnlyConfig", "AttnOnlyTransformer", "head_parameter_masks", "build_model", "count_parameters"]


def build_model(model_cfg, task_vocab_size: int, task_seq_len: int, seed: int) -> PreTrainedModel:
    """Build a freshly initialised model from a `devinterp.config.ModelConfig`.

    Vocabulary size and context length are the model config's when set, else the task's.
    Initialisation is seeded by `seed` without touching the caller's global RNG state.
    """
    vocab_size = model_cfg.vocab_size if model_cfg.vocab_size is not None else task_vocab_size
    n_ctx = model_cfg.n_ctx if model_cfg.n_ctx is not None else task_seq_len
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model_cfg.name == "attn_only":
            config = AttnOnlyConfig(
                vocab_size=vocab_size,
                n_ctx=n_ctx,
                d_model=model_cfg.d_model,
                n_heads=model_cfg.n_heads,
                n_layers=model_cfg.n_layers,
                layer_norm=model_cfg.layer_norm,
                init_std=model_cfg.init_std,
                attn_impl=str(getattr(model_cfg.attn_impl, "value", model_cfg.attn_impl)),
            )
            return AttnOnlyTransformer(config)
        if model_cfg.name == "gpt2":
            config = GPT2Config(
                vocab_size=vocab_size,
                n_positions=n_ctx,
                n_embd=model_cfg.d_model,
                n_layer=model_cfg.n_layers,
                n_head=model_cfg.n_heads,
                resid_pdrop=model_cfg.dropout,
                embd_pdrop=model_cfg.dropout,
                attn_pdrop=model_cfg.dropout,
                # eager attention: usable under torch.func transforms and double backward
                attn_implementation="eager",
            )
            return GPT2LMHeadModel(config)
    raise ValueError(f"model.name={model_cfg.name!r} is not one of ['attn_only', 'gpt2']")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
