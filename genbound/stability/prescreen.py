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
``> PRESCREEN_RTOL * (1 + max_j |z_j(x)|)`` over the ball. The bound is the verifier's own
(:mod:`genbound.stability.sound`, float64): interval bounds (IBP) through the network, then CROWN
back-substitution through the *head* -- the trailing Linear/ReLU/Flatten layers -- concretized
with the interval bounds where the head begins (the whole network for an MLP); the larger of that
and the plain IBP bound is kept. Both are valid lower bounds, so the certificate is sound.
``PRESCREEN_RTOL = 1e-4`` is far above the float32 evaluation error of the attacked model's
logits (~1e-6 relative for these networks), so no float32 iterate can show a flip either.

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

from genbound.stability import sound as _sound

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

    def __init__(self, model: nn.Module, norm: str, kappas: np.ndarray, device: torch.device) -> None:
        self.model, self.norm, self.kappas, self.device = model, norm, np.asarray(kappas, dtype=np.float64), device
        self.param_dtype = next((p.dtype for p in model.parameters()), torch.float32)
        self.status, self.reason, self.checked = "verified", None, False
        self.wall_s = 0.0
        self.tried = [0] * self.kappas.size
        self.certified = [0] * self.kappas.size
        try:
            self.net = _sound.compile_network(model, device)
            self.stop = head_start(self.net)
        except _sound.UnsupportedModelError as e:
            self.net, self.status, self.reason = None, "unverified", str(e)

    def _bounds(self, x64: torch.Tensor, pred: torch.Tensor, kappa: float) -> torch.Tensor:
        """Lower bound of the smallest margin, float64[b], over the kappa-ball in [0, 1]^d."""
        inset = _sound._InputSet.ball(x64, kappa * (1.0 + _sound.RADIUS_INFLATION), self.norm, (0.0, 1.0))
        ibp_lb, head_lb = _sound.margin_lower_bounds(self.net, x64, pred, inset, "crown", intermediate="ibp",
                                                     stop=self.stop)
        return torch.maximum(ibp_lb, head_lb).min(1).values

    def certify(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        kappas, b = self.kappas, x.shape[0]
        out = torch.zeros(b, kappas.size, dtype=torch.bool)
        if self.net is None or b == 0 or logits.shape[1] < 2:
            return out
        t0 = time.perf_counter()
        with torch.no_grad():
            if not self.checked:
                res = _sound.structure_mismatch(self.net, self.model, x[:_CHECK_SAMPLES], float(kappas.max()),
                                                (0.0, 1.0), self.device, self.param_dtype)
                self.checked = True
                if isinstance(res, str):
                    self.net, self.status, self.reason = None, "unverified", res
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

    def evidence(self) -> dict[str, Any]:
        return {"method": "interval bounds + CROWN on the network's head (float64), pairs proven stable are not attacked",
                "sound": True, "status": self.status, "unsupported_reason": self.reason,
                "tolerance": f"margin lower bound > {PRESCREEN_RTOL} * (1 + max_j |logit_j(x)|)",
                "head_from_node": None if self.net is None else self.stop,
                "tried_per_kappa": list(self.tried), "certified_per_kappa": list(self.certified),
                "attempts": int(sum(self.tried)), "pairs_certified": int(sum(self.certified)),
                "wall_s": round(self.wall_s, 3)}
