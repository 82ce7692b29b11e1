"""Hessian-vector products of a model's loss over a fixed set of batches.

Convention: the operator is the Hessian, with respect to the selected parameter entries, of

    L(w) = sum_b n_b * loss_fn(model_w, batch_b) / sum_b n_b,

the batch-size-weighted mean of the per-batch mean losses, where `n_b` is the batch size (the length
of the first tensor found in the batch). With equally long sequences this is the mean loss over all
examples, so a smaller last batch does not get the weight of a full one. Vectors are flat 1-D tensors
over the selected entries, in the model's parameter order (each tensor flattened in row-major order,
masked tensors contributing only their selected entries). Units: loss units per parameter unit squared.

The model is evaluated in eval mode (dropout off) during every product, its train/eval flags are
restored afterwards, and it is never modified: the products are taken through
`torch.func.functional_call` on detached copies of the weights, so no `.grad` is touched.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from devinterp.core.params import ParamSelector, select_parameters

HVPMethod = Literal["jvp", "double_backward"]
LossFn = Callable[[nn.Module, Any], torch.Tensor]

# Measured on the default attention-only transformer (46k parameters, CPU, scripts/bench_hessian.py):
# one HVP costs 3.3x a gradient with double backward vs 3.6x with jvp(grad) (64 x 64 tokens, 1 thread),
# and 3.5x vs 4.5x (256 x 64 tokens, 2 threads): double backward is the faster of the two here.
DEFAULT_HVP_METHOD: HVPMethod = "double_backward"


def batch_size(batch: Any) -> int:
    """Number of examples in a batch: the leading dimension of the first tensor found in it
    (depth-first through tuples, lists and dict values)."""
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 0:
            raise ValueError("cannot infer a batch size from a 0-d tensor")
        return batch.shape[0]
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        try:
            return batch_size(item)
        except ValueError:
            continue
    raise ValueError(f"cannot infer a batch size: no tensor found in batch of type {type(batch).__name__}")


def _move_batch(batch: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    """A copy of `batch` with every tensor on `device` and floating tensors cast to `dtype` (if given).
    The caller's batch is not modified."""
    if isinstance(batch, torch.Tensor):
        if dtype is not None and batch.is_floating_point():
            return batch.to(device=device, dtype=dtype)
        return batch.to(device=device)
    if isinstance(batch, Mapping):
        return {k: _move_batch(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(_move_batch(v, device, dtype) for v in batch)
    if isinstance(batch, list):
        return [_move_batch(v, device, dtype) for v in batch]
    return batch


@contextmanager
def eval_mode(model: nn.Module):
    """Put every submodule in eval mode; restore each one's own `training` flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


class _BoundLoss(nn.Module):
    """`forward(batch) = loss_fn(model, batch)`, so `functional_call` can swap the model's weights
    even though `loss_fn` calls the model itself."""

    def __init__(self, model: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


class HessianOperator:
    """The loss Hessian over fixed batches as a symmetric linear operator (see the module docstring).

    `matvec(v)` returns H v (one pass over all batches per call; counted in `num_hvps`);
    `gradient()` returns the gradient of the same loss over the same entries (for cost comparisons).
    Build it with `hvp_operator`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Iterable[Any],
        *,
        params: ParamSelector = None,
        method: HVPMethod = DEFAULT_HVP_METHOD,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        if method not in ("jvp", "double_backward"):
            raise ValueError(f"method={method!r} is not one of ['jvp', 'double_backward']")
        reference = next(model.parameters())
        self.device = torch.device(device) if device is not None else reference.device
        self.dtype = dtype if dtype is not None else reference.dtype
        self.method: HVPMethod = method
        self.num_hvps = 0
        self._vmap_failed = False

        if self.device != reference.device or self.dtype != reference.dtype:
            # Work on a converted copy; the caller's model stays exactly as it was.
            model = copy.deepcopy(model).to(device=self.device, dtype=self.dtype)
        self.model = model
        self._bound = _BoundLoss(model, loss_fn)

        self._batches = [_move_batch(b, self.device, dtype) for b in batches]
        if not self._batches:
            raise ValueError("batches is empty")
        sizes = torch.tensor([batch_size(b) for b in self._batches], dtype=torch.float64)
        self.batch_sizes: list[int] = [int(s) for s in sizes]
        self._weights: list[float] = (sizes / sizes.sum()).tolist()

        masks = select_parameters(model, params)
        if not masks:
            raise ValueError("params selects no parameter entries")
        named = dict(model.named_parameters())
        # Every parameter enters functional_call detached; the selected ones are the differentiation
        # variables, the others constants.
        self._constants = {f"model.{n}": p.detach() for n, p in named.items() if n not in masks}
        self._primals = {n: named[n].detach() for n in masks}
        # A mask is stored as the flat indices of its entries (gather/scatter work under vmap, boolean
        # indexing does not), or as None when it selects the whole tensor (no gather/scatter needed).
        self._masks = {n: (None if bool(m.all()) else m.reshape(-1).nonzero().squeeze(1).to(self.device))
                       for n, m in masks.items()}
        self.names: list[str] = list(masks)
        self.sizes: list[int] = [int(m.sum()) for m in masks.values()]
        self.dim: int = sum(self.sizes)

    # ----- flat vectors <-> per-parameter tensors ---------------------------------------------------
    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate the selected entries of per-parameter tensors into one flat vector."""
        parts = []
        for name in self.names:
            t, index = tensors[name], self._masks[name]
            parts.append(t.reshape(-1) if index is None else t.reshape(-1)[index])
        return torch.cat(parts)

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter tensors holding `vector`'s entries at the selected positions, zero elsewhere."""
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a vector of shape ({self.dim},), got {tuple(vector.shape)}")
        out = {}
        for chunk, name in zip(vector.split(self.sizes), self.names):
            primal, index = self._primals[name], self._masks[name]
            if index is None:
                out[name] = chunk.view(primal.shape)
            else:
                out[name] = chunk.new_zeros(primal.numel()).scatter(0, index, chunk).view(primal.shape)
        return out

    # ----- loss, gradient, Hessian-vector product ---------------------------------------------------
    def _batch_loss(self, primals: Mapping[str, torch.Tensor], batch: Any) -> torch.Tensor:
        weights = {**self._constants, **{f"model.{n}": p for n, p in primals.items()}}
        return torch.func.functional_call(self._bound, weights, (batch,))

    def loss(self) -> float:
        """The weighted mean loss L(w) at the model's weights."""
        with torch.no_grad(), eval_mode(self.model):
            return sum(w * float(self._batch_loss(self._primals, b)) for b, w in zip(self._batches, self._weights))

    def gradient(self) -> torch.Tensor:
        """Flat gradient of L over the selected entries (one backward pass per batch)."""
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with eval_mode(self.model):
            for batch, weight in zip(self._batches, self._weights):
                grads = torch.func.grad(self._batch_loss)(self._primals, batch)
                total += weight * self.flatten(grads)
        return total

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector `v` of length `dim` (see the module docstring for the convention)."""
        tangents = self.unflatten(v.to(device=self.device, dtype=self.dtype))
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        hvp = self._hvp_jvp if self.method == "jvp" else self._hvp_double_backward
        with eval_mode(self.model):
            for batch, weight in zip(self._batches, self._weights):
                total += weight * self.flatten(hvp(batch, tangents))
        self.num_hvps += 1
        return total

    __matmul__ = matvec

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        """H v for each row of `vectors` (k, dim), returned as rows (k, dim); counts k products.

        The rows go through one `torch.func.vmap` of the forward-over-reverse product per batch (on the
        default model about 2x faster per vector than k separate products); a model vmap cannot run
        falls back to one product per row. Same convention and result as `matvec` row by row."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (k, {self.dim}), got {tuple(vectors.shape)}")
        vectors = vectors.to(device=self.device, dtype=self.dtype)
        if vectors.shape[0] == 1 or self._vmap_failed:
            return torch.stack([self.matvec(v) for v in vectors])
        total = torch.zeros_like(vectors)
        try:
            with eval_mode(self.model):
                for batch, weight in zip(self._batches, self._weights):
                    one = lambda v, batch=batch: self.flatten(self._hvp_jvp(batch, self.unflatten(v)))  # noqa: E731
                    total += weight * torch.func.vmap(one)(vectors)
        except Exception:  # noqa: BLE001 - any vmap failure: products one at a time
            self._vmap_failed = True
            return torch.stack([self.matvec(v) for v in vectors])
        self.num_hvps += vectors.shape[0]
        return total

    def _hvp_jvp(self, batch: Any, tangents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward-over-reverse: the directional derivative of the gradient along `tangents`."""

        def grad_fn(primals):
            return torch.func.grad(self._batch_loss)(primals, batch)

        _, hv = torch.func.jvp(grad_fn, (self._primals,), (tangents,))
        return hv

    def _hvp_double_backward(self, batch: Any, tangents: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Reverse-over-reverse: differentiate <grad L, tangents> once more."""
        with torch.enable_grad():
            primals = {n: p.detach().requires_grad_(True) for n, p in self._primals.items()}
            inputs = tuple(primals.values())
            loss = self._batch_loss(primals, batch)
            grads = torch.autograd.grad(loss, inputs, create_graph=True, allow_unused=True, materialize_grads=True)
            # <g, t> is a scalar; its gradient is H t. A parameter that enters the loss linearly (or not
            # at all) has a gradient that does not require grad: it contributes nothing to the product.
            dot = sum((g * tangents[n]).sum() for g, n in zip(grads, primals) if g.requires_grad)
            if not isinstance(dot, torch.Tensor):  # no gradient depends on the parameters: H = 0
                return {n: torch.zeros_like(p) for n, p in primals.items()}
            hv = torch.autograd.grad(dot, inputs, allow_unused=True, materialize_grads=True)
        return dict(zip(primals, hv))

    # ----- helpers ---------------------------------------------------------------------------------
    def to_dense(self) -> torch.Tensor:
        """The full dim x dim Hessian, one product per column (only for small problems and tests).
        Symmetrised as (H + H^T) / 2 to remove round-off asymmetry."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        columns = torch.stack([self.matvec(e) for e in eye], dim=1)
        return (columns + columns.T) / 2

    def time_products(self, repeats: int = 3, seed: int = 0) -> dict[str, float]:
        """Median seconds of one gradient and of one H v (not counted in `num_hvps`)."""
        generator = torch.Generator().manual_seed(seed)
        v = torch.randn(self.dim, generator=generator, dtype=torch.float64).to(self.device, self.dtype)
        count = self.num_hvps

        def median_seconds(fn) -> float:
            fn()  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
            return sorted(times)[len(times) // 2]

        result = {"gradient": median_seconds(self.gradient), "hvp": median_seconds(lambda: self.matvec(v))}
        self.num_hvps = count
        return result


def hvp_operator(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any] | Sequence[Any],
    *,
    params: ParamSelector = None,
    method: HVPMethod = DEFAULT_HVP_METHOD,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> HessianOperator:
    """The Hessian of the batch-size-weighted mean loss over `batches` as a `HessianOperator`.

    Args:
        model: any `nn.Module`; used in eval mode, never modified. Attention must be differentiable
            twice (explicit attention, not fused `scaled_dot_product_attention`).
        loss_fn: `loss_fn(model, batch) -> scalar mean loss over the batch` (as for `estimate_llc`).
        batches: the fixed batches, materialised once (moved to `device`; floating tensors cast to
            `dtype` when it is given).
        params: which weights: None (all), names / glob patterns, or `{name: bool mask}`; resolved by
            `devinterp.core.params.select_parameters`. With masks the operator acts on the selected entries.
        method: "jvp" (forward-over-reverse, `torch.func.jvp(grad(f))`) or "double_backward"
            (reverse-over-reverse). Both give the same product; the default was the faster one on
            the attention-only transformer.
        device, dtype: where and in which precision to compute; default: the model's. If either
            differs from the model's, a converted copy of the model is used.
    """
    return HessianOperator(model, loss_fn, batches, params=params, method=method, device=device, dtype=dtype)
