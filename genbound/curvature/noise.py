"""Trace of the gradient-noise covariance ``Tr C`` of the loss on frozen examples (spec wci.md §5).

``C = Cov_i[g_i]`` with ``g_i = grad_W CE(f_W(x_i), y_i)`` the per-example gradient over the
selected tensors (true labels, same examples as the Hessian). Two estimators:

- ``method="per_sample"`` (exact on the given examples): per-example gradients by
  ``torch.func.vmap(torch.func.grad(.))`` with ``functional_call``;
  ``Tr C = 1/(N-1) sum_i ||g_i - g_bar||^2`` (unbiased sample covariance), per tensor and total.
  Needs ``bn_mode="eval"`` (a single example has no batch statistics).
- ``method="minibatch"``: ``M`` independent mini-batches of size ``B`` drawn from the examples
  (each without replacement), their mean gradients ``g_m``, and
  ``Tr C ~= B * sum_j Var_m(g_m)_j`` (unbiased variance over ``m``), times ``(N-1)/(N-B)`` when
  ``finite_population=True`` (sampling without replacement shrinks the mini-batch variance by
  ``(N-B)/(N-1)``). Works in either BN mode.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from genbound.curvature._common import (
    Batch,
    as_batches,
    make_generator,
    mean_ce,
    model_dtype,
    model_mode,
    resolve_params,
    stable_cross_entropy,
)
from genbound.torch_utils import resolve_device
from genbound.curvature.results import LayerTrace, TraceResult
from genbound.errors import UserInputError


def gradient_noise_trace(
    model: nn.Module,
    data: Batch | Iterable[Batch],
    *,
    params: Sequence[str] | str | None = None,
    method: str = "per_sample",
    minibatch_size: int = 128,
    n_minibatches: int = 16,
    finite_population: bool = False,
    bn_mode: str = "eval",
    batch_size: int | None = 256,
    chunk_size: int | None = 32,
    seed: int | None = 0,
    device: torch.device | str | None = None,
) -> TraceResult:
    """``Tr C`` per tensor and in total (``TraceResult.layers[k].trace`` = ``Tr C_kk``).

    Standard errors are 0 for ``per_sample`` (exact on the examples) and, for ``minibatch``, a
    normal-theory standard error of the variance estimate, ``Tr C * sqrt(2 / (M - 1))`` per
    tensor (indicative only).
    """
    if method not in ("per_sample", "minibatch"):
        raise UserInputError(f"method must be 'per_sample' or 'minibatch', got {method!r}")
    dev = resolve_device(device, model)
    specs, tensors = resolve_params(model, params)
    names = [s.name for s in specs]
    batches = as_batches(data, batch_size=batch_size, device=dev, dtype=model_dtype(model))
    x_all = torch.cat([x for x, _ in batches])
    y_all = torch.cat([y for _, y in batches])
    n = int(x_all.shape[0])
    t0 = time.perf_counter()
    if method == "per_sample":
        if bn_mode != "eval":
            raise UserInputError(
                "per-example gradients need bn_mode='eval' (one example has no batch statistics); "
                "use method='minibatch' for bn_mode='train'"
            )
        if n < 2:
            raise UserInputError("Tr C needs at least 2 examples")
        with model_mode(model, bn_mode, params=tensors):
            sel = {k: t.detach() for k, t in zip(names, tensors)}

            def loss(s: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                out = functional_call(model, s, (x.unsqueeze(0),), strict=False)
                return stable_cross_entropy(out, y.unsqueeze(0))

            per = vmap(grad(loss), in_dims=(None, 0, 0), chunk_size=chunk_size)
            sum_g = [torch.zeros_like(t, dtype=torch.float64) for t in tensors]
            sum_sq = torch.zeros(len(names), dtype=torch.float64, device=dev)
            for x, y in batches:
                g = per(sel, x, y)
                for k, name in enumerate(names):
                    gk = g[name].double()
                    sum_g[k] += gk.sum(0)
                    sum_sq[k] += gk.pow(2).sum()
        mean_sq_of_mean = torch.stack([(s / n).pow(2).sum() for s in sum_g])
        tr = ((sum_sq - n * mean_sq_of_mean) / (n - 1)).cpu()
        se = torch.zeros_like(tr)
        extra: dict[str, object] = {}
    else:
        B, M = int(minibatch_size), int(n_minibatches)
        if not 1 <= B <= n:
            raise UserInputError(f"minibatch_size must be between 1 and the number of examples ({n}), got {B}")
        if M < 2:
            raise UserInputError(f"n_minibatches must be at least 2, got {M}")
        gen = make_generator(seed, dev)
        gs: list[list[torch.Tensor]] = []
        with model_mode(model, bn_mode, params=tensors):
            for _ in range(M):
                idx = torch.randperm(n, generator=gen, device=dev)[:B]
                g = torch.autograd.grad(mean_ce(model, x_all[idx], y_all[idx]), tensors)
                gs.append([t.detach().double() for t in g])
        var = torch.stack([torch.stack([gm[k] for gm in gs]).var(dim=0, unbiased=True).sum() for k in range(len(names))])
        fpc = (n - 1) / (n - B) if finite_population and B < n else 1.0
        tr = (B * fpc * var).cpu()
        se = tr * (2.0 / (M - 1)) ** 0.5
        extra = {"minibatch_size": B, "n_minibatches": M, "finite_population": finite_population, "seed": seed}
    layers = [
        LayerTrace(s.name, s.group, t.numel(), float(a), float(b)) for s, t, a, b in zip(specs, tensors, tr, se)
    ]
    info = {
        "quantity": "trace_c",
        "method": method,
        "bn_mode": bn_mode,
        "n_examples": n,
        "seconds": time.perf_counter() - t0,
        **extra,
    }
    total_se = float(se.pow(2).sum().sqrt())
    return TraceResult(layers, float(tr.sum()), total_se, info)
