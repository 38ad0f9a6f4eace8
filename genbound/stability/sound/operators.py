"""The verifier's operators: every supported leaf module is defined here, once.

Each definition turns a module into an :class:`Affine` node operator with everything the
verifier needs about it: the exact float64 map ``fwd`` (the model's own weights in float64), the
upper bound ``absfwd`` of ``|M| r`` used by interval propagation, an optional direct transpose
``tfn`` for back-substitution (otherwise the vector-Jacobian product of ``fwd``), and the float32
enclosure :meth:`Affine.float32` used by :mod:`genbound.stability.sound.float32` (or the reason
there is none). Adding a module type = adding one branch to :func:`leaf_affine`.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from genbound.stability.sound.float32 import Generic, NonnegPool, Unsupported, f32, pool_windows

__all__ = ["Affine", "leaf_affine", "normalize"]


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` along dim 1 (channels), or with scalars: the normalization protocol."""
    mean = mean.to(x.dtype).reshape(-1)
    std = std.to(x.dtype).reshape(-1)
    shape = [1] * x.dim()
    if mean.numel() > 1:
        shape[1] = mean.numel()
    else:
        shape = [1]
    return (x - mean.reshape(shape)) / std.reshape(shape)


class Affine:
    """An affine map given by a float64 callable ``fwd`` and its absolute-value linear part.

    ``float32_op(in_shape, nonneg)`` builds its float32 enclosure (``None``: bounds pass through)
    or raises :class:`~genbound.stability.sound.float32.Unsupported`.
    """

    def __init__(self, name, fwd, absfwd, tfn=None, module=None, float32_op: Callable | None = None):
        self.name = name
        self.module = module  # the model's own module (its float32 weights), for float32 interval bounds
        self.fwd = fwd  # [N, *in] -> [N, *out], affine
        self.absfwd = absfwd  # [N, *in] (>= 0) -> [N, *out], upper bound of |M| r
        self.tfn = tfn  # optional direct ``A M`` ([N, *out] -> [N, *in]); else the vjp of ``fwd``
        self.float32_op = float32_op
        self._f0 = None

    def float32(self, in_shape, nonneg: bool):
        """The float32 interval operation of this node (see :mod:`~genbound.stability.sound.float32`)."""
        if self.float32_op is None:
            raise Unsupported(f"no float32 enclosure for {self.name}")
        return self.float32_op(in_shape, nonneg)

    def bias(self, in_shape, ref):
        if self._f0 is None or self._f0[0] != tuple(in_shape):
            z = torch.zeros((1, *in_shape), dtype=ref.dtype, device=ref.device)
            with torch.no_grad():
                self._f0 = (tuple(in_shape), self.fwd(z)[0])
        return self._f0[1]

    def linear(self, x, in_shape):
        return self.fwd(x) - self.bias(in_shape, x)

    def transpose(self, A, in_shape):
        """``A M`` for ``A`` of shape ``[B, R, *out]`` -> ``[B, R, *in]`` (vjp of the linear part)."""
        B, R = A.shape[:2]
        flat = A.reshape(B * R, *A.shape[2:])
        if self.tfn is not None:
            return self.tfn(flat).reshape(B, R, *in_shape)
        with torch.enable_grad():
            x = torch.zeros((B * R, *in_shape), dtype=A.dtype, device=A.device, requires_grad=True)
            y = self.fwd(x)
            (g,) = torch.autograd.grad(y, x, grad_outputs=flat)
        return g.reshape(B, R, *in_shape)


def _double(m: nn.Module, device) -> nn.Module:
    md = copy.deepcopy(m).to(device=device, dtype=torch.float64)
    for p in md.parameters():
        p.requires_grad_(False)
    return md


def _passthrough32(in_shape, nonneg):
    return None  # bounds pass through unchanged


# ---- float32 enclosures (formulas in genbound.stability.sound.float32) ----------------------------


def _linear32(m: nn.Linear):
    def make(in_shape, nonneg):
        W = f32(m.weight, "a Linear weight")
        b = None if m.bias is None else f32(m.bias, "a Linear bias")
        Wa = W.abs()
        return Generic(lambda c: F.linear(c, W, b), lambda r: F.linear(r, Wa),
                       None if b is None else b.abs(), W.shape[1] + (b is not None), float(Wa.max()))
    return make


def _conv2d32(m: nn.Conv2d):
    def make(in_shape, nonneg):
        if m.padding_mode != "zeros" or m.groups != 1:
            raise Unsupported(f"Conv2d with padding_mode={m.padding_mode!r}, groups={m.groups}")
        W = f32(m.weight, "a Conv2d weight")
        b = None if m.bias is None else f32(m.bias, "a Conv2d bias")
        Wa = W.abs()
        kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation)
        n = W[0].numel() + (b is not None)
        return Generic(lambda c: F.conv2d(c, W, b, **kw), lambda r: F.conv2d(r, Wa, None, **kw),
                       None if b is None else b.abs().reshape(1, -1, 1, 1), n, float(Wa.max()))
    return make


def _pool32(m: nn.Module, name: str):
    def make(in_shape, nonneg):
        win = pool_windows(m, in_shape)
        if win is None:
            raise Unsupported(f"{name} with overlapping, padded or partial windows")
        pool = NonnegPool(*win)
        if nonneg:
            return pool
        n = win[0] * win[1]
        return Generic(pool.pool, pool.pool, None, n + 1, 1.0)
    return make


def _normalize32(m: nn.Module):
    def make(in_shape, nonneg):
        mean, std = f32(m.mean, "a normalization mean"), f32(m.std, "a normalization std")
        sa = std.abs()
        # (x - mean) / std: two roundings per output, like a dot product of two terms
        return Generic(lambda c: normalize(c, mean, std), lambda r: normalize(r, torch.zeros_like(mean), sa),
                       normalize(torch.zeros((1, *in_shape), dtype=torch.float32), -mean.abs(), sa)[0], 2,
                       float((1.0 / sa).max()))
    return make


# ---- the definitions --------------------------------------------------------------------------------


def leaf_affine(m: nn.Module, device) -> Affine | None:
    """The :class:`Affine` operator of a supported leaf module, or ``None`` when unsupported."""
    t = type(m)
    if t is nn.Linear:
        md = _double(m, device)
        W = md.weight.detach()
        return Affine("Linear", lambda x: md(x), lambda r: F.linear(r, W.abs()), lambda a: a @ W, m, _linear32(m))
    if t in (nn.Conv2d, nn.Conv1d):
        md = _double(m, device)
        Wabs = md.weight.detach().abs()
        conv = F.conv2d if t is nn.Conv2d else F.conv1d

        def absfwd(r, md=md, Wabs=Wabs, conv=conv):
            if md.padding_mode != "zeros":
                r = F.pad(r, md._reversed_padding_repeated_twice, mode=md.padding_mode)
                pad = 0
            else:
                pad = md.padding
            return conv(r, Wabs, None, md.stride, pad, md.dilation, md.groups)

        return Affine(t.__name__, lambda x: md(x), absfwd, module=m, float32_op=_conv2d32(m) if t is nn.Conv2d else None)
    if t in (nn.BatchNorm1d, nn.BatchNorm2d):
        if m.training or m.running_mean is None or m.running_var is None:
            return None
        md = _double(m, device)
        scale = md.weight.detach() / torch.sqrt(md.running_var + md.eps) if md.affine else 1.0 / torch.sqrt(md.running_var + md.eps)
        scale = scale.detach()

        def absfwd(r, scale=scale):
            shape = [1, -1] + [1] * (r.dim() - 2)
            return r * scale.abs().reshape(shape)

        return Affine(t.__name__, lambda x: md(x), absfwd)
    if t in (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AdaptiveAvgPool1d):
        md = _double(m, device)
        f32op = _pool32(m, t.__name__) if t in (nn.AvgPool2d, nn.AdaptiveAvgPool2d) else None
        return Affine(t.__name__, lambda x: md(x), lambda r: md(r), module=m, float32_op=f32op)  # non-negative weights
    if t is nn.Flatten:
        if m.start_dim != 1:
            return None
        # transpose() reshapes; float32 bounds flatten the same way
        return Affine("Flatten", lambda x: m(x), lambda r: m(r), lambda a: a, m,
                      lambda in_shape, nonneg: (lambda lo, hi: (m(lo), m(hi))))
    if t is nn.Identity or (t in (nn.Dropout, nn.Dropout1d, nn.Dropout2d) and not m.training):
        return Affine(t.__name__, lambda x: x, lambda r: r, lambda a: a, m, _passthrough32)
    if getattr(m, "genbound_normalize", False) is True:
        mean = getattr(m, "mean", None)
        std = getattr(m, "std", None)
        if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)):
            return None
        mean = mean.detach().to(device=device, dtype=torch.float64).reshape(-1)
        std = std.detach().to(device=device, dtype=torch.float64).reshape(-1)
        if torch.any(std == 0) or mean.numel() != std.numel():
            return None
        return Affine(
            "Normalize",
            lambda x: normalize(x, mean, std),
            lambda r: normalize(r, torch.zeros_like(mean), std.abs()),
            module=m,
            float32_op=_normalize32(m),
        )
    return None
