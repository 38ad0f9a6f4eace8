"""Sound pre-screen for the PGD engine: skip the (sample, kappa) pairs that no attack can flip.

A (sample, kappa) pair that stays stable costs every step of every restart in any attack that
finds all the flips a full PGD run finds, so early exit alone cannot go below the share of stable
pairs. A pair whose margins are *proven* positive on the whole ball needs no attack at all: no
iterate of any attack can flip it. This module proves that cheaply, before the attack.

What is proven
--------------
For a sample x whose float32 prediction is c and a radius kappa (pixel units, the ball
intersected with [0, 1]^d as PGD clips it), a pair is *certified* when, for the real-valued network
with the model's weights, every margin ``z_c(x') - z_j(x')`` (j != c) has a lower bound
``> PRESCREEN_RTOL * (1 + max_j |z_j(x)|)`` over the ball. The bound is the verifier's
(:mod:`genbound.stability.sound.propagate`): interval bounds (IBP) through the network, then CROWN
back-substitution through the *head* -- the trailing Linear/ReLU/Flatten layers -- concretized
with the interval bounds where the head begins (the whole network for an MLP); the larger of that
and the plain IBP bound is kept. Both are valid lower bounds, so the certificate is sound.

Arithmetic: where :mod:`genbound.stability.sound.float32` applies (CPU, float32 weights, supported
body layers), the interval bounds of the body run in float32 with every rounding error enclosed,
and so does the head's widest product (its first Linear, ``|A W| r``); the rest of the head is
float64. Elsewhere everything is float64, as in the verifier. ``PRESCREEN_RTOL = 1e-4`` is far
above float64 rounding and above the float32 evaluation error of the attacked model's logits
(~1e-6 relative for these networks), so no float32 iterate can show a flip either.

With ``float32_only`` (``prescreen="auto"`` in :func:`~genbound.stability.pgd_stability`) a model
whose bound would need float64 is not screened (``status: "off"`` and the reason): on a CPU the
float64 bound of the demo CNN cost about as many model evaluations as its proofs saved
(``bench/RESULTS.md``).

The compiled graph is checked once per call against the model's own forward pass, on the first
samples and on random points of the largest ball; a model the verifier cannot compile or that fails
the check is screened by nothing (``status: "unverified"`` and the reason), never skipped.

Which pairs are tried
---------------------
Proofs are monotone in kappa (the kappa_j-ball lies in every larger one): per batch, every sample
is tried at the smallest radius; a sample proven at kappa_j is tried at kappa_{j+1} only if its
margin bound, extrapolated linearly from the clean margin through kappa_j, would still clear the
tolerance there (bounds loosen faster than linearly, so this guess is optimistic), and the climb
stops at the first radius where fewer than half of the samples tried are proven (an attempt costs
about as much as a few attack steps, a stable pair a whole attack). These rules only set the cost:
a pair not tried is attacked as before, and a certified pair could not have been flipped.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from genbound.stability.sound import float32 as _i32
from genbound.stability.sound.graph import UnsupportedModelError, compile_network
from genbound.stability.sound.propagate import InputSet, backward, ibp_pass, margin_lower_bounds, margin_matrix
from genbound.stability.sound.certify import RADIUS_INFLATION, structure_mismatch

PRESCREEN_RTOL = 1e-4
_HEAD_OPS = ("Linear", "Flatten", "Identity", "Dropout", "BatchNorm1d")
_CHECK_SAMPLES = 32


def head_start(net: Any) -> int | None:
    """Node where the back-substitution of the head stops (its interval bound is used there);
    ``None`` when the whole network is a head (an MLP): back-substitution to the input."""
    i = len(net.nodes) - 1
    while True:
        nd = net.nodes[i]
        if nd.kind == "input":
            return None
        if nd.kind == "relu" or (nd.kind == "affine" and nd.op.name in _HEAD_OPS):
            i = nd.inputs[0]
            continue
        return i


class PGDPrescreen:
    """Per-call state: the compiled float64 graph, its check, and cost counters.

    ``certify(x, logits)`` returns bool[b, J]: pair (i, j) proven stable at ``kappas[j]`` (monotone in j).
    """

    def __init__(self, model: nn.Module, norm: str, kappas: np.ndarray, device: torch.device,
                 float32_only: bool = False) -> None:
        self.model, self.norm, self.kappas, self.device = model, norm, np.asarray(kappas, dtype=np.float64), device
        self.param_dtype = next((p.dtype for p in model.parameters()), torch.float32)
        self.float32_only = float32_only  # "auto": screen only where the float32 bound applies
        self.status, self.reason, self.checked = "verified", None, False
        self.wall_s = 0.0
        self.tried = [0] * self.kappas.size
        self.certified = [0] * self.kappas.size
        self.body32: _i32.Float32Intervals | None = None
        self.split: int | None = None  # the head's first Linear, when its product runs in float32
        self.body_precision, self.body_reason = "float64", None
        try:
            self.net = compile_network(model, device)
            self.stop = head_start(self.net)
        except UnsupportedModelError as e:
            self.net, self.status, self.reason = None, "unverified", str(e)

    def _setup_float32(self, x64: torch.Tensor) -> None:
        """Float32 arithmetic, rounding errors enclosed, for the body and for the head's widest
        product, where it applies here and passes its check; float64 otherwise."""
        if self.stop is None:
            self.body_reason = "no body: the whole network is bounded by back-substitution"
            if self.float32_only:
                self.net, self.status = None, "off"
            return
        why = _i32.unavailable(self.device)
        if why is None:
            try:
                body = _i32.Float32Intervals(self.net, self.stop)
            except _i32.Unsupported as e:
                why = str(e)
        if why is None:
            # last guard: degenerate boxes must contain the float64 forward pass at every body node
            vals = self.net.forward(x64)
            for i, (lo, hi) in enumerate(body(x64, x64)):
                v = vals[i]
                if not bool(((lo.to(v.dtype) <= v) & (v <= hi.to(v.dtype))).all()):
                    why = f"float32 intervals failed their check at node {i}"
                    break
        if why is not None:
            self.body_reason = why
            if self.float32_only:
                self.net, self.status = None, "off"
            return
        self.body32, self.body_precision = body, "float32, rounding errors enclosed"
        i = self.stop + 1  # the head's first Linear, reached through reshapes only
        while i < len(self.net.nodes) and self.net.nodes[i].kind == "affine" and \
                self.net.nodes[i].op.name in ("Flatten", "Identity", "Dropout", "Dropout1d", "Dropout2d"):
            i += 1
        nd = self.net.nodes[i] if i < len(self.net.nodes) else None
        lin = None if nd is None or nd.kind != "affine" else nd.op.module
        if type(lin) is nn.Linear and lin.weight.dtype == torch.float32 and lin.weight.device.type == "cpu" \
                and _i32.gamma_ok(max(lin.weight.shape) + 1) \
                and all(self.net.nodes[j].inputs == [j - 1] for j in range(self.stop + 1, i + 1)):
            self.split, self._split_weight = i, lin.weight.detach()

    def _bounds(self, x64: torch.Tensor, pred: torch.Tensor, kappa: float) -> torch.Tensor:
        """Lower bound of the smallest margin, float64[b], over the kappa-ball in [0, 1]^d."""
        net, stop = self.net, self.stop
        nodes = net.nodes
        inset = InputSet.ball(x64, kappa * (1.0 + RADIUS_INFLATION), self.norm, (0.0, 1.0))
        bounds: list = [None] * len(nodes)
        if self.body32 is not None:
            bounds[stop] = tuple(t.to(torch.float64) for t in self.body32(inset.lo, inset.hi)[stop])
            ibp_pass(net, bounds, stop + 1)
        else:
            bounds[0] = (inset.lo, inset.hi)
            ibp_pass(net, bounds)
        ibp_lb, _ = margin_lower_bounds(net, x64, pred, inset, "ibp", bounds=bounds)
        C = margin_matrix(pred, nodes[-1].shape[0], x64.dtype)
        if self.split is None:
            head_lb = backward(net, len(nodes) - 1, C, bounds, inset, stop=stop)
        else:
            head_lb = self._split_head(C, bounds)
        return torch.maximum(ibp_lb, head_lb).min(1).values

    def _split_head(self, C: torch.Tensor, bounds: list) -> torch.Tensor:
        """CROWN on the head with its widest product in float32, the rounding error enclosed.

        Back-substitution (float64) ends at the output of the head's first Linear ``W z + b``
        (``z``: the body's output, in ``[c - r, c + r]``), giving ``A (W z + b) + bias``; its
        minimum is ``bias + A (W c + b) - |A W| r``. ``A W`` is computed in float32 as ``M =
        fl(fl(A) W)``, with ``|A W| <= |M| + (gamma_{k+1} + u) |A| |W|`` (``k`` = rows of ``W``),
        and ``fl(|M| r)`` errs by at most ``gamma_d`` of itself (``d`` = columns), so
        ``|A W| r <= fl(|M| r)(1 + 2 gamma_{d+1}) + (gamma_{k+1} + 2u) |A| (|W| r)``, plus
        multiples of ``2^-126`` for underflow (entries of ``A`` below float32's range included).
        """
        W32 = self._split_weight
        bias, A = backward(self.net, len(self.net.nodes) - 1, C, bounds, None, form_at=self.split)
        lo, hi = bounds[self.stop]
        B = lo.shape[0]
        r = ((hi - lo) * 0.5).reshape(B, -1)
        # the interval pass already holds W c + b and |W| r: the centre and radius at the Linear's output
        slo, shi = bounds[self.split]
        center = (A * ((slo + shi) * 0.5).unsqueeze(1)).sum(-1)
        Wr = (shi - slo) * 0.5
        r32 = r.to(torch.float32)
        r32 = torch.where(r32.to(torch.float64) < r, torch.nextafter(r32, torch.tensor(float("inf"))), r32)
        Ma = (A.to(torch.float32) @ W32).abs()
        S = torch.bmm(Ma, r32.unsqueeze(2)).squeeze(2).to(torch.float64)
        k, d = W32.shape
        Aa = A.abs()
        upper = S * (1.0 + 2.0 * _i32.gamma(d + 1)) + (_i32.gamma(k + 1) + 2.0 * _i32.U32) * (Aa * Wr.unsqueeze(1)).sum(-1)
        # underflow and flush-to-zero: of fl(A) (each entry off by <= 2^-126), of the products in
        # fl(A) W and subnormal W or M read as zero, of the products in |M| r and subnormal r
        tiny = (Wr.sum(-1, keepdim=True) + (2 * k + 1 + Aa.sum(-1)) * r.sum(-1, keepdim=True)
                + Ma.sum(-1).to(torch.float64) + 2 * d)
        return bias + center - (upper + 2.0 * _i32.TINY32 * tiny)

    def certify_counted(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """:meth:`certify` and this call's counters (the engine merges them over batches and shards)."""
        tried0, cert0, wall0 = list(self.tried), list(self.certified), self.wall_s
        out = self.certify(x, logits)
        return out, {"prescreen_tried": [a - b for a, b in zip(self.tried, tried0)],
                     "prescreen_certified": [a - b for a, b in zip(self.certified, cert0)],
                     "prescreen_wall_s": self.wall_s - wall0}

    def certify(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        kappas, b = self.kappas, x.shape[0]
        out = torch.zeros(b, kappas.size, dtype=torch.bool)
        if self.net is None or b == 0 or logits.shape[1] < 2:
            return out
        t0 = time.perf_counter()
        with torch.no_grad():
            if not self.checked:
                res = structure_mismatch(self.net, self.model, x[:_CHECK_SAMPLES], float(kappas.max()),
                                                (0.0, 1.0), self.device, self.param_dtype)
                self.checked = True
                if isinstance(res, str):
                    self.net, self.status, self.reason = None, "unverified", res
                    self.wall_s += time.perf_counter() - t0
                    return out
                self._setup_float32(res[0])
                if self.net is None:  # "auto" and no float32 bound here
                    self.wall_s += time.perf_counter() - t0
                    return out
            x64 = x.to(torch.float64)
            pred = logits.argmax(1)
            tol = PRESCREEN_RTOL * (1.0 + logits.abs().max(1).values.to(torch.float64))
            top2 = logits.to(torch.float64).topk(2, dim=1).values
            margin0 = top2[:, 0] - top2[:, 1]  # clean margin
            alive = torch.arange(b, device=x.device)
            for j, kappa in enumerate(kappas):
                if kappa <= 0 or alive.numel() == 0:
                    break
                lb = self._bounds(x64[alive], pred[alive], float(kappa))
                ok = lb > tol[alive]
                self.tried[j] += int(alive.numel())
                out[alive[ok].cpu(), : j + 1] = True
                if 2 * int(ok.sum()) < int(alive.numel()) or j + 1 == kappas.size:
                    break
                # try the next radius only where the bound, extrapolated linearly from the clean
                # margin through this radius, would still clear the tolerance (bounds loosen faster
                # than linearly, so this is optimistic): it picks whom to try, never what is proven
                m0 = margin0[alive]
                guess = m0 - (m0 - lb) * (float(kappas[j + 1]) / float(kappa))
                alive = alive[ok & (guess > tol[alive])]
        for j, c in enumerate(out.sum(0).tolist()):
            self.certified[j] += int(c)
        self.wall_s += time.perf_counter() - t0
        return out

    def evidence(self, counts: dict[str, Any] | None = None) -> dict[str, Any]:
        """The pre-screen's record; ``counts``: merged counters of :meth:`certify` (default: this object's)."""
        tried = list(self.tried) if counts is None else list(counts.get("prescreen_tried", [0] * self.kappas.size))
        certified = list(self.certified) if counts is None else list(counts.get("prescreen_certified", [0] * self.kappas.size))
        wall = self.wall_s if counts is None else float(counts.get("prescreen_wall_s", 0.0))
        return {"method": "interval bounds + CROWN on the network's head, pairs proven stable are not attacked",
                "sound": True, "mode": "auto (float32 bounds only)" if self.float32_only else "on",
                "status": self.status, "unsupported_reason": self.reason,
                "body_bounds": self.body_precision, "body_float64_reason": self.body_reason,
                "head_bounds": "float64" if self.split is None else
                "float64; the first Linear's product in float32, rounding errors enclosed",
                "tolerance": f"margin lower bound > {PRESCREEN_RTOL} * (1 + max_j |logit_j(x)|)",
                "head_from_node": None if self.net is None else self.stop,
                "tried_per_kappa": tried, "certified_per_kappa": certified,
                "attempts": int(sum(tried)), "pairs_certified": int(sum(certified)),
                "wall_s": round(wall, 3)}
