"""Interval bounds in float32 with every rounding error enclosed: the cheap part of a sound bound.

Float64 interval bounds (:mod:`genbound.stability.sound.propagate`) cost a float64 convolution per layer
and bound, several times a float32 one on a CPU. This module propagates interval bounds through
the *body* of a compiled network (up to a given node) in float32, widening every interval by a
worst-case bound on the rounding error of the float32 arithmetic that produced it, so that each
result encloses the exact real-valued interval bound. The PGD pre-screen
(:mod:`genbound.stability.sound.prescreen`) uses it before the float64 head.

The enclosure
-------------
Inputs ``[lo, hi]`` (float64) are rounded outward to float32. For an affine node ``y = W x + b``
with ``n`` products per output, in centre/radius form ``c = (lo + hi) / 2``,
``r = (hi - lo) / 2 + 2u (|lo| + |hi|)`` (``u = 2^-24``), the float32 results
``c' = fl(W c + b)``, ``r' = fl(|W| r)`` and ``m = fl(|W| (|c| + r) + |b|)`` give the enclosure

    [c' - R, c' + R],   R = r' + (2 gamma_{n+1} + 16 u) m + eta,   gamma_k = k u / (1 - k u)

because a float32 dot product of ``k`` terms in *any* summation order, with or without fused
multiply-adds, errs by at most ``gamma_k`` times the sum of the absolute terms (Higham, *Accuracy
and Stability of Numerical Algorithms*, 2nd ed., section 3.1); ``|W c + b| + |W| r <= m (1 +
gamma_{n+3})``, and the ``16 u m`` covers the few roundings of forming ``R`` and ``c' -+ R``.
``eta = (n (1 + max|W|) + 16) 2^-126`` covers underflow, flush-to-zero included. Average pools
(non-negative weights) over non-negative inputs (after a ReLU) bound ``lo`` and ``hi`` directly:
``max(0, fl(P lo)(1 - g) - eta)`` and ``fl(P hi)(1 + g) + eta`` with ``g = gamma_{k+2} + 8u`` for windows
of ``k`` pixels. ReLU, flattening and identities are exact; a residual sum ``s = fl(l1 + l2)`` is
widened by ``4u |s| + 2^-126``.

Assumptions, checked before use (:func:`unavailable`)
-------------------------------------------------------
The bound holds for convolutions and matrix products that *sum the products* (direct or
im2col + GEMM); Winograd and FFT convolutions, and float32 products rounded to bfloat16/TF32, do
not. Hence: CPU only, oneDNN enabled (PyTorch's oneDNN convolutions are direct; without oneDNN a
3x3 convolution may go to NNPACK's Winograd), ``torch.get_float32_matmul_precision() ==
"highest"``, no oneDNN float32 precision override, no ``ONEDNN_DEFAULT_FPMATH_MODE`` other than
``STRICT``, and ungrouped convolutions (a depthwise 3x3 may use a Winograd kernel). Weights must
be float32 (they are then exact), and sums have fewer than about ``2^23`` terms (``gamma_k`` is
finite and small only for ``k u < 1``). Anything else -- and any module this module does not list --
leaves the float64 bounds in charge (:class:`Unsupported` says why). As a last guard, the
pre-screen checks on its first samples that the float32 intervals of degenerate boxes contain the
float64 forward pass.
"""

from __future__ import annotations

import os

import torch
from torch import nn


U32 = 2.0 ** -24
TINY32 = 2.0 ** -126


class Unsupported(Exception):
    """The float32 enclosure does not apply (the message says why); use float64 bounds instead."""


def gamma_ok(k: int) -> bool:
    """Whether ``gamma_k`` is small enough for the bounds here (``(k + 3) u < 1/2``)."""
    return (k + 3) * U32 < 0.5


def gamma(k: int) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)`` for float32 (``u = 2^-24``), for ``gamma_ok(k)``."""
    if not gamma_ok(k):
        raise Unsupported(f"{k} terms per sum: too many for float32 rounding bounds")
    return k * U32 / (1.0 - k * U32)


def unavailable(device: torch.device) -> str | None:
    """Why float32 interval bounds cannot be trusted here, or ``None`` when they can."""
    if torch.device(device).type != "cpu":
        return "float32 interval bounds run on CPU only (GPU convolutions may use TF32, Winograd or FFT algorithms)"
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return "oneDNN is unavailable or disabled (a 3x3 convolution may then use a Winograd algorithm)"
    try:
        matmul = torch.get_float32_matmul_precision()
    except RuntimeError as e:  # raised when the old and the new precision settings are mixed
        return f"the float32 matmul precision cannot be read ({e})"
    if matmul != "highest":
        return f"torch.get_float32_matmul_precision() is {matmul!r}: float32 products may be rounded to a lower precision"
    for where in (torch.backends.mkldnn, getattr(torch.backends.mkldnn, "conv", None),
                  getattr(torch.backends.mkldnn, "matmul", None)):
        prec = getattr(where, "fp32_precision", None)
        if prec not in (None, "none", "ieee"):
            return f"oneDNN float32 precision is set to {prec!r}"
    for var in ("ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE"):
        mode = os.environ.get(var)
        if mode is not None and mode.strip().upper() not in ("", "STRICT"):
            return f"{var}={mode} lets oneDNN round float32 products"
    return None


def f32(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.dtype != torch.float32 or t.device.type != "cpu":
        raise Unsupported(f"{what} is {t.dtype} on {t.device}; float32 intervals need float32 weights on CPU")
    return t.detach()


def round_out(lo64: torch.Tensor, hi64: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = lo64.to(torch.float32), hi64.to(torch.float32)
    inf = torch.tensor(float("inf"), dtype=torch.float32)
    lo = torch.where(lo.to(lo64.dtype) > lo64, torch.nextafter(lo, -inf), lo)
    hi = torch.where(hi.to(hi64.dtype) < hi64, torch.nextafter(hi, inf), hi)
    return lo, hi


class Generic:
    """Affine map in centre/radius form (see the module docstring for the enclosure)."""

    def __init__(self, fwd, absfwd, absbias, n: int, wmax: float) -> None:
        self.fwd, self.absfwd, self.absbias = fwd, absfwd, absbias
        self.k = 2.0 * gamma(n + 1) + 16.0 * U32
        self.eta = (n * (1.0 + wmax) + 16.0) * TINY32

    def __call__(self, lo, hi):
        c = (lo + hi) * 0.5
        r = torch.add((hi - lo) * 0.5, lo.abs() + hi.abs(), alpha=2.0 * U32) + TINY32
        cc = self.fwd(c)
        rr = self.absfwd(r)
        m = self.absfwd(c.abs() + r)
        if self.absbias is not None:
            m = m + self.absbias
        R = torch.add(rr, m, alpha=self.k) + self.eta
        return cc - R, cc + R


class NonnegPool:
    """Average pool with square windows ``k x k``, stride ``k``, on non-negative inputs: lo/hi form."""

    def __init__(self, kh: int, kw: int) -> None:
        self.kh, self.kw = kh, kw
        n = kh * kw
        self.g = gamma(n + 2) + 8.0 * U32
        self.eta = (n + 16.0) * TINY32

    def pool(self, t):
        kh, kw = self.kh, self.kw
        H, W = t.shape[-2] // kh * kh, t.shape[-1] // kw * kw
        s = None
        for i in range(kh):
            for j in range(kw):
                v = t[..., i:H:kh, j:W:kw]
                s = v if s is None else s + v
        return s * (1.0 / (kh * kw))

    def __call__(self, lo, hi):
        # the exact pool of non-negative values is non-negative: clamping keeps the enclosure
        return (self.pool(lo) * (1.0 - self.g) - self.eta).clamp(min=0), self.pool(hi) * (1.0 + self.g) + self.eta


def pool_windows(m: nn.Module, in_shape) -> tuple[int, int] | None:
    """``(kh, kw)`` when ``m`` is a non-overlapping, unpadded average pool over whole windows."""
    H, W = in_shape[-2], in_shape[-1]
    if type(m) is nn.AdaptiveAvgPool2d:
        out = m.output_size if isinstance(m.output_size, tuple) else (m.output_size, m.output_size)
        oh, ow = (H if out[0] is None else out[0]), (W if out[1] is None else out[1])
        return (H // oh, W // ow) if H % oh == 0 and W % ow == 0 else None
    if type(m) is nn.AvgPool2d:
        k = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size, m.kernel_size)
        s = m.stride if isinstance(m.stride, tuple) else (m.stride, m.stride)
        p = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
        if tuple(k) != tuple(s) or any(p) or m.ceil_mode or m.divisor_override is not None:
            return None
        if H % k[0] or W % k[1]:
            return None
        return int(k[0]), int(k[1])
    return None


def _add(a, b):
    (l1, h1), (l2, h2) = a, b
    lo, hi = l1 + l2, h1 + h2
    return torch.add(lo, lo.abs(), alpha=-4.0 * U32) - TINY32, torch.add(hi, hi.abs(), alpha=4.0 * U32) + TINY32


class Float32Intervals:
    """Rigorous float32 interval bounds of nodes ``0..upto`` of a compiled network (shapes recorded).

    ``__call__(lo64, hi64)`` returns a list of float32 ``(lo, hi)`` per node up to ``upto``; each
    encloses the exact real interval bound of that node over the input box. Raises
    :class:`Unsupported` at construction when a node has no float32 enclosure.
    """

    def __init__(self, net, upto: int) -> None:
        self.net, self.upto = net, upto
        self.ops: list = [None] * (upto + 1)
        nonneg = [False] * (upto + 1)
        for i in range(1, upto + 1):
            nd = net.nodes[i]
            if nd.kind == "relu":
                nonneg[i] = True
            elif nd.kind == "add":
                nonneg[i] = nonneg[nd.inputs[0]] and nonneg[nd.inputs[1]]
            elif nd.kind == "affine":
                src = nd.inputs[0]
                self.ops[i] = nd.op.float32(net.nodes[src].shape, nonneg[src])
                passes = self.ops[i] is None or nd.op.name == "Flatten"
                nonneg[i] = nonneg[src] and (passes or isinstance(self.ops[i], NonnegPool))
            else:
                raise Unsupported(f"node kind {nd.kind!r}")

    def __call__(self, lo64: torch.Tensor, hi64: torch.Tensor) -> list:
        out: list = [None] * (self.upto + 1)
        out[0] = round_out(lo64, hi64)
        for i in range(1, self.upto + 1):
            nd = self.net.nodes[i]
            if nd.kind == "relu":
                lo, hi = out[nd.inputs[0]]
                out[i] = (lo.clamp(min=0), hi.clamp(min=0))
            elif nd.kind == "add":
                out[i] = _add(out[nd.inputs[0]], out[nd.inputs[1]])
            else:
                op = self.ops[i]
                out[i] = out[nd.inputs[0]] if op is None else op(*out[nd.inputs[0]])
        return out
