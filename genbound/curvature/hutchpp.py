"""Hutch++ per layer, with a standard error and a stopping rule on the relative standard error.

For each parameter tensor ``W_k`` the matrix is ``A = H_kk``, the block of the Hessian of the mean
cross-entropy ``L(W) = sum_b (n_b / N) L_b(W)`` on frozen examples (as in
:func:`genbound.curvature.hutchinson`). Hutch++ (Meyer, Musco, Musco & Woodruff 2021, "Hutch++:
Optimal Stochastic Trace Estimation", SOSA) splits the trace with an orthonormal basis ``Q`` of a
sketch ``A S`` (``S``: ``s`` Rademacher columns):

    Tr A = Tr(Q^T A Q) + Tr((I - Q Q^T) A (I - Q Q^T))

which holds for **any** orthonormal ``Q``. The first term is computed exactly (``s`` products
``A q_j``); the second by Hutchinson with Rademacher probes ``g`` projected off ``Q``:
``r = g'^T A g'``, ``g' = g - Q Q^T g``, an unbiased sample of the residual trace. When the
spectrum of ``A`` is dominated by a few eigenvalues (per-layer Hessians of a network on a batch
are: for a piecewise-linear net ``H_kk = J^T H_out J`` has rank at most ``B (C - 1)``) the
residual samples have far less variance than plain Hutchinson's.

Standard error: given ``Q`` the estimate ``Tr(Q^T A Q) + mean(r)`` is unbiased and its only error
is that of ``mean(r)``, so ``se = std(r) / sqrt(n_r)`` is its standard error conditional on the
sketch (a valid error bar for this run; no independent repetitions are needed). With ``s = 0`` the
estimator is plain Hutchinson with independent per-layer probes.

Stopping rule (``rel_se``): after the sketch, residual probes are drawn in rounds; a layer stops
once ``se <= rel_se * |trace|`` with at least ``min_probes`` residual probes, or when it has used
``max_products`` Hessian-vector products (then ``info["converged"]`` says which layers did not
reach the target). Rounds run on all layers still active, so one gradient graph per batch serves
them all; with a single batch the graph is built once for the whole run.

Products are double-backward block products ``grad(g_k, W_k, v)`` in the model's dtype on the
loss of :func:`genbound.curvature._common.stable_cross_entropy` (float64 logits); sums, the QR
of the sketch and the statistics are in float64.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from genbound.curvature._common import (
    Batch,
    as_batches,
    batch_weights,
    make_generator,
    mean_ce,
    model_dtype,
    model_mode,
    rademacher_like,
    resolve_params,
)
from genbound.torch_utils import resolve_device
from genbound.curvature.results import LayerTrace, TraceResult
from genbound.errors import UserInputError


def check_rel_se(rel_se: float | None) -> float | None:
    """``rel_se`` must be ``None`` or a number in (0, 1)."""
    if rel_se is None:
        return None
    try:
        value = float(rel_se)
    except (TypeError, ValueError):
        raise UserInputError(f"rel_se must be a number in (0, 1), e.g. 0.05, got {rel_se!r}") from None
    if not math.isfinite(value) or not 0 < value < 1:
        raise UserInputError(f"rel_se must be a number in (0, 1), e.g. 0.05, got {rel_se!r}")
    return value


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) or int(value) != value:
        raise UserInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise UserInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def hutchpp(
    model: nn.Module,
    data: Batch | Iterable[Batch],
    *,
    params: Sequence[str] | str | None = None,
    sketch: int = 16,
    rel_se: float | None = 0.05,
    n_probes: int = 32,
    min_probes: int = 8,
    max_products: int = 2000,
    bn_mode: str = "eval",
    batch_size: int | None = 256,
    seed: int | None = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> TraceResult:
    """Per-layer Hutch++ estimates of ``Tr H_k`` with standard errors (see the module doc).

    Args:
        model: classifier returning logits; left as it was found.
        data: frozen examples, ``(x, y)`` tensors or an iterable of ``(x, y)`` batches.
        params: ``None`` = WCI layers (Conv*d/Linear weights), ``"all"``, or a list of names.
        sketch: columns ``s`` of the sketch per tensor (``0``: plain Hutchinson); capped at the
            tensor's size. Costs ``2 s`` products per tensor.
        rel_se: stop a tensor once its standard error is at most this fraction of its trace
            (``None``: a fixed ``n_probes`` residual probes).
        n_probes: residual probes per tensor when ``rel_se`` is ``None``.
        min_probes: residual probes before the stopping rule is consulted (>= 2), and the
            smallest round.
        max_products: cap on Hessian-vector products per tensor (sketch included).
        bn_mode, batch_size, seed, device, progress: as in :func:`genbound.curvature.hutchinson`.
    """
    rel_se = check_rel_se(rel_se)
    sketch = _positive_int("sketch", sketch, 0)
    n_probes = _positive_int("n_probes", n_probes, 2)
    min_probes = _positive_int("min_probes", min_probes, 2)
    max_products = _positive_int("max_products", max_products, 2)
    dev = resolve_device(device, model)
    specs, tensors = resolve_params(model, params)
    batches = as_batches(data, batch_size=batch_size, device=dev, dtype=model_dtype(model))
    weights, n_total = batch_weights(batches)
    gen = make_generator(seed, dev)
    K = len(tensors)
    sizes = [min(sketch, t.numel()) for t in tensors]
    for s in sizes:
        if 2 * s + min_probes > max_products:
            raise UserInputError(
                f"max_products={max_products} leaves no room for {min_probes} probes after a sketch of {s} "
                f"(2 x {s} products); raise max_products or lower sketch"
            )
    t0 = time.perf_counter()
    bar = tqdm(disable=not progress, desc="hutch++", unit="product")
    cache: list[tuple[torch.Tensor, ...]] | None = None
    products = [0] * K

    def graphs() -> Iterable[tuple[tuple[torch.Tensor, ...], float]]:
        nonlocal cache
        if len(batches) == 1:
            if cache is None:
                x, y = batches[0]
                cache = [torch.autograd.grad(mean_ce(model, x, y), tensors, create_graph=True)]
            yield cache[0], weights[0]
            return
        for (x, y), w in zip(batches, weights):
            yield torch.autograd.grad(mean_ce(model, x, y), tensors, create_graph=True), w

    def hvp(g: tuple[torch.Tensor, ...], k: int, v: torch.Tensor) -> torch.Tensor:
        (hv,) = torch.autograd.grad(g[k], tensors[k], grad_outputs=v, retain_graph=True)
        products[k] += 1
        bar.update(1)
        return hv

    low = [0.0] * K  # Tr(Q^T A Q)
    resid: list[list[float]] = [[] for _ in range(K)]
    with model_mode(model, bn_mode, params=tensors):
        bases: list[torch.Tensor | None] = [None] * K  # Q_k as (s_k, *shape) in the model's dtype
        if any(sizes):
            sketches = [
                torch.stack([rademacher_like(t.detach(), gen) for _ in range(s)]) if s else None
                for t, s in zip(tensors, sizes)
            ]
            # the sketch only has to span the top eigenvectors: kept in the model's dtype (memory:
            # s x numel per tensor); any orthonormal Q keeps the estimate unbiased
            ys = [torch.zeros(s, t.numel(), dtype=t.dtype, device=dev) for t, s in zip(tensors, sizes)]
            for g, w in graphs():
                for k, S in enumerate(sketches):
                    if S is None:
                        continue
                    for j in range(S.shape[0]):
                        ys[k][j] += w * hvp(g, k, S[j]).reshape(-1)
            for k, Y in enumerate(ys):
                if sizes[k]:
                    q, _ = torch.linalg.qr(Y.T.double())  # (d, s), orthonormal columns (float64)
                    bases[k] = q.T.to(tensors[k].dtype).reshape(sizes[k], *tensors[k].shape).contiguous()
            del ys, sketches
            diag = [torch.zeros(s, dtype=torch.float64, device=dev) for s in sizes]
            for g, w in graphs():
                for k, Q in enumerate(bases):
                    if Q is None:
                        continue
                    for j in range(Q.shape[0]):
                        diag[k][j] += w * (Q[j].double() * hvp(g, k, Q[j]).double()).sum()
            low = [float(d.sum()) for d in diag]

        def project(k: int, v: torch.Tensor) -> torch.Tensor:
            Q = bases[k]
            if Q is None:
                return v
            flat = Q.reshape(Q.shape[0], -1)
            return v - (flat.T @ (flat @ v.reshape(-1))).reshape(v.shape)

        def stats(k: int) -> tuple[float, float]:
            if full(k):
                return low[k], 0.0
            r = torch.tensor(resid[k], dtype=torch.float64)
            mean = low[k] + float(r.mean())
            se = float(r.std(unbiased=True) / math.sqrt(r.numel())) if r.numel() > 1 else float("nan")
            return mean, se

        def used(k: int) -> int:
            return products[k] // len(batches)  # products on the whole data

        def full(k: int) -> bool:
            """The sketch spans the whole tensor: ``Tr(Q^T A Q)`` is the trace, nothing is left."""
            return sizes[k] == tensors[k].numel()

        def done(k: int) -> bool:
            if full(k):
                return True
            n = len(resid[k])
            if rel_se is None:
                return n >= n_probes
            if n < min_probes:
                return False
            if used(k) >= max_products:
                return True
            mean, se = stats(k)
            return se <= rel_se * abs(mean)

        def want(k: int) -> int:
            """Residual probes for tensor ``k`` in the next round."""
            n = len(resid[k])
            room = max_products - used(k)
            if rel_se is None:
                return min(n_probes - n, room)
            if n < min_probes:
                return min(min_probes - n, room)
            mean, se = stats(k)
            # n * (se / target)^2 probes would reach the target if the spread holds; ask for a bit
            # more than the gap, at least min_probes, at most doubling (the spread is itself noisy)
            target = rel_se * abs(mean)
            need = n * (se / target) ** 2 - n if target > 0 else n
            return max(0, min(room, max(min_probes, min(n, int(math.ceil(1.1 * need))))))

        while True:
            active = [k for k in range(K) if not done(k)]
            if not active:
                break
            counts = {k: want(k) for k in active}
            if not any(counts.values()):
                break
            sums = {k: torch.zeros(counts[k], dtype=torch.float64, device=dev) for k in active}
            for g, w in graphs():
                for k in active:
                    for i in range(counts[k]):
                        v = project(k, rademacher_like(tensors[k].detach(), gen))
                        sums[k][i] += w * (v.double() * hvp(g, k, v).double()).sum()
            for k in active:
                resid[k].extend(sums[k].tolist())
        cache = None
    bar.close()
    seconds = time.perf_counter() - t0
    layers: list[LayerTrace] = []
    converged: dict[str, bool] = {}
    var_total = 0.0
    for k, (spec, t) in enumerate(zip(specs, tensors)):
        mean, se = stats(k)
        n_prod = products[k] // len(batches)  # products on the whole data
        layers.append(LayerTrace(spec.name, spec.group, t.numel(), mean, se, n_prod))
        converged[spec.name] = rel_se is None or (math.isfinite(se) and se <= rel_se * abs(mean))
        var_total += se**2 if math.isfinite(se) else math.nan
    info = {
        "estimator": "hutchpp" if sketch else "hutchinson",
        "probe_mode": "layer",
        "products": "hessian",
        "sketch": sketch,
        "rel_se": rel_se,
        "n_probes": None if rel_se is not None else n_probes,
        "min_probes": min_probes,
        "max_products": max_products,
        "hvp_products": sum(lt.n_products or 0 for lt in layers),
        "converged": converged,
        "distribution": "rademacher",
        "bn_mode": bn_mode,
        "n_examples": n_total,
        "n_batches": len(batches),
        "seed": seed,
        "seconds": seconds,
    }
    # layers use independent probes, so their errors add in quadrature
    return TraceResult(layers, sum(lt.trace for lt in layers), math.sqrt(var_total), info)


__all__ = ["check_rel_se", "hutchpp"]
