"""Attention-only transformer, the standard object of induction-head studies.

token embedding + learned positional embedding -> N residual blocks of (LayerNorm -> multi-head
causal self-attention) -> final LayerNorm -> unembedding. No MLPs.

Written as a `transformers.PreTrainedModel` (`AttnOnlyConfig` is its saved config, registered with
`AutoModelForCausalLM`) so `save_pretrained` / `from_pretrained` work on local directories. The
default attention path is explicit (`softmax(q k^T / sqrt(d_head))`), which works under `torch.func`
transforms (vmap, jvp, grad) and double backward; the fused `scaled_dot_product_attention` path
(`attn_impl="sdpa"`) is faster for plain training but supports neither forward-mode AD nor double
backward (nor a vmap rule), so it is used for training steps and for forward passes in
`torch.inference_mode` (the loss callback's evaluations) only: in eval mode otherwise, where every other
measurement runs (the LLC's SGLD chains and its vmapped losses at w*, Hessian-vector products), and wherever
attention patterns are asked for, the model computes its attention explicitly.
`AttnOnlyModelConfig` is the schema of configs/model/attn_only.yaml.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from devinterp.models.base import ModelConfig


class AttnImpl(str, Enum):
    explicit = "explicit"  # works under torch.func transforms and double backward
    sdpa = "sdpa"  # fused kernel: faster training, no HVPs / forward-mode AD


ATTN_IMPLS = tuple(impl.value for impl in AttnImpl)


@dataclass
class AttnOnlyModelConfig(ModelConfig):
    """Schema of configs/model/attn_only.yaml."""

    _target_: str = "devinterp.models.attention_only.attn_only_model"
    name: str = "attn_only"
    layer_norm: bool = True
    init_std: float = 0.02
    attn_impl: AttnImpl = AttnImpl.explicit


class AttnOnlyConfig(PretrainedConfig):
    model_type = "devinterp_attn_only"

    def __init__(
        self,
        vocab_size: int = 64,
        n_ctx: int = 64,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        layer_norm: bool = True,
        init_std: float = 0.02,
        attn_impl: str = "explicit",
        **kwargs,
    ):
        if d_model % n_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl={attn_impl!r} is not one of {ATTN_IMPLS}")
        self.vocab_size = vocab_size
        self.n_ctx = n_ctx
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.layer_norm = layer_norm
        self.init_std = init_std
        self.attn_impl = attn_impl
        super().__init__(**kwargs)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused QKV projection.

    `qkv.weight` rows are laid out [q; k; v], each block split into `n_heads` consecutive slices of
    `d_head` rows; `out.weight` columns are split the same way. Per-head parameter masks (for the
    weight-refined LLC) follow this layout.
    """

    def __init__(self, config: AttnOnlyConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.d_head = config.d_head
        self.attn_impl = config.attn_impl
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor, output_attentions: bool = False):
        batch, seq, d_model = x.shape
        q, k, v = self.qkv(x).split(d_model, dim=-1)
        # (batch, heads, seq, d_head)
        q, k, v = (t.view(batch, seq, self.n_heads, self.d_head).transpose(1, 2) for t in (q, k, v))
        # the fused kernel has no double backward, no forward-mode AD and no vmap rule: used where none can be
        # needed (training steps, forward passes in inference mode)
        fused_ok = self.training or torch.is_inference_mode_enabled()
        if self.attn_impl == "sdpa" and fused_ok and not output_attentions:
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            pattern = None
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)
            # Built per call rather than kept as a buffer: transformers' from_pretrained creates
            # modules on the meta device and leaves non-persistent buffers uninitialised.
            mask = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
            scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
            pattern = scores.softmax(dim=-1)
            z = pattern @ v
        z = z.transpose(1, 2).reshape(batch, seq, d_model)
        return self.out(z), pattern


class AttnOnlyBlock(nn.Module):
    def __init__(self, config: AttnOnlyConfig):
        super().__init__()
        self.ln = nn.LayerNorm(config.d_model) if config.layer_norm else nn.Identity()
        self.attn = CausalSelfAttention(config)

    def forward(self, x: torch.Tensor, output_attentions: bool = False):
        delta, pattern = self.attn(self.ln(x), output_attentions)
        return x + delta, pattern


class AttnOnlyTransformer(PreTrainedModel):
    """Causal LM; `forward(input_ids, labels=None)` returns logits of shape (batch, seq, vocab).

    With `labels`, `loss` is the mean next-token cross-entropy (nats) of `logits[:, :-1]` against
    `labels[:, 1:]` (the Hugging Face convention: pass `labels=input_ids`).
    With `output_attentions=True`, `attentions` is a tuple (one per layer) of (batch, heads, seq, seq).
    """

    config_class = AttnOnlyConfig
    base_model_prefix = "attn_only"
    main_input_name = "input_ids"

    def __init__(self, config: AttnOnlyConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_embed = nn.Embedding(config.n_ctx, config.d_model)
        self.blocks = nn.ModuleList(AttnOnlyBlock(config) for _ in range(config.n_layers))
        self.ln_final = nn.LayerNorm(config.d_model) if config.layer_norm else nn.Identity()
        self.unembed = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        **kwargs,
    ) -> CausalLMOutput:
        seq = input_ids.shape[-1]
        if seq > self.config.n_ctx:
            raise ValueError(f"sequence length {seq} exceeds the model's n_ctx={self.config.n_ctx}")
        positions = torch.arange(seq, device=input_ids.device)
        x = self.embed(input_ids) + self.pos_embed(positions)
        patterns = []
        for block in self.blocks:
            x, pattern = block(x, output_attentions)
            patterns.append(pattern)
        logits = self.unembed(self.ln_final(x))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
            )
        return CausalLMOutput(
            loss=loss, logits=logits, attentions=tuple(patterns) if output_attentions else None
        )


AutoConfig.register(AttnOnlyConfig.model_type, AttnOnlyConfig, exist_ok=True)
AutoModelForCausalLM.register(AttnOnlyConfig, AttnOnlyTransformer, exist_ok=True)


def attn_only_model(*, vocab_size: int, n_ctx: int, d_model: int, n_heads: int, n_layers: int, layer_norm: bool,
                    init_std: float, attn_impl: AttnImpl | str) -> AttnOnlyTransformer:
    config = AttnOnlyConfig(vocab_size=vocab_size, n_ctx=n_ctx, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
                            layer_norm=layer_norm, init_std=init_std, attn_impl=AttnImpl(attn_impl).value)
    return AttnOnlyTransformer(config)


def head_parameter_masks(model: AttnOnlyTransformer, layer: int, head: int) -> dict[str, torch.Tensor]:
    """Boolean masks selecting one attention head's weights: its rows of the fused QKV weight and
    bias (query, key and value slices) and its columns of the output projection.

    Pass the result as `params=` to `estimate_llc` / `hessian_spectrum` for a per-head analysis.
    """
    config = model.config
    if not 0 <= layer < config.n_layers or not 0 <= head < config.n_heads:
        raise IndexError(f"layer={layer}, head={head} outside {config.n_layers} layers x {config.n_heads} heads")
    attn = model.blocks[layer].attn
    rows = torch.zeros(3 * config.d_model, dtype=torch.bool)
    for block in range(3):  # q, k, v
        start = block * config.d_model + head * config.d_head
        rows[start : start + config.d_head] = True
    cols = torch.zeros(config.d_model, dtype=torch.bool)
    cols[head * config.d_head : (head + 1) * config.d_head] = True
    prefix = f"blocks.{layer}.attn"
    return {
        f"{prefix}.qkv.weight": rows[:, None].expand_as(attn.qkv.weight).clone(),
        f"{prefix}.qkv.bias": rows.clone(),
        f"{prefix}.out.weight": cols[None, :].expand_as(attn.out.weight).clone(),
    }
