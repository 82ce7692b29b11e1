"""GPT-2 (`transformers.GPT2LMHeadModel`) built from a small `GPT2Config`, with eager attention:
usable under torch.func transforms and double backward (Hessian-vector products, vectorized SGLD)."""
from __future__ import annotations

from dataclasses import dataclass

from transformers import GPT2Config, GPT2LMHeadModel

from devinterp.models.base import ModelConfig


@dataclass
class GPT2ModelConfig(ModelConfig):
    """Schema of configs/model/gpt2.yaml."""

    _target_: str = "devinterp.models.gpt2.gpt2_model"
    name: str = "gpt2"
    dropout: float = 0.0


def gpt2_model(*, vocab_size: int, n_ctx: int, d_model: int, n_heads: int, n_layers: int,
               dropout: float) -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=vocab_size, n_positions=n_ctx, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, attn_implementation="eager")
    return GPT2LMHeadModel(config)
