"""What the tests of runs devinterp did not train share: a tiny GPT-2, data it learns in tens of steps,
callback settings that measure in a fraction of a second."""
from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB, SEQ_LEN = 32, 16
# The study callbacks, small: fixed LLC settings (no calibration, no preconditioner, a short burn-in),
# a short Lanczos run to a loose tolerance, few samples. Each measures a checkpoint in well under 0.1 s.
TINY_STUDY = ["study", "llc.num_chains=2", "llc.num_draws=10", "llc.num_burnin=5", "llc.step_size=1e-3",
              "llc.num_samples=64", "llc.batch_size=16", "llc.preconditioner=none", "llc.schedule.checkpoint_stride=1",
              "hessian.lanczos_steps=6", "hessian.top_k=1", "hessian.bottom_k=0", "hessian.trace_probes=1",
              "hessian.density=false", "hessian.tol=0.05", "hessian.guard=0", "hessian.num_samples=8",
              "grads.num_samples=32", "induction.num_sequences=8"]


def counting_tokens(rows: int = 300, seed: int = 0) -> torch.Tensor:
    """Rows of consecutive token ids mod VOCAB from a random start: next = previous + 1, learnt fast."""
    starts = torch.randint(0, VOCAB, (rows, 1), generator=torch.Generator().manual_seed(seed))
    return (starts + torch.arange(SEQ_LEN)) % VOCAB


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=SEQ_LEN, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def train_steps(model, tokens: torch.Tensor, steps: int, lr: float = 1e-2, seed: int = 0):
    """Yield (step, loss of the step's batch) for steps 1..steps of AdamW on batches of 16 rows."""
    optimizer = torch.optim.AdamW(model.parameters(), lr)
    generator = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        batch = tokens[torch.randint(0, len(tokens), (16,), generator=generator)]
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        yield step, loss.item()


def cli_overrides(spec: list[str] = TINY_STUDY) -> list[str]:
    """The same callbacks as command-line overrides (`callbacks=study callbacks.llc.num_draws=10 ...`)."""
    return [f"callbacks={spec[0]}", *("callbacks." + item for item in spec[1:])]


def save_checkpoint_folders(directory, steps=(0, 2, 5, 10, 20, 30), tokens=None, seed: int = 0) -> list[int]:
    """`checkpoint-<step>/` folders (save_pretrained: config.json, model.safetensors) of a tiny GPT-2
    trained on counting tokens, as a Trainer with save_steps would leave them."""
    model = tiny_gpt2(seed)
    tokens = counting_tokens() if tokens is None else tokens
    if 0 in steps:
        model.save_pretrained(f"{directory}/checkpoint-0")
    for step, _loss in train_steps(model, tokens, max(steps), seed=seed):
        if step in steps:
            model.save_pretrained(f"{directory}/checkpoint-{step}")
    return sorted(steps)


class BagOfTokens(torch.nn.Module):
    """A model that is no language model: a class for each row from the mean of its token embeddings."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.head = torch.nn.Linear(8, classes)

    def forward(self, inputs):
        return self.head(self.embed(inputs).mean(1))


def classifier_loss(model, batch):
    """loss_fn for BagOfTokens: cross-entropy of the row's class (importable by name, as a run's must be)."""
    inputs, labels = batch
    return torch.nn.functional.cross_entropy(model(inputs), labels)
