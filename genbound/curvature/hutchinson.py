"""Hutchinson estimator of per-layer Hessian traces.

For a symmetric matrix ``A`` and a Rademacher vector ``v`` (independent +-1 entries),
``E[v^T A v] = Tr A`` (Hutchinson 1989, "A stochastic estimator of the trace of the influence
matrix for Laplacian smoothing splines"; the same estimator as PyHessian's ``trace()``, Yao et al.
2020). Here ``A = H_kk``, the block of the Hessian of the mean cross-entropy

    L(W) = sum_b (n_b / N) * mean_{i in b} CE(f_W(x_i), y_i)

with respect to one parameter tensor ``W_k``, at fixed (frozen) examples ``x_i``.

Loop order (spec wci.md §2): batches outside, probes inside. For each batch one gradient graph
``g = grad L_b`` is built with ``create_graph=True`` and reused (``retain_graph=True``) by all
probes; Hessian-vector products are double-backward ``grad(g, W, grad_outputs=v)``.

Two probing modes:

- ``probe_mode="layer"`` (default): an independent block product ``H_kk v_k`` per tensor and
  probe; sample ``v_k^T H_kk v_k``. Lower variance; one backward pass per tensor and probe.
- ``probe_mode="joint"``: one product ``H v`` with ``v = (v_1, ..., v_K)`` per probe, split per
  tensor: sample ``v_k^T (H v)_k = v_k^T H_kk v_k + sum_{j != k} v_k^T H_kj v_j``, unbiased for
  ``Tr H_kk`` (the cross terms have mean zero) but noisier; one backward pass per probe. With
  ``params="all"`` the sum over tensors is PyHessian's whole-model trace estimate.

Products (``products=``): ``"hessian"`` uses the double-backward ``H v`` above (any network).
``"ggn"`` (``probe_mode="joint"`` only) uses ``G v = J^T H_out J v`` instead, with ``J`` the
Jacobian of the logits and ``H_out = (diag(p) - p p^T) / B`` the Hessian of the mean
cross-entropy in the logits: one forward-mode product ``J v`` and one backward ``J^T u`` on the
retained forward graph, cheaper than a double backward. For piecewise-linear networks (ReLU,
pooling, residual sums, eval-mode BatchNorm) every logit is linear in each single weight tensor,
so ``H_kk = G_kk`` for every block and ``E[v_k^T (G v)_k] = Tr G_kk = Tr H_kk``: the same
per-layer traces, and the whole-model sample ``v^T G v >= 0``. (The off-diagonal blocks differ,
``H != G``, which only changes the noise.) ``"auto"`` (default) takes ``"ggn"`` in joint mode
when :func:`genbound.curvature.fisher.check_piecewise_linear` accepts the model, else
``"hessian"``.

Probe ``p`` gives one sample per tensor, ``s_pk = sum_b (n_b/N) v_{pbk}^T [H_b v_{pb}]_k``, with
fresh vectors for every batch (independent draws keep it unbiased and lower its variance). The
estimate is ``mean_p s_pk`` and its standard error ``std_p(s_pk) / sqrt(P)``.
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
    softmax_hessian_product,
)
from genbound.torch_utils import resolve_device
from genbound.curvature.hutchpp import check_rel_se
from genbound.curvature.results import LayerTrace, TraceResult
from genbound.errors import UserInputError

PROBE_MODES = ("layer", "joint")
PRODUCTS = ("auto", "hessian", "ggn")


def hutchinson(
    model: nn.Module,
    data: Batch | Iterable[Batch],
    *,
    params: Sequence[str] | str | None = None,
    n_probes: int = 32,
    probe_mode: str = "layer",
    bn_mode: str = "eval",
    batch_size: int | None = 256,
    probe_batch: int = 1,
    seed: int | None = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    products: str = "auto",
    rel_se: float | None = None,
    max_probes: int = 2000,
) -> TraceResult:
    """Per-layer Hutchinson estimates of ``Tr H_k`` with standard errors.

    Args:
        model: classifier returning logits; it is not modified (see ``_common.model_mode``).
        data: frozen examples, ``(x, y)`` tensors or an iterable of ``(x, y)`` batches.
        params: ``None`` = WCI layers (Conv*d/Linear weights), ``"all"``, or a list of names.
        n_probes: number ``P`` of Rademacher probes (>= 2 for a standard error).
        probe_mode: ``"layer"`` (independent block HVP per tensor) or ``"joint"`` (one HVP).
        bn_mode: ``"eval"`` (running statistics) or ``"train"`` (batch statistics; running
            statistics are left untouched).
        batch_size: split ``(x, y)`` tensors into batches of this size (ignored for iterables).
        probe_batch: number of probes evaluated together by one batched backward
            (``is_grads_batched``); trades memory for speed, same estimate distribution.
        seed: seed of the probe generator (``None``: nondeterministic).
        device: where to compute; must be the model's device (``None``: the model's).
        progress: show a progress bar.
        products: ``"hessian"`` (double backward, any network), ``"ggn"`` (joint mode,
            piecewise-linear networks: same per-layer traces, cheaper products) or ``"auto"``
            (``"ggn"`` where it is exact and applies, else ``"hessian"``); see the module doc.
        rel_se: stopping rule: after the first ``n_probes`` probes, keep drawing rounds of probes
            (for every tensor) until each tensor's standard error is at most ``rel_se`` times
            its trace, or ``max_probes`` probes were drawn (``info["converged"]`` says which
            tensors reached it). ``None``: exactly ``n_probes`` probes.
            :func:`genbound.curvature.hutchpp` stops each tensor on its own and needs far fewer
            products for the same error.
        max_probes: cap on the probes with ``rel_se``.
    """
    if products not in PRODUCTS:
        raise UserInputError(f"products must be one of {', '.join(PRODUCTS)}, got {products!r}")
    if probe_mode not in PROBE_MODES:
        raise UserInputError(f"probe_mode must be 'layer' or 'joint', got {probe_mode!r}")
    if int(n_probes) < 1:
        raise UserInputError(f"n_probes must be at least 1, got {n_probes}")
    if int(probe_batch) < 1:
        raise UserInputError(f"probe_batch must be at least 1, got {probe_batch}")
    n_probes, probe_batch = int(n_probes), int(probe_batch)
    rel_se = check_rel_se(rel_se)
    if rel_se is not None and (n_probes < 2 or int(max_probes) < n_probes):
        raise UserInputError(
            f"with rel_se, n_probes (the first round) must be >= 2 and max_probes >= n_probes; got "
            f"n_probes={n_probes}, max_probes={max_probes}"
        )
    products = _resolve_products(model, products, probe_mode, bn_mode)
    dev = resolve_device(device, model)
    specs, tensors = resolve_params(model, params)
    batches = as_batches(data, batch_size=batch_size, device=dev, dtype=model_dtype(model))
    weights, n_total = batch_weights(batches)
    gen = make_generator(seed, dev)
    t0 = time.perf_counter()
    bar = tqdm(total=len(batches) * n_probes, disable=not progress, desc="hutchinson", unit="probe")

    def run(n: int) -> torch.Tensor:
        # samples[p, k]: probe p, tensor k; accumulated on the device (no host sync per product).
        samples = torch.zeros(n, len(tensors), dtype=torch.float64, device=dev)
        for (x, y), w in zip(batches, weights):
            if products == "ggn":
                names = [spec.name for spec in specs]
                logits = model(x)
                for k in range(n):
                    samples[k] += w * _ggn_joint_probe(model, x, names, tensors, logits, gen)
                    bar.update(1)
                del logits
                continue
            grads = torch.autograd.grad(mean_ce(model, x, y), tensors, create_graph=True)
            for start in range(0, n, probe_batch):
                stop = min(start + probe_batch, n)
                samples[start:stop] += w * _probe_block(grads, tensors, stop - start, probe_mode, gen)
                bar.update(stop - start)
            del grads
        return samples

    with model_mode(model, bn_mode, params=tensors):
        s = run(n_probes).cpu()
        while rel_se is not None and s.shape[0] < int(max_probes):
            need = _probes_needed(s, rel_se)
            if need <= s.shape[0]:
                break
            # at most double per round: the spread that sets the need is itself noisy
            more = min(int(max_probes), need, 2 * s.shape[0]) - s.shape[0]
            bar.total += len(batches) * more
            s = torch.cat([s, run(more).cpu()])
    bar.close()
    seconds = time.perf_counter() - t0
    layers = []
    for k, (spec, t) in enumerate(zip(specs, tensors)):
        mean, se = _mean_se(s[:, k])
        layers.append(LayerTrace(spec.name, spec.group, t.numel(), mean, se, int(s.shape[0])))
    total, total_se = _mean_se(s.sum(dim=1))
    info = {
        "estimator": "hutchinson",
        "probe_mode": probe_mode,
        "products": products,
        "n_probes": int(s.shape[0]),
        "rel_se": rel_se,
        "converged": None if rel_se is None else {
            lt.name: lt.se <= rel_se * abs(lt.trace) for lt in layers
        },
        "distribution": "rademacher",
        "bn_mode": bn_mode,
        "n_examples": n_total,
        "n_batches": len(batches),
        "seed": seed,
        "seconds": seconds,
    }
    return TraceResult(layers, total, total_se, info)


def _probe_block(
    grads: Sequence[torch.Tensor],
    tensors: Sequence[torch.Tensor],
    n: int,
    probe_mode: str,
    gen: torch.Generator,
) -> torch.Tensor:
    """Samples ``v_k^T (H v)_k`` (joint) or ``v_k^T H_kk v_k`` (layer) for ``n`` probes: (n, K)."""
    out = torch.empty(n, len(tensors), dtype=torch.float64, device=grads[0].device)
    batched = n > 1
    if probe_mode == "joint":
        vs = [_draw(t, n, gen) for t in tensors]
        hvs = torch.autograd.grad(
            grads, tensors, grad_outputs=vs if batched else [v[0] for v in vs],
            retain_graph=True, is_grads_batched=batched,
        )
        for k, (v, hv) in enumerate(zip(vs, hvs)):
            hv = hv if batched else hv.unsqueeze(0)
            out[:, k] = (v.flatten(1) * hv.flatten(1)).sum(dim=1)
        return out
    for k, (g, t) in enumerate(zip(grads, tensors)):
        v = _draw(t, n, gen)
        (hv,) = torch.autograd.grad(
            g, t, grad_outputs=v if batched else v[0], retain_graph=True, is_grads_batched=batched
        )
        hv = hv if batched else hv.unsqueeze(0)
        out[:, k] = (v.flatten(1) * hv.flatten(1)).sum(dim=1)
    return out


def _resolve_products(model: nn.Module, products: str, probe_mode: str, bn_mode: str) -> str:
    """``"hessian"`` or ``"ggn"`` for this call (see the module doc)."""
    if products == "hessian":
        return products
    if probe_mode != "joint":
        if products == "ggn":
            raise UserInputError("products='ggn' is implemented for probe_mode='joint'; use products='hessian' or 'auto'")
        return "hessian"
    from genbound.curvature.fisher import check_piecewise_linear

    try:
        check_piecewise_linear(model, bn_mode=bn_mode)
    except UserInputError as exc:
        if products == "ggn":
            raise UserInputError(f"products='ggn' gives the Hessian traces only for piecewise-linear networks: {exc}") from None
        return "hessian"
    return "ggn"


def _ggn_joint_probe(
    model: nn.Module,
    x: torch.Tensor,
    names: Sequence[str],
    tensors: Sequence[torch.Tensor],
    logits: torch.Tensor,
    gen: torch.Generator,
) -> torch.Tensor:
    """Samples ``v_k^T (G v)_k`` for one probe, ``G = J^T H_out J`` of the batch-mean CE: (K,)."""
    from torch.func import functional_call, jvp

    vs = [rademacher_like(t.detach(), gen) for t in tensors]

    def logits_of(*ts: torch.Tensor) -> torch.Tensor:
        return functional_call(model, dict(zip(names, ts)), (x,))

    _, jv = jvp(logits_of, tuple(t.detach() for t in tensors), tuple(vs))
    # H_out J v in float64 without cancellation (a saturated softmax), back in the logits' dtype
    u = (softmax_hessian_product(logits, jv) / x.shape[0]).to(logits.dtype)
    gvs = torch.autograd.grad(logits, tensors, grad_outputs=u, retain_graph=True)
    return torch.stack([(v * gv).sum() for v, gv in zip(vs, gvs)]).to(torch.float64)


def _probes_needed(s: torch.Tensor, rel_se: float) -> int:
    """Probes for every column of ``s`` (probes x tensors) to reach ``se <= rel_se * |mean|``,
    if the columns' spread holds: ``ceil(1.1 * var / (rel_se * mean)^2)``, the most over columns."""
    mean = s.mean(dim=0).abs()
    var = s.var(dim=0, unbiased=True)
    need = torch.where(var == 0, torch.zeros_like(var), 1.1 * var / (rel_se * mean) ** 2)
    worst = float(need.max())
    return int(math.ceil(worst)) if math.isfinite(worst) else 2**31


def _draw(t: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    return rademacher_like(t.detach().expand(n, *t.shape), gen)


def _mean_se(col: torch.Tensor) -> tuple[float, float]:
    n = col.numel()
    mean = float(col.mean())
    se = float(col.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return mean, se
