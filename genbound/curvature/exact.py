"""Exact Hessian blocks for tiny layers (tests and oracles).

``H_kk = sum_b (n_b / N) * d^2 L_b / dW_k^2`` is computed with ``torch.func.hessian``
(forward-over-reverse: ``jacfwd(jacrev(.))``) of the batch-mean cross-entropy as a function of
``W_k`` alone, through ``torch.func.functional_call``; every other parameter and buffer is held at
the model's value. The loss is :func:`genbound.curvature._common.stable_cross_entropy` (float64
logits, exact curvature at a saturated softmax); the network runs in its own dtype. Memory grows as ``numel(W_k)^2`` times the batch: for tiny layers only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, hessian

from genbound.curvature._common import (
    Batch,
    as_batches,
    batch_weights,
    model_dtype,
    model_mode,
    resolve_params,
    stable_cross_entropy,
)
from genbound.torch_utils import resolve_device
from genbound.curvature.results import LayerTrace, TraceResult
from genbound.errors import UserInputError

MAX_EXACT_NUMEL = 20_000


def exact_blocks(
    model: nn.Module,
    data: Batch | Iterable[Batch],
    *,
    params: Sequence[str] | str | None = None,
    bn_mode: str = "eval",
    batch_size: int | None = 256,
    joint: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Exact Hessian blocks ``{name: H_kk}`` as ``(numel, numel)`` matrices.

    With ``joint=True`` the full Hessian over all selected tensors (concatenated in selection
    order, each flattened) is returned under the key ``"__all__"``, cross blocks included.
    """
    dev = resolve_device(device, model)
    specs, tensors = resolve_params(model, params)
    sizes = [t.numel() for t in tensors]
    if (sum(sizes) if joint else max(sizes)) > MAX_EXACT_NUMEL:
        raise UserInputError(
            f"exact Hessians are for tiny layers (at most {MAX_EXACT_NUMEL} entries per block); "
            "use estimator='hutchinson' or 'fisher' for this model"
        )
    batches = as_batches(data, batch_size=batch_size, device=dev, dtype=model_dtype(model))
    weights, _ = batch_weights(batches)
    names = [s.name for s in specs]
    groups: list[list[int]] = [list(range(len(specs)))] if joint else [[k] for k in range(len(specs))]
    out: dict[str, torch.Tensor] = {}
    with model_mode(model, bn_mode, params=tensors):
        for idx in groups:
            base = [tensors[k].detach() for k in idx]
            shapes = [b.shape for b in base]
            flat0 = torch.cat([b.reshape(-1) for b in base])
            total = torch.zeros(flat0.numel(), flat0.numel(), dtype=flat0.dtype, device=dev)
            for (x, y), w in zip(batches, weights):

                def loss(flat: torch.Tensor, x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                    pieces, off = {}, 0
                    for k, shape in zip(idx, shapes):
                        n = int(torch.Size(shape).numel())
                        pieces[names[k]] = flat[off : off + n].view(shape)
                        off += n
                    logits = functional_call(model, pieces, (x,), strict=False)
                    return stable_cross_entropy(logits, y)

                total += w * hessian(loss)(flat0)
            out["__all__" if joint else names[idx[0]]] = (0.5 * (total + total.T)).detach()
    return out


def exact(
    model: nn.Module,
    data: Batch | Iterable[Batch],
    *,
    params: Sequence[str] | str | None = None,
    bn_mode: str = "eval",
    batch_size: int | None = 256,
    device: torch.device | str | None = None,
) -> TraceResult:
    """Exact per-layer traces ``Tr H_kk`` from :func:`exact_blocks` (standard errors are 0)."""
    t0 = time.perf_counter()
    dev = resolve_device(device, model)
    specs, tensors = resolve_params(model, params)
    batches = as_batches(data, batch_size=batch_size, device=dev, dtype=model_dtype(model))
    blocks = exact_blocks(
        model, batches, params=[s.name for s in specs], bn_mode=bn_mode, batch_size=None, device=dev
    )
    layers = [
        LayerTrace(s.name, s.group, t.numel(), float(torch.diagonal(blocks[s.name]).sum()), 0.0)
        for s, t in zip(specs, tensors)
    ]
    n = sum(int(x.shape[0]) for x, _ in batches)
    info = {
        "estimator": "exact",
        "bn_mode": bn_mode,
        "n_examples": n,
        "seconds": time.perf_counter() - t0,
    }
    return TraceResult(layers, sum(lt.trace for lt in layers), 0.0, info)
