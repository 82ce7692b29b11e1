"""Batched SGLD over many chains at once: the engine behind `estimate_llc` and `calibrate`.

Every chain is a copy of the sampled weights stacked along a leading chain dimension. One step
evaluates all chains' minibatch losses and gradients in a single `torch.func.vmap` of
`torch.func.grad_and_value` over a `torch.func.functional_call` of the model, then applies the
Langevin update to the stacked tensors. Modules that vmap cannot handle fall back to a Python loop
over chains with ordinary autograd (reported in the diagnostics).

Each chain may carry its own step size, nβ and localization (used by `calibrate` to sweep a grid in
one pass). Randomness comes only from `torch.Generator`s seeded by `seed`; the caller's global RNG
state is never consumed.

Loss read-out with a control variate: each step records L_B(w_t) − L_B(w*) + L_n(w*), the loss of
the forward pass that gives the gradient (before the update) minus the same minibatch's loss at w*
(from per-sample losses computed once), plus the full-data loss at w*. Its expectation over
minibatches is L_n(w_t), as for the plain minibatch loss, but the sample-to-sample spread of the
data cancels, so λ̂ needs far fewer draws at large nβ. At full batch it is the plain loss.
"""
from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, TensorDataset, default_collate
from torch.utils._pytree import tree_leaves, tree_map
from tqdm.auto import tqdm

from devinterp.params import ParamSelector, select_parameters

LossFn = Callable[[torch.nn.Module, object], torch.Tensor]

SAMPLERS = ("sgld", "rmsprop_sgld")

# RMSprop-SGLD: decay of the moving average v of the squared drift nβ∇L + γ(w − w*), and the floor
# added to √v (in drift units). With a floor of 1 the preconditioner 1/(√v + 1) never exceeds 1: a
# preconditioned step is never larger than the plain SGLD step ε, so chains starting at w* (where the
# drift vanishes) do not take huge first steps.
RMSPROP_ALPHA = 0.999
RMSPROP_EPS = 1.0

# Divergence. A chain has diverged when its loss or its weights are not finite, or when it has wandered
# further from w* than the localization allows: SGLD on the Gaussian prior (γ/2)‖w − w*‖² alone keeps
# γ(1 − εγ/4)‖w − w*‖² ~ χ²_d (d sampled weights) in its stationary state, and near a local minimum
# the likelihood term only pulls a chain back towards w*. A healthy chain passes the (1 − 1e-6)
# quantile of that law with probability below 1e-6 per step; the bound is DIVERGENCE_SLACK times the
# quantile, for non-convex losses. Minibatch noise cannot trip this rule (it looks at the weights, not
# at noisy losses), and an unstable chain grows geometrically, so the slack delays detection by a few
# steps at most.
DIVERGENCE_TAIL_PROBABILITY = 1e-6
DIVERGENCE_SLACK = 4.0

# Per-sample statistics at w* are computed in chunks of this many samples (vmapped).
SAMPLE_CHUNK = 256


def divergence_bound(num_sampled: int, step_size: torch.Tensor, localization: torch.Tensor) -> torch.Tensor:
    """Per chain: the largest squared distance ‖w − w*‖² a healthy chain reaches (inf if γ = 0)."""
    from scipy.stats import chi2

    quantile = float(chi2.isf(DIVERGENCE_TAIL_PROBABILITY, num_sampled))
    shrink = torch.clamp(1 - step_size * localization / 4, min=0.05)
    bound = DIVERGENCE_SLACK * quantile / (localization * shrink)
    return torch.where(localization > 0, bound, torch.full_like(bound, float("inf")))


class _LossModule(torch.nn.Module):
    """Wraps `loss_fn(model, batch)` as a module so `functional_call` can swap the model's weights."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


class FunctionalProblem:
    """A private copy of `model` (in eval mode, on `device`) viewed as a function of its sampled weights.

    `w_star` holds the sampled tensors at the starting point (whole tensors; `masks` says which entries
    move), `fixed` the parameters that are not sampled, `buffers` the module buffers. The caller's
    model is deep-copied and never touched.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn, params: ParamSelector, device):
        if device is None:
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        model_copy = copy.deepcopy(model).to(self.device).eval()
        self.module = _LossModule(model_copy, loss_fn)
        masks = select_parameters(model_copy, params)
        if not masks:
            raise ValueError("params: the selector selects no weights")
        named = dict(model_copy.named_parameters())
        self.masks = {name: mask.to(self.device) for name, mask in masks.items()}
        self.w_star = {name: named[name].detach().clone() for name in masks}
        self.fixed = {name: p.detach() for name, p in named.items() if name not in masks}
        self.buffers = {name: b.detach() for name, b in model_copy.named_buffers()}
        self.num_sampled = int(sum(mask.sum() for mask in self.masks.values()))
        self.dtype = next(iter(self.w_star.values())).dtype

    def model_at(self, weights: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """A copy of the model (eval mode) with its sampled tensors set to `weights` (default w*)."""
        model = copy.deepcopy(self.module.model)
        with torch.no_grad():
            named = dict(model.named_parameters())
            for name, value in (self.w_star if weights is None else weights).items():
                named[name].copy_(value)
        return model

    def loss(self, sampled: Mapping[str, torch.Tensor], batch) -> torch.Tensor:
        state = {**self.fixed, **self.buffers, **sampled}
        return torch.func.functional_call(self.module, {f"model.{k}": v for k, v in state.items()}, (batch,))

    def sample_loss(self, sampled: Mapping[str, torch.Tensor], sample) -> torch.Tensor:
        """The loss of one sample (a batch leaf without its leading dimension)."""
        return self.loss(sampled, tree_map(lambda t: t.unsqueeze(0) if torch.is_tensor(t) else t, sample))

    @torch.no_grad()
    def sample_losses(self, data: Dataset) -> torch.Tensor:
        """(n,) float64: the loss of each sample at w*, forward only, vmapped over chunks of samples
        (a loop over samples where vmap cannot run the model)."""
        per_sample = torch.func.vmap(self.sample_loss, in_dims=(None, 0))
        losses = []
        for start in range(0, len(data), SAMPLE_CHUNK):
            batch = _to_device(_collate(data, torch.arange(start, min(start + SAMPLE_CHUNK, len(data)))), self.device)
            try:
                chunk = per_sample(self.w_star, batch)
            except Exception:  # noqa: BLE001 - vmap cannot run this model: loop over samples
                size = len(tree_leaves(batch)[0])
                chunk = torch.stack([self.sample_loss(self.w_star, tree_map(lambda t: t[i], batch)) for i in range(size)])
            losses.append(chunk.to(torch.float64))
        return torch.cat(losses)

    @torch.no_grad()
    def full_loss(self, data: Dataset, batch_size: int) -> float:
        """L_n(w*): the batch-size-weighted mean of `loss_fn` over the dataset in fixed sequential
        batches, forward only."""
        n, total = len(data), 0.0
        for start in range(0, n, batch_size):
            indices = torch.arange(start, min(start + batch_size, n))
            total += float(self.loss(self.w_star, _to_device(_collate(data, indices), self.device))) * len(indices) / n
        return total

    def grad_norm(self, data: Dataset, batch_size: int) -> float:
        """‖∇L_n(w*)‖ over the sampled entries (about 0 at a minimizer)."""
        n = len(data)
        weights = {name: w.clone().requires_grad_(True) for name, w in self.w_star.items()}
        grads = {name: torch.zeros_like(w) for name, w in weights.items()}
        for start in range(0, n, batch_size):
            indices = torch.arange(start, min(start + batch_size, n))
            loss = self.loss(weights, _to_device(_collate(data, indices), self.device)) * (len(indices) / n)
            for name, g in zip(weights, torch.autograd.grad(loss, list(weights.values()), allow_unused=True)):
                if g is not None:
                    grads[name] += g
        return math.sqrt(sum(float(((g * self.masks[name]) ** 2).sum()) for name, g in grads.items()))

    def sample_gradients(self, data: Dataset, indices: torch.Tensor,
                         weights: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(len(indices), d) float64: per-sample gradients of the sampled entries, flattened, at
        `weights` (sampled tensors; default w*)."""
        weights = self.w_star if weights is None else weights
        per_sample = torch.func.vmap(torch.func.grad(self.sample_loss), in_dims=(None, 0))
        rows = []
        for chunk in indices.split(SAMPLE_CHUNK // 4):
            batch = _to_device(_collate(data, chunk), self.device)
            try:
                grads = per_sample(weights, batch)
            except Exception:  # noqa: BLE001 - vmap cannot run this model: loop over samples
                grads = _stack_dicts([
                    torch.func.grad(self.sample_loss)(weights, tree_map(lambda t: t[i], batch))
                    for i in range(len(chunk))
                ])
            rows.append(torch.cat([grads[name][:, mask] for name, mask in self.masks.items()], dim=1))
        return torch.cat(rows).to(torch.float64)


def _stack_dicts(dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.stack([d[name] for d in dicts]) for name in dicts[0]}


def _collate(data: Dataset, indices: torch.Tensor):
    """Batch of `data` at `indices` (any shape); leaves get the index shape as leading dimensions."""
    if isinstance(data, TensorDataset):
        return tuple(t[indices] for t in data.tensors)
    flat = default_collate([data[i] for i in indices.reshape(-1).tolist()])
    return tree_map(lambda t: t.reshape(*indices.shape, *t.shape[1:]) if torch.is_tensor(t) else t, flat)


def _to_device(batch, device):
    return tree_map(lambda t: t.to(device) if torch.is_tensor(t) else t, batch)


class MinibatchStream:
    """Independent shuffled minibatches for each chain (epochs of per-chain permutations, drop-last).

    When `batch_size >= len(data)` every step uses the whole dataset, shared by all chains
    (`chain_dim` is None); otherwise leaves have shape (chains, batch_size, ...) (`chain_dim` 0).
    `next()` returns (batch, indices): indices (chains, batch_size) into the dataset, None at full batch.
    """

    def __init__(self, data: Dataset, batch_size: int, num_chains: int, generator: torch.Generator, device):
        self.data, self.num_chains, self.generator, self.device = data, num_chains, generator, device
        self.n = len(data)
        self.full_batch = batch_size >= self.n
        self.batch_size = min(batch_size, self.n)
        self.chain_dim = None if self.full_batch else 0
        self._full = _to_device(_collate(data, torch.arange(self.n)), device) if self.full_batch else None
        self._perm = None
        self._cursor = self.n

    def next(self):
        if self.full_batch:
            return self._full, None
        if self._cursor + self.batch_size > self.n:
            noise = torch.rand(self.num_chains, self.n, generator=self.generator)
            self._perm, self._cursor = noise.argsort(dim=1), 0
        indices = self._perm[:, self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return _to_device(_collate(self.data, indices), self.device), indices


@dataclass
class ChainRun:
    """Raw output of `run_chains`: losses of every step (burn-in included) and per-chain bookkeeping."""

    loss_trace: torch.Tensor  # (chains, steps) float64: the read-out loss (module docstring); NaN once diverged
    distance_trace: torch.Tensor  # (chains, steps), ‖w - w*‖ over sampled entries before each step
    diverged_at: torch.Tensor  # (chains,), int64 step index of divergence, -1 if never
    final_weights: dict[str, torch.Tensor]  # sampled tensors after the last step, (chains, ...) each
    vectorized: bool
    fallback_reason: str | None


def _per_chain(values, num_chains: int, device, dtype) -> torch.Tensor:
    tensor = torch.as_tensor(values, dtype=dtype, device=device).reshape(-1)
    if tensor.numel() == 1:
        tensor = tensor.expand(num_chains)
    if tensor.numel() != num_chains:
        raise ValueError(f"expected one value or {num_chains} per-chain values, got {tensor.numel()}")
    return tensor.clone()


def run_chains(
    problem: FunctionalProblem,
    data: Dataset,
    *,
    num_chains: int,
    num_steps: int,
    step_size,
    nbeta,
    localization,
    init_loss: float,
    batch_size: int,
    sampler: str,
    seed: int,
    sample_losses: torch.Tensor | None = None,
    progress: bool = False,
) -> ChainRun:
    """Run `num_chains` chains of (RMSprop-)SGLD for `num_steps` steps from w*, all chains at once.

    `step_size`, `nbeta`, `localization`: a scalar or one value per chain. `init_loss` is L_n(w*);
    `sample_losses` the per-sample losses at w* that make the read-out's control variate (without
    them the read-out is the plain minibatch loss). Each step records the loss of the forward pass
    that also gives the gradient, i.e. the loss *before* the update.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not one of {SAMPLERS}")
    device, dtype = problem.device, problem.dtype
    eps = _per_chain(step_size, num_chains, device, dtype)
    nbetas = _per_chain(nbeta, num_chains, device, dtype)
    gammas = _per_chain(localization, num_chains, device, dtype)
    max_squared_distance = divergence_bound(problem.num_sampled, eps.to(torch.float64), gammas.to(torch.float64))

    noise_gen = torch.Generator(device=device).manual_seed(seed)
    data_gen = torch.Generator().manual_seed(seed + 1_000_003)
    batches = MinibatchStream(data, batch_size, num_chains, data_gen, device)

    w_star = problem.w_star
    masks = {name: m.to(dtype) for name, m in problem.masks.items()}
    weights = {name: w.unsqueeze(0).repeat(num_chains, *([1] * w.dim())) for name, w in w_star.items()}
    second_moment: dict[str, torch.Tensor] = {}

    def per_chain(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.view(-1, *([1] * (like.dim() - 1)))

    grad_and_loss = torch.func.grad_and_value(problem.loss)
    vmapped = torch.func.vmap(grad_and_loss, in_dims=(0, batches.chain_dim))

    def looped(stacked, batch):
        grads, losses = {name: [] for name in stacked}, []
        for c in range(num_chains):
            chain_weights = {name: w[c].detach().requires_grad_(True) for name, w in stacked.items()}
            chain_batch = batch if batches.chain_dim is None else tree_map(
                lambda t: t[c] if torch.is_tensor(t) else t, batch
            )
            loss = problem.loss(chain_weights, chain_batch)
            chain_grads = torch.autograd.grad(loss, list(chain_weights.values()), allow_unused=True)
            for name, g in zip(chain_weights, chain_grads):
                grads[name].append(torch.zeros_like(chain_weights[name]) if g is None else g)
            losses.append(loss.detach())
        return {name: torch.stack(g) for name, g in grads.items()}, torch.stack(losses)

    vectorized, fallback_reason = True, None
    loss_trace = torch.full((num_chains, num_steps), float("nan"), dtype=torch.float64, device=device)
    distance_trace = torch.zeros((num_chains, num_steps), dtype=torch.float64, device=device)
    alive = torch.ones(num_chains, dtype=torch.bool, device=device)
    diverged_at = torch.full((num_chains,), -1, dtype=torch.int64, device=device)
    if sample_losses is not None:
        sample_losses = sample_losses.to(device=device, dtype=torch.float64)

    # Global RNG state is forked so nothing inside the user's model or loss_fn can consume the
    # caller's random stream.
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        for step in tqdm(range(num_steps), disable=not progress, desc="SGLD", leave=False):
            batch, indices = batches.next()
            if vectorized:
                try:
                    grads, losses = vmapped(weights, batch)
                except Exception as error:  # noqa: BLE001 - any vmap failure means: use the loop
                    vectorized, fallback_reason = False, f"{type(error).__name__}: {error}"
                    warnings.warn(
                        f"estimate_llc: torch.func.vmap cannot run this model ({fallback_reason}); "
                        "falling back to a Python loop over chains (slower).",
                        RuntimeWarning,
                        stacklevel=3,
                    )
            if not vectorized:
                grads, losses = looped(weights, batch)
            losses = losses.detach().to(torch.float64)
            if sample_losses is not None and indices is not None:
                losses = losses - sample_losses[indices.to(device)].mean(dim=1) + init_loss

            squared_distance = torch.zeros(num_chains, dtype=torch.float64, device=device)
            with torch.no_grad():
                for name, w in weights.items():
                    squared_distance += (((w - w_star[name]) * masks[name]) ** 2).flatten(1).sum(1).to(torch.float64)
            ok = torch.isfinite(losses) & torch.isfinite(squared_distance) & (squared_distance <= max_squared_distance)
            diverged_at = torch.where(alive & ~ok, torch.full_like(diverged_at, step), diverged_at)
            alive = alive & ok
            loss_trace[:, step] = torch.where(alive, losses, torch.full_like(losses, float("nan")))
            distance_trace[:, step] = squared_distance.sqrt()
            if not alive.any():
                break  # every chain diverged: nothing left to sample

            with torch.no_grad():
                for name, w in weights.items():
                    displacement = w - w_star[name]
                    drift = per_chain(nbetas, w) * grads[name] + per_chain(gammas, w) * displacement
                    if sampler == "rmsprop_sgld":
                        if name not in second_moment:
                            second_moment[name] = torch.zeros_like(w)
                        moment = second_moment[name]
                        moment.mul_(RMSPROP_ALPHA).addcmul_(drift, drift, value=1 - RMSPROP_ALPHA)
                        debiased = moment / (1 - RMSPROP_ALPHA ** (step + 1))  # Adam-style bias correction
                        precondition = 1.0 / (debiased.sqrt() + RMSPROP_EPS)
                    else:
                        precondition = torch.ones_like(w)
                    step_eps = per_chain(eps, w) * precondition
                    noise = torch.randn(w.shape, generator=noise_gen, device=device, dtype=dtype)
                    update = (-0.5 * step_eps * drift + step_eps.sqrt() * noise) * masks[name]
                    # Diverged chains are parked at w* (finite values) and no longer updated.
                    keep = per_chain(alive, w)
                    weights[name] = torch.where(keep, w + update, w_star[name].expand_as(w))

    return ChainRun(
        loss_trace=loss_trace.cpu(),
        distance_trace=distance_trace.cpu(),
        diverged_at=diverged_at.cpu(),
        final_weights=weights,
        vectorized=vectorized,
        fallback_reason=fallback_reason,
    )
