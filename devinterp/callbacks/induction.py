"""`induction`: induction-circuit metrics on repeated random tokens (Olsson et al. 2022).

The probe (`probe: repeated`) is `num_sequences` sequences of `prefix` random tokens followed by their
copy, drawn with the context's seed; `probe: eval` uses the first `num_sequences` sequences of the run's
eval set instead (real text: what the heads do on the data). For each head (layer l, head h):
- previous-token score: mean attention from position i to i-1;
- prefix-matching score: mean attention, from a position i whose token occurred before, to the
  positions right after its earlier occurrences (on the repeated probe: i - prefix + 1 in the copy):
  what an induction head attends to;
Also `induction/icl_score` (nats, negative once context helps): on the repeated probe, the loss at the last
position minus the loss at a quarter of the sequence (the middle of the random prefix); on `probe: eval`,
`devinterp.tasks.windowed_icl_score` (late minus early windows of positions, as the text tasks' `eval/icl_score`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from devinterp.callbacks.base import (Callback, CallbackContext, CallbackOutput, not_a_language_model, positive,
                                     require)
from devinterp.tasks import icl_score, windowed_icl_score


PROBES = ("repeated", "eval")


@dataclass
class InductionSettings:
    num_sequences: int = 64
    seq_len: int | None = None  # default: the model's context length (capped at the task's)
    probe: str = "repeated"  # or eval: the run's eval sequences

    def validate(self) -> None:
        require(positive(self.num_sequences), "num_sequences", self.num_sequences, "must be a positive integer")
        require(self.seq_len is None or self.seq_len >= 4, "seq_len", self.seq_len, "must be at least 4 or null")
        require(self.probe in PROBES, "probe", self.probe, f"not one of {', '.join(PROBES)}")


class InductionCallback(Callback):
    name = "induction"
    Settings = InductionSettings

    def unsupported(self, model: torch.nn.Module, eval_tokens: torch.Tensor) -> str | None:
        problem = not_a_language_model(model, eval_tokens, "a transformers language model with attention")
        if problem is not None:
            return problem
        probe = torch.zeros(1, min(4, eval_tokens.shape[1]), dtype=torch.long, device=next(model.parameters()).device)
        try:
            with torch.no_grad():
                attentions = getattr(model(probe, output_attentions=True), "attentions", None)
        except Exception as e:  # noqa: BLE001 - any failure means this model cannot give its attention patterns
            return f"{type(model).__name__} gives no attention patterns ({type(e).__name__}: {str(e)[:80]})"
        if not attentions or any(a is None for a in attentions):
            return f"{type(model).__name__} returns no attention patterns (output_attentions=True)"
        return None

    def _probe(self, ctx: CallbackContext) -> torch.Tensor:
        seq_len = self.config.seq_len or ctx.eval_tokens.shape[1]
        if self.config.probe == "eval":
            return ctx.eval_tokens[: self.config.num_sequences, :seq_len].to(ctx.device)
        generator = torch.Generator().manual_seed(ctx.seed)
        first = torch.randint(0, ctx.model.config.vocab_size, (self.config.num_sequences, seq_len // 2),
                              generator=generator)
        return torch.cat([first, first], dim=1)[:, :seq_len].to(ctx.device)

    def on_checkpoint(self, ctx: CallbackContext) -> CallbackOutput:
        tokens = self._probe(ctx)
        seq_len = tokens.shape[1]
        prefix = seq_len // 2
        with torch.no_grad():
            out = ctx.model(tokens, output_attentions=True)
        patterns = torch.stack([a.float() for a in out.attentions])  # (layers, batch, heads, q, k)
        positions = torch.arange(seq_len, device=patterns.device)
        previous = patterns[..., positions[1:], positions[1:] - 1].mean(dim=(1, 3))
        if self.config.probe == "eval":
            matching = prefix_matching(patterns, tokens)
        else:
            copy_positions = positions[prefix:]
            matching = patterns[..., copy_positions, copy_positions - prefix + 1].mean(dim=(1, 3))

        token_losses = F.cross_entropy(out.logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
        if self.config.probe == "eval":
            icl = windowed_icl_score(token_losses)
        else:
            icl = icl_score(token_losses, early=prefix // 2, late=-1)
        scalars = {"induction/icl_score": icl}
        n_layers, n_heads = previous.shape
        for layer in range(n_layers):
            for head in range(n_heads):
                scalars[f"induction/previous_token/L{layer}H{head}"] = float(previous[layer, head])
                scalars[f"induction/prefix_matching/L{layer}H{head}"] = float(matching[layer, head])
        scalars["induction/previous_token_max"] = float(previous.max())
        scalars["induction/prefix_matching_max"] = float(matching.max())
        return CallbackOutput(scalars, {
            "induction/previous_token": previous.cpu().numpy(),
            "induction/prefix_matching": matching.cpu().numpy(),
            "induction/loss_by_position": token_losses.mean(0).cpu().numpy().astype(np.float32),
        })


def prefix_matching(patterns: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(layers, heads): the attention, from each position i whose token occurred before, to the positions
    right after its earlier occurrences (k with tokens[k - 1] == tokens[i], 1 <= k <= i), summed over those
    k and averaged over such positions. `patterns`: (layers, batch, heads, q, k)."""
    seq_len = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :-1]  # (batch, i, k - 1)
    after = torch.zeros(tokens.shape[0], seq_len, seq_len, dtype=torch.bool, device=tokens.device)
    after[:, :, 1:] = same
    after &= torch.ones(seq_len, seq_len, dtype=torch.bool, device=tokens.device).tril()  # k <= i
    scored = after.any(dim=2)  # (batch, i): positions with an earlier occurrence
    if not scored.any():
        return torch.full(patterns.shape[:1] + patterns.shape[2:3], float("nan"))
    mass = (patterns * after[None, :, None].float()).sum(dim=-1)  # (layers, batch, heads, i)
    return (mass * scored[None, :, None].float()).sum(dim=(1, 3)) / scored.sum()
