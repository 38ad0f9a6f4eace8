"""Exact search for tiny inputs (``linf``, ``d <= 8``): linear regions + LPs with safe dual bounds.

Samples not certified by CROWN are decided by enumerating the linear regions (ReLU activation
patterns) of the network inside the ball, branching neuron by neuron. Each region's margin
minimum is bounded from below by a *safe dual bound* (valid for any dual vector, so LP inaccuracy
cannot produce a false proof); a region whose LP minimizer flips the prediction in the real
forward pass is a counterexample.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genbound.stability.sound.graph import Net

__all__ = ["ExactSearch", "safe_lp_min"]


def safe_lp_min(c, c0, G, h, lo, hi):
    """Solve ``min c.x + c0`` over ``{G x <= h, lo <= x <= hi}``; returns (safe_lb, x*, ok).

    ``safe_lb`` is a valid lower bound for any dual vector (weak duality), so LP tolerances
    cannot make it too large. ``ok`` is False when the LP failed (then safe_lb = -inf).
    """
    from scipy.optimize import linprog

    if G is None or len(G) == 0:
        x = np.where(c >= 0, lo, hi)
        return float(c @ x + c0), x, True
    res = linprog(c, A_ub=G, b_ub=h, bounds=list(zip(lo, hi)), method="highs")
    if res.status != 0 or res.x is None:
        return -math.inf, None, False
    lam = np.maximum(0.0, -np.asarray(res.ineqlin.marginals, dtype=np.float64))
    g = c + G.T @ lam
    safe = float(np.sum(np.minimum(g * lo, g * hi)) - lam @ h + c0)
    return safe, np.clip(res.x, lo, hi), True


class ExactSearch:
    def __init__(self, net: Net, x0: torch.Tensor, pred: int, lo, hi, tol: float, max_lps: int, slack: float):
        self.net = net
        self.x0 = x0
        self.pred = pred
        self.lo = lo
        self.hi = hi
        self.tol = tol
        self.max_lps = max_lps
        self.slack = slack
        self.lps = 0
        self.undecided = False
        self.counterexample = None
        self.d = lo.size
        self.relus = [i for i, nd in enumerate(net.nodes) if nd.kind == "relu"]

    def _maps(self, masks):
        """Affine maps (M [d, *shape], b [*shape]) of every node given ReLU masks (prefix)."""
        net = self.net
        d = self.d
        dt = torch.float64
        in_shape = net.nodes[0].shape
        maps = [None] * len(net.nodes)
        dev = self.x0.device
        eye = torch.eye(d, dtype=dt, device=dev).reshape(d, *in_shape)
        maps[0] = (eye, torch.zeros(in_shape, dtype=dt, device=dev))
        for i in range(1, len(net.nodes)):
            nd = net.nodes[i]
            if nd.kind == "affine":
                M, b = maps[nd.inputs[0]]
                src_shape = net.nodes[nd.inputs[0]].shape
                maps[i] = (nd.op.linear(M, src_shape), nd.op.fwd(b.unsqueeze(0))[0])
            elif nd.kind == "relu":
                if i not in masks:
                    return maps, i
                M, b = maps[nd.inputs[0]]
                mk = masks[i]
                maps[i] = (M * mk, b * mk)
            else:
                (M1, b1), (M2, b2) = maps[nd.inputs[0]], maps[nd.inputs[1]]
                maps[i] = (M1 + M2, b1 + b2)
        return maps, None

    def _lp(self, c, c0, G, h):
        self.lps += 1
        if self.lps > self.max_lps:
            self.undecided = True
            return -math.inf, None, False
        return safe_lp_min(c, c0, G, h, self.lo, self.hi)

    def run(self) -> str:
        self._search({}, np.zeros((0, self.d)), np.zeros(0))
        if self.counterexample is not None:
            return "unstable"
        return "undecided" if self.undecided else "stable"

    def _stop(self):
        return self.counterexample is not None or self.lps > self.max_lps

    def _search(self, masks, G, h):
        if self._stop():
            return
        maps, nxt = self._maps(masks)
        if nxt is None:
            self._leaf(maps, G, h)
            return
        src = self.net.nodes[nxt].inputs[0]
        M, b = maps[src]
        shape = b.shape
        Mf = M.reshape(self.d, -1).cpu().numpy()
        bf = b.reshape(-1).cpu().numpy()
        mask = np.zeros(bf.size)
        self._branch(nxt, shape, Mf, bf, 0, mask, masks, G, h)

    def _branch(self, r, shape, Mf, bf, k, mask, masks, G, h):
        if self._stop():
            return
        n = bf.size
        while k < n:
            w, c0 = Mf[:, k], bf[k]
            # interval over the box first (cheap, exact for the box)
            boxmin = float(np.sum(np.minimum(w * self.lo, w * self.hi)) + c0)
            boxmax = -float(np.sum(np.minimum(-w * self.lo, -w * self.hi)) - c0)
            if boxmin >= 0:
                mask[k] = 1.0
                k += 1
                continue
            if boxmax <= 0:
                mask[k] = 0.0
                k += 1
                continue
            lmin, _, ok1 = self._lp(w, c0, G, h)
            if ok1 and lmin >= 0:
                mask[k] = 1.0
                k += 1
                continue
            lmax, _, ok2 = self._lp(-w, -c0, G, h)
            if ok2 and lmax >= 0:  # -z >= 0 everywhere: inactive
                mask[k] = 0.0
                k += 1
                continue
            if not (ok1 and ok2):
                self.undecided = True
                if self._stop():
                    return
            # both signs possible: branch (constraints relaxed by `slack`: a superset, sound)
            for val, row, rhs in ((1.0, -w, c0 + self.slack), (0.0, w, -c0 + self.slack)):
                m2 = mask.copy()
                m2[k] = val
                self._branch(r, shape, Mf, bf, k + 1, m2, masks, np.vstack([G, row]), np.append(h, rhs))
                if self._stop():
                    return
            return
        masks = dict(masks)
        masks[r] = torch.from_numpy(mask.copy()).reshape(shape).to(self.x0.device)
        self._search(masks, G, h)

    def _leaf(self, maps, G, h):
        M, b = maps[-1]
        M = M.reshape(self.d, -1).cpu().numpy()
        b = b.reshape(-1).cpu().numpy()
        c = self.pred
        for j in range(b.size):
            if j == c:
                continue
            w = M[:, c] - M[:, j]
            c0 = b[c] - b[j]
            safe, xs, ok = self._lp(w, c0, G, h)
            if ok and safe > self.tol:
                continue
            if xs is not None:
                xt = torch.from_numpy(xs).reshape(1, *self.net.nodes[0].shape).to(self.x0.device)
                z = self.net.forward(xt)[-1][0]
                if z[c] - z[j] <= 0:
                    self.counterexample = xs
                    return
            self.undecided = True
            if self._stop():
                return
