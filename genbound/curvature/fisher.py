"""Exact Fisher identity for per-layer Hessian traces of piecewise-linear networks.

If the logits ``z = f_W(x)`` are piecewise linear in each single tensor ``W_k`` (ReLU-type
activations, max/avg pooling, residual sums, Conv/Linear layers, eval-mode BatchNorm: an affine
map), then ``d^2 z / dW_k^2 = 0`` almost everywhere and the block ``H_kk`` of the Hessian of the
mean cross-entropy equals its Gauss-Newton part (Schraudolph 2002; Martens 2020, "New insights and
perspectives on the natural gradient method", §9), which for cross-entropy is the true Fisher:

    H_kk = (1/N) sum_i J_ik^T (diag p_i - p_i p_i^T) J_ik,     J_ik = dz(x_i)/dW_k,
    Tr H_kk = (1/N) sum_i E_{y ~ p_i} || grad_{W_k} CE(f_W(x_i), y) ||^2

because ``diag p - p p^T = sum_c p_c (e_c - p)(e_c - p)^T`` and ``grad_z CE(z, c) = p - e_c``
(background-wci.md §1.4, §2.3; checked numerically in the tests against exact Hessian blocks).

Per-sample gradients come from ``torch.func``: for each example one forward pass and its
``vjp``, ``vmap``-ed over the cotangents ``p_i - e_c`` (all classes, weights ``p_i(c)``: exact),
or over ``K`` labels sampled from ``p_i`` (weights ``1/K``: unbiased Monte Carlo).

Only the block traces are exact: the whole-network Hessian has off-diagonal terms that the Fisher
does not contain; WCI needs only the blocks. The identity fails with smooth activations (GELU,
SiLU, ...), data-dependent normalization (LayerNorm, GroupNorm, train-mode BatchNorm) or losses
other than cross-entropy; :func:`check_piecewise_linear` refuses the modules it can see. Functional
calls inside ``forward`` (``F.gelu(x)``, ``torch.tanh(x)``, ``x.softmax(...)``) cannot be seen:
with such models pass ``assume_piecewise_linear=True`` only if you know the forward is piecewise
linear, otherwise use :func:`genbound.curvature.hutchinson`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call, vjp, vmap
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm.auto import tqdm

from genbound.curvature._common import (
    Batch,
    as_batches,
    ce_logit_gradients,
    make_generator,
    model_dtype,
    model_mode,
    resolve_params,
)
from genbound.torch_utils import resolve_device
from genbound.curvature.results import LayerTrace, TraceResult
from genbound.errors import UserInputError

#: torch.nn modules under which the logits are piecewise linear in every parameter tensor.
PIECEWISE_LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.modules.conv._ConvNd,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Hardtanh,
    nn.Threshold,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.modules.dropout._DropoutNd,  # identity in eval mode
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.ZeroPad2d,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.Upsample,  # nearest/linear interpolation is linear in its input
    nn.ChannelShuffle,
    _BatchNorm,  # eval mode only (checked separately)
)

_CONTAINERS: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def check_piecewise_linear(model: nn.Module, *, bn_mode: str = "eval") -> None:
    """Raise ``UserInputError`` when a module of ``model`` makes the Fisher identity inexact.

    Every module defined in ``torch.nn`` must be a container or one of
    :data:`PIECEWISE_LINEAR_MODULES`; BatchNorm must run in eval mode (``bn_mode="eval"``). Modules
    of other libraries or of the user are looked through (their children are checked); what their
    ``forward`` computes with functions cannot be checked.
    """
    if bn_mode != "eval":
        raise UserInputError(
            "the fisher estimator needs bn_mode='eval': with batch statistics the network is not "
            "piecewise linear in the weights before BatchNorm; use estimator='hutchinson' for bn_mode='train'"
        )
    bad: list[str] = []
    for name, mod in model.named_modules():
        if isinstance(mod, _CONTAINERS) or isinstance(mod, PIECEWISE_LINEAR_MODULES):
            continue
        if type(mod).__module__.startswith("torch.nn"):
            bad.append(f"{name or '<root>'} ({type(mod).__name__})")
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UserInputError(
            f"the fisher estimator is exact only for piecewise-linear networks, and this model has {shown}; "
            "use estimator='hutchinson' (valid for any network)"
        )


def fisher(
    model: nn.Module,
    data: Batch | Iterable[Batch],
    *,
    params: Sequence[str] | str | None = None,
    labels: str = "exact",
    n_label_samples: int = 8,
    bn_mode: str = "eval",
    batch_size: int | None = 256,
    chunk_size: int | None = None,
    assume_piecewise_linear: bool = False,
    seed: int | None = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> TraceResult:
    """Per-layer ``Tr H_k`` by the Fisher identity (exact for piecewise-linear nets, eval-mode BN).

    Args:
        labels: ``"exact"`` (expectation over all classes with weights ``p_i(c)``; standard error 0)
            or ``"sample"`` (``n_label_samples`` labels drawn from ``p_i`` per example; standard
            error from the spread between draws of the same example, conditional on the examples).
        chunk_size: examples per ``vmap`` chunk (default: as many as fit ~256 MB of gradients).
        assume_piecewise_linear: skip the module check (you vouch for the forward).
        Other arguments as in :func:`genbound.curvature.hutchinson`.
    """
    if labels not in ("exact", "sample"):
        raise UserInputError(f"labels must be 'exact' or 'sample', got {labels!r}")
    if labels == "sample" and int(n_label_samples) < 1:
        raise UserInputError(f"n_label_samples must be at least 1, got {n_label_samples}")
    if assume_piecewise_linear:
        if bn_mode != "eval":
            check_piecewise_linear(model, bn_mode=bn_mode)
    else:
        check_piecewise_linear(model, bn_mode=bn_mode)
    dev = resolve_device(device, model)
    specs, tensors = resolve_params(model, params)
    names = [s.name for s in specs]
    batches = as_batches(data, batch_size=batch_size, device=dev, dtype=model_dtype(model))
    n_total = sum(int(x.shape[0]) for x, _ in batches)
    gen = make_generator(seed, dev)
    K = int(n_label_samples)

    def per_example(sel: dict[str, torch.Tensor], x: torch.Tensor, cot: torch.Tensor) -> torch.Tensor:
        # squared norms ||J_k^T cot_j||^2 for every cotangent j and tensor k: shape (n_cot, K_tensors)
        _, pullback = vjp(lambda s: functional_call(model, s, (x.unsqueeze(0),), strict=False).squeeze(0), sel)
        (g,) = vmap(pullback)(cot)
        return torch.stack([g[n].flatten(1).pow(2).sum(1) for n in names], dim=1)

    sums = torch.zeros(len(names), dtype=torch.float64, device=dev)
    # labels="sample": per tensor (and, last column, for the total) sum_i Var_j(s_ij) / K, or for
    # K = 1 the second moment sum_i s_i^2
    var_sums = torch.zeros(len(names) + 1, dtype=torch.float64, device=dev)
    t0 = time.perf_counter()
    bar = tqdm(total=n_total, disable=not progress, desc="fisher", unit="example")
    with model_mode(model, bn_mode, params=tensors):
        sel = {n: t.detach() for n, t in zip(names, tensors)}
        for x, y in batches:
            with torch.no_grad():
                logits = model(x)
            # float64 softmax and cotangents p - e_c with p_c - 1 formed without cancellation
            # (the top class of a saturated softmax); the products with the network run in its dtype
            p, grads_all = ce_logit_gradients(logits)
            n_cls = p.shape[1]
            if labels == "exact":
                cot = grads_all  # (b, C, C)
                wts = p  # (b, C)
            else:
                draws = torch.multinomial(p, K, replacement=True, generator=gen)  # (b, K)
                cot = grads_all.gather(1, draws.unsqueeze(2).expand(-1, -1, n_cls))  # (b, K, C)
                wts = torch.full((x.shape[0], K), 1.0 / K, dtype=torch.float64, device=dev)
            cot = cot.to(logits.dtype)
            chunk = chunk_size or _auto_chunk(sum(t.numel() for t in tensors), cot.shape[1], logits.element_size())
            sq = vmap(per_example, in_dims=(None, 0, 0), chunk_size=chunk)(sel, x, cot).double()  # (b, n_cot, K_t)
            sums += (sq * wts.unsqueeze(2)).sum(dim=(0, 1))
            if labels == "sample":
                sqt = torch.cat([sq, sq.sum(dim=2, keepdim=True)], dim=2).double()  # (b, K, K_t + 1)
                if K > 1:
                    var_sums += sqt.var(dim=1, unbiased=True).sum(dim=0) / K
                else:
                    var_sums += sqt.squeeze(1).pow(2).sum(dim=0)
            bar.update(x.shape[0])
    bar.close()
    traces = (sums / n_total).cpu()
    traces_t = torch.cat([traces, traces.sum().unsqueeze(0)])
    if labels == "exact":
        ses_t = torch.zeros_like(traces_t)
    elif K > 1:
        # Var(mean_i mean_j s_ij | examples) = sum_i Var_j(s_ij) / (K N^2)
        ses_t = (var_sums.cpu() / n_total**2).sqrt()
    else:
        # one draw per example: the across-example spread (conservative: it adds the spread
        # between examples to the label noise)
        second = var_sums.cpu() / n_total
        ses_t = ((second - traces_t**2).clamp_min(0) / max(n_total - 1, 1)).sqrt()
    ses, total_se = ses_t[:-1], float(ses_t[-1])
    layers = [
        LayerTrace(s.name, s.group, t.numel(), float(tr), float(se))
        for s, t, tr, se in zip(specs, tensors, traces, ses)
    ]
    info = {
        "estimator": "fisher",
        "labels": labels,
        "n_label_samples": K if labels == "sample" else None,
        "bn_mode": bn_mode,
        "n_examples": n_total,
        "seed": seed if labels == "sample" else None,
        "assume_piecewise_linear": bool(assume_piecewise_linear),
        "seconds": time.perf_counter() - t0,
    }
    return TraceResult(layers, float(traces.sum()), total_se, info)


def _auto_chunk(n_params: int, n_cot: int, itemsize: int, budget: int = 256 * 2**20) -> int:
    return max(1, int(budget // max(1, 3 * n_params * n_cot * itemsize)))


__all__ = ["PIECEWISE_LINEAR_MODULES", "check_piecewise_linear", "fisher"]
