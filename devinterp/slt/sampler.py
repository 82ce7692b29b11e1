"""Batched SGLD over many chains at once: the engine behind `estimate_llc` and `calibrate`.

The chain state is one flat (chains, D) tensor: row c is chain c's sampled tensors, flattened and
concatenated in `FunctionalProblem.names` order (D entries in all, masked-out entries included;
`FunctionalProblem.unflatten` gives the tensors back as views). One step evaluates all chains'
minibatch losses and gradients, then applies the Langevin update to the flat state in a few
whole-state operations. The gradients come from a single `torch.func.vmap` of
`torch.func.grad_and_value` over `FunctionalProblem.flat_loss` (a `torch.func.functional_call` of the
model), or from a Python loop over chains with ordinary autograd: on the CPU when one chain's forward
pass is large (`vmap_pays_off`), and for modules that vmap cannot handle (reported in the diagnostics).

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
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import flop_registry
from tqdm.auto import tqdm

from devinterp.core.params import ParamSelector, select_parameters

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

# On the CPU, vmap over chains beats a loop over them only while one chain's forward pass is small
# (op overhead dominates); above this many FLOPs the loop is as fast or faster. Measured vmap ÷ loop
# per step, 4 chains, 2 cores: deep linear networks 0.66 (1 MFLOP) and 0.93 (17 MFLOP); attention-only
# d 32 at batch 32 0.78 (36 MFLOP); the default attention-only d 64 at batch 16 1.00 (109 MFLOP), 32
# 1.16, 64 1.34, 256 1.8; the grokking GPT-2 at batch 256 1.07 (77 MFLOP), full batch 1.35.
VMAP_MAX_FLOPS = 1e8


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

    Flat layout (the sampler's state): `names`, `shapes` and `sizes` (numels) of the sampled tensors in
    order; `flat_w_star` and `flat_mask` are w* and the masks flattened and concatenated, shape (D,)
    with D = sum(sizes). `w_star` is a view of `flat_w_star`.
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
        dtypes = {named[name].dtype for name in masks}
        if len(dtypes) > 1:
            raise ValueError(f"params: the sampled tensors must share one dtype, got {sorted(map(str, dtypes))}")
        self.masks = {name: mask.to(self.device) for name, mask in masks.items()}
        self.names = list(masks)
        self.shapes = [named[name].shape for name in self.names]
        self.sizes = [named[name].numel() for name in self.names]
        self.flat_w_star = torch.cat([named[name].detach().reshape(-1) for name in self.names])
        self.flat_mask = torch.cat([mask.reshape(-1) for mask in self.masks.values()])
        self.w_star = self.unflatten(self.flat_w_star)
        self.fixed = {name: p.detach() for name, p in named.items() if name not in masks}
        self.buffers = {name: b.detach() for name, b in model_copy.named_buffers()}
        # For `loss`, built once: functional_call's state for the tensors that are not sampled, and the
        # other names of tied tensors (functional_call's tie_weights=True would find them on every call).
        self._aliases = _tied_names(self.module)
        self._unsampled_state = {}
        for name, value in {**self.fixed, **self.buffers}.items():
            self._set_state(self._unsampled_state, name, value)
        self.num_sampled = int(self.flat_mask.sum())
        self.dtype = self.flat_w_star.dtype

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The sampled tensors of a flat (..., D) tensor, as views of shape (..., *shape)."""
        lead = flat.shape[:-1]
        return {name: part.view(*lead, *shape)
                for name, part, shape in zip(self.names, flat.split(self.sizes, dim=-1), self.shapes)}

    def flat_loss(self, flat: torch.Tensor, batch) -> torch.Tensor:
        """`loss` at the sampled tensors given as one flat (D,) vector."""
        return self.loss(self.unflatten(flat), batch)

    def model_at(self, weights: Mapping[str, torch.Tensor] | None = None) -> torch.nn.Module:
        """A copy of the model (eval mode) with its sampled tensors set to `weights` (default w*)."""
        model = copy.deepcopy(self.module.model)
        with torch.no_grad():
            named = dict(model.named_parameters())
            for name, value in (self.w_star if weights is None else weights).items():
                named[name].copy_(value)
        return model

    def _set_state(self, state: dict, name: str, value: torch.Tensor) -> None:
        """state[key] = value for the model tensor `name` under each of its names in `self.module`."""
        key = f"model.{name}"
        state[key] = value
        for alias in self._aliases.get(key, ()):
            state[alias] = value

    def loss(self, sampled: Mapping[str, torch.Tensor], batch) -> torch.Tensor:
        state = dict(self._unsampled_state)
        for name, value in sampled.items():
            self._set_state(state, name, value)
        return torch.func.functional_call(self.module, state, (batch,), tie_weights=False)

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


class _FlopCount(TorchDispatchMode):
    """Counts the FLOPs of the ops `torch.utils.flop_counter` knows (matmuls, convolutions, attention)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


def vmap_pays_off(problem: FunctionalProblem, batch) -> bool:
    """Whether to vmap the chains' gradients (else loop over chains): off the CPU always; on the CPU
    while one chain's forward pass on `batch` at w* costs at most VMAP_MAX_FLOPS (deterministic: the
    choice, and so the numbers, never depend on the machine's load)."""
    if problem.device.type != "cpu":
        return True
    with torch.no_grad(), _FlopCount() as counter:
        problem.loss(problem.w_star, batch)
    return counter.flops <= VMAP_MAX_FLOPS


def _tied_names(module: torch.nn.Module) -> dict[str, list[str]]:
    """For each name of a tensor that `module` holds under several names (tied weights): the others."""
    names_of: dict[torch.Tensor, list[str]] = {}
    tensors = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in tensors:
        names_of.setdefault(tensor, []).append(name)
    return {name: [other for other in names if other != name]
            for names in names_of.values() if len(names) > 1 for name in names}


def _stack_dicts(dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.stack([d[name] for d in dicts]) for name in dicts[0]}


def _collate(data: Dataset, indices: torch.Tensor):
    """Batch of `data` at `indices` (any shape); leaves get the index shape as leading dimensions."""
    if isinstance(data, TensorDataset):  # index_select: the rows of t[indices], faster
        return tuple(t.index_select(0, indices.reshape(-1)).view(*indices.shape, *t.shape[1:]) for t in data.tensors)
    flat = default_collate([data[i] for i in indices.reshape(-1).tolist()])
    return tree_map(lambda t: t.reshape(*indices.shape, *t.shape[1:]) if torch.is_tensor(t) else t, flat)


def _to_device(batch, device):
    if isinstance(batch, tuple) and all(torch.is_tensor(t) for t in batch):  # a TensorDataset batch: no pytree walk
        return tuple(t.to(device) for t in batch)
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
        if self._cursor + self.batch_size > self.n:  # a new epoch: a fresh permutation per chain
            perms = [torch.randperm(self.n, generator=self.generator) for _ in range(self.num_chains)]
            self._perm, self._cursor = torch.stack(perms), 0
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
    """(chains,): a scalar broadcast to every chain, or one value per chain."""
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

    # Flat state (module docstring): weights (chains, D); per-chain settings as (chains, 1) columns; the
    # mask (D,) in the model's dtype, None when every entry is sampled (multiplying by 1 changes nothing).
    w_star = problem.flat_w_star
    mask = None if bool(problem.flat_mask.all()) else problem.flat_mask.to(dtype)
    weights = w_star.unsqueeze(0).repeat(num_chains, 1)
    second_moment = torch.zeros_like(weights) if sampler == "rmsprop_sgld" else None
    eps, nbetas, gammas = eps[:, None], nbetas[:, None], gammas[:, None]

    grad_and_loss = torch.func.grad_and_value(problem.flat_loss)
    vmapped = torch.func.vmap(grad_and_loss, in_dims=(0, batches.chain_dim))

    def looped(stacked, batch):
        grads, losses = [], []
        for c in range(num_chains):
            chain_weights = stacked[c].detach().requires_grad_(True)
            chain_batch = batch if batches.chain_dim is None else tree_map(
                lambda t: t[c] if torch.is_tensor(t) else t, batch
            )
            loss = problem.flat_loss(chain_weights, chain_batch)
            (grad,) = torch.autograd.grad(loss, chain_weights, allow_unused=True)
            grads.append(torch.zeros_like(chain_weights) if grad is None else grad)
            losses.append(loss.detach())
        return torch.stack(grads), torch.stack(losses)

    def noise_like_weights() -> torch.Tensor:
        """N(0, 1) of shape (chains, D), drawn one sampled tensor at a time, (chains, *shape) each."""
        parts = [torch.randn((num_chains, *shape), generator=noise_gen, device=device, dtype=dtype).reshape(num_chains, size)
                 for shape, size in zip(problem.shapes, problem.sizes)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    first = _to_device(_collate(data, torch.arange(batches.batch_size)), device)
    vectorized, fallback_reason = vmap_pays_off(problem, first), None
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

            with torch.no_grad():
                displacement = weights - w_star
                # ‖w − w*‖² over the sampled entries, accumulated in float64
                squared = (displacement if mask is None else displacement * mask) ** 2
                squared_distance = squared.sum(1, dtype=torch.float64)
            ok = torch.isfinite(losses) & torch.isfinite(squared_distance) & (squared_distance <= max_squared_distance)
            diverged_at.masked_fill_(alive & ~ok, step)
            alive = alive & ok
            loss_trace[:, step] = torch.where(alive, losses, float("nan"))
            distance_trace[:, step] = squared_distance.sqrt()
            num_alive = int(alive.sum())
            if num_alive == 0:
                break  # every chain diverged: nothing left to sample

            with torch.no_grad():
                drift = nbetas * grads + gammas * displacement
                if second_moment is not None:  # rmsprop_sgld
                    second_moment.mul_(RMSPROP_ALPHA).addcmul_(drift, drift, value=1 - RMSPROP_ALPHA)
                    debiased = second_moment / (1 - RMSPROP_ALPHA ** (step + 1))  # Adam-style bias correction
                    step_eps = eps * (1.0 / (debiased.sqrt() + RMSPROP_EPS))
                else:
                    step_eps = eps  # plain SGLD: no preconditioner
                update = -0.5 * step_eps * drift + step_eps.sqrt() * noise_like_weights()
                weights = weights + (update if mask is None else update * mask)
                if num_alive < num_chains:  # diverged chains are parked at w* (finite values), no longer updated
                    weights = torch.where(alive[:, None], weights, w_star)

    return ChainRun(
        loss_trace=loss_trace.cpu(),
        distance_trace=distance_trace.cpu(),
        diverged_at=diverged_at.cpu(),
        final_weights=problem.unflatten(weights),
        vectorized=vectorized,
        fallback_reason=fallback_reason,
    )
