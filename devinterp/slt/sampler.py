"""Batched SGLD over many chains at once: the engine behind `estimate_llc` and `calibrate`.

Samplers (`SAMPLERS`), all with the drift nβ ∇L_B(w) + γ (w − w*) and an optional fixed diagonal
preconditioner P (`devinterp.slt.preconditioning`; 1 without it):

- `sgld`: the Euler–Maruyama step w ← w − (ε/2) P ⊙ drift + √(εP) ⊙ ξ_t, ξ_t ~ N(0, I): the SGLD of
  Welling & Teh 2011 and of the devinterp library.
- `lm_sgld`: the same step with the noise √(εP) ⊙ (ξ_t + ξ_{t−1})/2 (Leimkuhler & Matthews 2013, the
  high-friction limit of BAOAB; Leimkuhler, Matthews & Tretyakov 2014). Same cost, but on a Gaussian
  target its stationary law is exact for every stable ε (ε·κ < 4 in each direction of curvature κ),
  where Euler–Maruyama inflates the variance by 1/(1 − εκ/4); on other targets its bias is O(ε²),
  not O(ε).
- `rmsprop_sgld`: RMSprop-preconditioned SGLD (Li et al. 2016, as in the devinterp library): P =
  1/(√v + RMSPROP_EPS) with v a moving average of drift² along the chain. No correction term for the
  moving P (Ma, Chen & Fox 2015), so it samples a distorted law; kept for comparison.

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
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from scipy.stats import chi2
from torch.utils.data import Dataset, TensorDataset, default_collate
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import flop_registry
from tqdm.auto import tqdm

from devinterp.core.params import ParamSelector, select_parameters
from devinterp.hessian.hvp import LossFn


SAMPLERS = ("sgld", "lm_sgld", "rmsprop_sgld")

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
    final_weights: torch.Tensor  # (chains, D) the flat state after the last step (`FunctionalProblem.unflatten`)
    vectorized: bool
    fallback_reason: str | None

    def then(self, later: "ChainRun") -> "ChainRun":
        """This run followed by `later`, the same chains continued from `final_weights`: one run of both
        lengths. A chain that diverged in this run stays diverged, at its step here."""
        steps = self.loss_trace.shape[1]
        diverged_at = torch.where(self.diverged_at >= 0, self.diverged_at,
                                  torch.where(later.diverged_at >= 0, later.diverged_at + steps, -1))
        return ChainRun(loss_trace=torch.cat([self.loss_trace, later.loss_trace], dim=1),
                        distance_trace=torch.cat([self.distance_trace, later.distance_trace], dim=1),
                        diverged_at=diverged_at, final_weights=later.final_weights,
                        vectorized=self.vectorized and later.vectorized,
                        fallback_reason=self.fallback_reason or later.fallback_reason)


def _per_chain(values, num_chains: int, device, dtype) -> torch.Tensor:
    """(chains,): a scalar broadcast to every chain, or one value per chain."""
    tensor = torch.as_tensor(values, dtype=dtype, device=device).reshape(-1)
    if tensor.numel() == 1:
        tensor = tensor.expand(num_chains)
    if tensor.numel() != num_chains:
        raise ValueError(f"expected one value or {num_chains} per-chain values, got {tensor.numel()}")
    return tensor.clone()


class _ChainGradients:
    """Minibatch gradients and losses of all chains at once: (chains, D) gradients, (chains,) losses.

    One `torch.func.vmap` over the chains when `vmap_pays_off`, else (or when vmap fails on this model,
    said in `fallback_reason` with a warning) a Python loop over chains with ordinary autograd."""

    def __init__(self, problem: FunctionalProblem, num_chains: int, chain_dim: int | None, first_batch):
        self.problem, self.num_chains, self.chain_dim = problem, num_chains, chain_dim
        self.vectorized, self.fallback_reason = vmap_pays_off(problem, first_batch), None
        self._vmapped = torch.func.vmap(torch.func.grad_and_value(problem.flat_loss), in_dims=(0, chain_dim))

    def __call__(self, weights: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.vectorized:
            try:
                grads, losses = self._vmapped(weights, batch)
                return grads, losses.detach()
            except Exception as error:  # noqa: BLE001 - any vmap failure means: use the loop
                self.vectorized, self.fallback_reason = False, f"{type(error).__name__}: {error}"
                warnings.warn(f"estimate_llc: torch.func.vmap cannot run this model ({self.fallback_reason}); "
                              "falling back to a Python loop over chains (slower).", RuntimeWarning, stacklevel=4)
        return self._looped(weights, batch)

    def _looped(self, stacked: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        grads, losses = [], []
        for c in range(self.num_chains):
            chain_weights = stacked[c].detach().requires_grad_(True)
            chain_batch = batch if self.chain_dim is None else tree_map(
                lambda t: t[c] if torch.is_tensor(t) else t, batch)
            loss = self.problem.flat_loss(chain_weights, chain_batch)
            (grad,) = torch.autograd.grad(loss, chain_weights, allow_unused=True)
            grads.append(torch.zeros_like(chain_weights) if grad is None else grad)
            losses.append(loss.detach())
        return torch.stack(grads), torch.stack(losses)


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
    preconditioner: torch.Tensor | None = None,
    initial_weights: torch.Tensor | None = None,
    progress: bool = False,
) -> ChainRun:
    """Run `num_chains` chains of `sampler` (module docstring) for `num_steps` steps, all at once.

    `step_size`, `nbeta`, `localization`: a scalar or one value per chain. `init_loss` is L_n(w*);
    `sample_losses` the per-sample losses at w* that make the read-out's control variate (without
    them the read-out is the plain minibatch loss). Each step records the loss of the forward pass
    that also gives the gradient, i.e. the loss *before* the update.

    preconditioner: a fixed diagonal P, (D,) in (0, 1], for `sgld` and `lm_sgld`; a fixed P leaves the
    sampled law unchanged (`devinterp.slt.preconditioning`). initial_weights: the chains' flat (chains,
    D) starting states (default w* for every chain), e.g. `ChainRun.final_weights` to continue chains.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not one of {SAMPLERS}")
    if preconditioner is not None and sampler == "rmsprop_sgld":
        raise ValueError("a fixed preconditioner needs sampler 'sgld' or 'lm_sgld', not 'rmsprop_sgld'")
    device, dtype = problem.device, problem.dtype
    eps = _per_chain(step_size, num_chains, device, dtype)[:, None]
    nbetas = _per_chain(nbeta, num_chains, device, dtype)[:, None]
    gammas = _per_chain(localization, num_chains, device, dtype)[:, None]
    largest_step = eps[:, 0] * (1.0 if preconditioner is None else float(preconditioner.max()))
    max_squared_distance = divergence_bound(problem.num_sampled, largest_step.to(torch.float64),
                                            gammas[:, 0].to(torch.float64))
    batches = MinibatchStream(data, batch_size, num_chains, torch.Generator().manual_seed(seed + 1_000_003), device)
    gradients = _ChainGradients(problem, num_chains, batches.chain_dim,
                                _to_device(_collate(data, torch.arange(batches.batch_size)), device))
    langevin = _LangevinStep(problem, num_chains, eps, sampler, preconditioner, seed)
    w_star = problem.flat_w_star
    weights = w_star.unsqueeze(0).repeat(num_chains, 1) if initial_weights is None else initial_weights.clone()
    trace = _Trace(num_chains, num_steps, device)
    if sample_losses is not None:
        sample_losses = sample_losses.to(device=device, dtype=torch.float64)

    # Global RNG state is forked so nothing inside the user's model or loss_fn can consume the
    # caller's random stream.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for step in tqdm(range(num_steps), disable=not progress, desc="SGLD", leave=False):
            batch, indices = batches.next()
            grads, losses = gradients(weights, batch)
            losses = losses.to(torch.float64)
            if sample_losses is not None and indices is not None:
                losses = losses - sample_losses[indices.to(device)].mean(dim=1) + init_loss
            with torch.no_grad():
                displacement = weights - w_star
            if not trace.record(step, losses, displacement, langevin.mask, max_squared_distance):
                break  # every chain diverged: nothing left to sample
            with torch.no_grad():
                weights = langevin.step(weights, nbetas * grads + gammas * displacement, trace.alive)

    return ChainRun(loss_trace=trace.losses.cpu(), distance_trace=trace.distances.cpu(),
                    diverged_at=trace.diverged_at.cpu(), final_weights=weights,
                    vectorized=gradients.vectorized, fallback_reason=gradients.fallback_reason)


class _Trace:
    """The per-step record of all chains, and which are still alive (see the divergence rule above)."""

    def __init__(self, num_chains: int, num_steps: int, device):
        self.losses = torch.full((num_chains, num_steps), float("nan"), dtype=torch.float64, device=device)
        self.distances = torch.zeros((num_chains, num_steps), dtype=torch.float64, device=device)
        self.alive = torch.ones(num_chains, dtype=torch.bool, device=device)
        self.diverged_at = torch.full((num_chains,), -1, dtype=torch.int64, device=device)

    @torch.no_grad()
    def record(self, step: int, losses: torch.Tensor, displacement: torch.Tensor, mask: torch.Tensor | None,
               max_squared_distance: torch.Tensor) -> bool:
        """Record one step's read-out losses and distances; False once every chain has diverged."""
        squared = (displacement if mask is None else displacement * mask) ** 2
        squared_distance = squared.sum(1, dtype=torch.float64)  # accumulated in float64
        ok = torch.isfinite(losses) & torch.isfinite(squared_distance) & (squared_distance <= max_squared_distance)
        self.diverged_at.masked_fill_(self.alive & ~ok, step)
        self.alive &= ok
        self.losses[:, step] = torch.where(self.alive, losses, float("nan"))
        self.distances[:, step] = squared_distance.sqrt()
        return bool(self.alive.any())


class _LangevinStep:
    """The update w ← w − (ε/2) P ⊙ drift + √(εP) ⊙ noise on the sampled entries (module docstring):
    P is 1, the fixed preconditioner, or RMSprop's 1/(√v + RMSPROP_EPS) with v the bias-corrected moving
    average of drift²; the noise is ξ_t, or (ξ_t + ξ_{t−1})/2 for `lm_sgld`."""

    def __init__(self, problem: FunctionalProblem, num_chains: int, eps: torch.Tensor, sampler: str,
                 preconditioner: torch.Tensor | None, seed: int):
        self.problem, self.num_chains, self.eps = problem, num_chains, eps
        self.w_star = problem.flat_w_star
        # the mask (D,) in the model's dtype, None when every entry is sampled (multiplying by 1 changes nothing)
        self.mask = None if bool(problem.flat_mask.all()) else problem.flat_mask.to(problem.dtype)
        self.generator = torch.Generator(device=problem.device).manual_seed(seed)
        self.step_size = eps if preconditioner is None else eps * preconditioner.to(problem.dtype)
        self.second_moment = None
        if sampler == "rmsprop_sgld":
            self.second_moment = torch.zeros((num_chains, problem.flat_w_star.numel()), dtype=problem.dtype,
                                             device=problem.device)
        self.count = 0
        self.previous_noise = self._noise() if sampler == "lm_sgld" else None

    def step(self, weights: torch.Tensor, drift: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        step_size = self.step_size
        if self.second_moment is not None:
            self.count += 1
            self.second_moment.mul_(RMSPROP_ALPHA).addcmul_(drift, drift, value=1 - RMSPROP_ALPHA)
            debiased = self.second_moment / (1 - RMSPROP_ALPHA**self.count)  # Adam-style bias correction
            step_size = self.eps / (debiased.sqrt() + RMSPROP_EPS)
        noise = self._noise()
        if self.previous_noise is not None:  # lm_sgld: the mean of this step's and the previous step's draws
            noise, self.previous_noise = (self.previous_noise + noise) / 2, noise
        update = -0.5 * step_size * drift + step_size.sqrt() * noise
        weights = weights + (update if self.mask is None else update * self.mask)
        if not bool(alive.all()):  # diverged chains are parked at w* (finite values), no longer updated
            weights = torch.where(alive[:, None], weights, self.w_star)
        return weights

    def _noise(self) -> torch.Tensor:
        """N(0, 1) of shape (chains, D), drawn one sampled tensor at a time, (chains, *shape) each."""
        p = self.problem
        parts = [torch.randn((self.num_chains, *shape), generator=self.generator, device=p.device,
                             dtype=p.dtype).reshape(self.num_chains, size)
                 for shape, size in zip(p.shapes, p.sizes)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
