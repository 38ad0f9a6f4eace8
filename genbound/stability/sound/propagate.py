"""Bound propagation on a compiled :class:`~genbound.stability.sound.graph.Net`: IBP and CROWN.

* :class:`InputSet`: the ball (``linf`` or ``l2``) around each input, intersected with the domain,
  and its concretization of a linear form.
* :func:`ibp_pass`: interval bounds of every node (float64).
* :func:`backward`: CROWN back-substitution of a linear form of a node to the input (ReLU upper
  relaxation = chord; lower = adaptive slope), or to a given node (``form_at``), or stopping at a
  node whose interval is used (``stop``).
* :func:`margin_lower_bounds`: lower bounds of the margins ``z_c - z_j`` by IBP and CROWN (with
  CROWN-tightened intermediate bounds), the verifier's core.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genbound.stability.sound.graph import Net, Node

__all__ = ["InputSet", "backward", "ibp_node", "ibp_pass", "margin_lower_bounds", "margin_matrix",
           "trailing_affine_start"]


@dataclass
class InputSet:
    x0: torch.Tensor  # [B, *in]
    lo: torch.Tensor  # box (for linf: exactly the set; for l2: an enclosing box)
    hi: torch.Tensor
    norm: str
    eps: torch.Tensor  # [B]

    @classmethod
    def ball(cls, x0: torch.Tensor, kap: float, norm: str, domain) -> "InputSet":
        """The ``norm`` ball of radius ``kap`` around each row of ``x0``, intersected with ``domain``."""
        lo, hi = x0 - kap, x0 + kap
        if domain is not None:
            lo, hi = lo.clamp(min=float(domain[0])), hi.clamp(max=float(domain[1]))
        return cls(x0, lo, hi, norm, torch.full((x0.shape[0],), kap, dtype=x0.dtype, device=x0.device))

    def concretize(self, A, bias):
        """Lower bound of ``A . x + bias`` over the set; ``A`` is ``[B, R, *in]``."""
        B, R = A.shape[:2]
        Af = A.reshape(B, R, -1)
        lo = self.lo.reshape(B, 1, -1)
        hi = self.hi.reshape(B, 1, -1)
        box = (Af.clamp(min=0) * lo + Af.clamp(max=0) * hi).sum(-1)
        if self.norm == "l2":
            ball = (Af * self.x0.reshape(B, 1, -1)).sum(-1) - self.eps.reshape(B, 1) * Af.norm(dim=-1)
            box = torch.maximum(box, ball)
        return box + bias


def ibp_node(nd: Node, bounds):
    if nd.kind == "affine":
        lo, hi = bounds[nd.inputs[0]]
        c = (lo + hi) / 2
        r = (hi - lo) / 2
        cc = nd.op.fwd(c)
        rr = nd.op.absfwd(r)
        return cc - rr, cc + rr
    if nd.kind == "relu":
        lo, hi = bounds[nd.inputs[0]]
        return lo.clamp(min=0), hi.clamp(min=0)
    (l1, h1), (l2, h2) = bounds[nd.inputs[0]], bounds[nd.inputs[1]]
    return l1 + l2, h1 + h2


def ibp_pass(net: Net, bounds: list, start: int = 1) -> list:
    """Fill ``bounds[i]`` for every node ``i >= start`` by interval propagation (in place)."""
    for i in range(start, len(net.nodes)):
        bounds[i] = ibp_node(net.nodes[i], bounds)
    return bounds


def backward(net: Net, target: int, A: torch.Tensor, bounds, inset: InputSet, stop: int | None = None,
              form_at: int | None = None):
    """Lower bound of ``A . z_target`` (``A``: ``[B, R, *shape]``) by back-substitution.

    ReLU relaxations use the pre-activation intervals in ``bounds``. ``stop``: a node where the
    remaining linear form is concretized with its interval instead of going further back.
    ``form_at``: a node every path back from ``target`` passes; the substitution ends there and
    returns ``(bias, A_form)``, the relaxed lower bound being ``A_form . z_form_at + bias``.
    """
    B, R = A.shape[:2]
    acc = {target: A}
    bias = torch.zeros((B, R), dtype=A.dtype, device=A.device)
    for i in range(target, -1, -1):
        Ai = acc.pop(i, None)
        if Ai is None:
            continue
        if i == form_at:
            if acc:
                raise ValueError(f"node {form_at} is not on every path back from node {target}")
            return bias, Ai
        nd = net.nodes[i]
        if i == stop or nd.kind == "input":
            if nd.kind == "input":
                bias = inset.concretize(Ai, bias)
            else:
                lo, hi = bounds[i]
                Af = Ai.reshape(B, R, -1)
                bias = bias + (Af.clamp(min=0) * lo.reshape(B, 1, -1) + Af.clamp(max=0) * hi.reshape(B, 1, -1)).sum(-1)
            continue
        src = nd.inputs[0]
        if nd.kind == "affine":
            in_shape = net.nodes[src].shape
            b0 = nd.op.bias(in_shape, Ai)
            bias = bias + (Ai * b0).reshape(B, R, -1).sum(-1)
            contrib = nd.op.transpose(Ai, in_shape)
            _accum(acc, src, contrib)
        elif nd.kind == "relu":
            l, u = bounds[src]
            l = l.unsqueeze(1)
            u = u.unsqueeze(1)
            active = l >= 0
            unstable = (l < 0) & (u > 0)
            denom = torch.where(unstable, u - l, torch.ones_like(u))
            su = torch.where(unstable, u / denom, active.to(A.dtype))
            bu = torch.where(unstable, -l * su, torch.zeros_like(u))
            sl = torch.where(unstable, (u >= -l).to(A.dtype), active.to(A.dtype))
            Apos = Ai.clamp(min=0)
            Aneg = Ai.clamp(max=0)
            bias = bias + (Aneg * bu).reshape(B, R, -1).sum(-1)
            _accum(acc, src, Apos * sl + Aneg * su)
        else:  # add
            _accum(acc, nd.inputs[0], Ai)
            _accum(acc, nd.inputs[1], Ai)
    return bias


def _accum(acc, k, v):
    if k in acc:
        acc[k] = acc[k] + v
    else:
        acc[k] = v


def trailing_affine_start(net: Net) -> int:
    """The node whose interval IBP concretizes the margins against (last affine layers folded)."""
    i = len(net.nodes) - 1
    while net.nodes[i].kind == "affine":
        i = net.nodes[i].inputs[0]
    return i


def margin_matrix(pred: torch.Tensor, nclass: int, dtype) -> torch.Tensor:
    B = pred.shape[0]
    eye = torch.eye(nclass, dtype=dtype, device=pred.device)
    C = eye[pred].unsqueeze(1) - eye.unsqueeze(0)  # [B, nclass, nclass]: row j = e_c - e_j
    keep = ~torch.nn.functional.one_hot(pred, nclass).bool()  # drop j == c
    return C[keep].reshape(B, nclass - 1, nclass)


def margin_lower_bounds(
    net: Net, x0, pred, inset: InputSet, method: str, max_rows: int = 4096, intermediate: str = "crown",
    bounds: list | None = None,
):
    """Lower bounds ``[B, nclass-1]`` on the margins ``z_c - z_j`` over ``inset`` (IBP and CROWN).

    Returns ``(ibp_lb, crown_lb)``; ``crown_lb`` is None when ``method == "ibp"``.
    ``intermediate="ibp"`` skips the CROWN tightening of pre-activation bounds (cheaper).
    ``bounds``: interval bounds per node already computed (float64 ``(lo, hi)``, ``None`` for the
    nodes no back-substitution reads), used instead of the IBP pass.
    """
    nodes = net.nodes
    out = len(nodes) - 1
    nclass = nodes[out].shape[0]
    C = margin_matrix(pred, nclass, x0.dtype)

    if bounds is None:  # pure IBP pass
        bounds = ibp_pass(net, [(inset.lo, inset.hi)] + [None] * (len(nodes) - 1))
    ibp_stop = trailing_affine_start(net)
    ibp_lb = backward(net, out, C, bounds, inset, stop=ibp_stop) if ibp_stop != out else concretize_interval(C, bounds[out])
    if method == "ibp":
        return ibp_lb, None
    if intermediate == "ibp":  # the IBP bounds are the intermediate bounds
        return ibp_lb, backward(net, out, C, bounds, inset)

    # CROWN pass: tighten pre-activation bounds of every ReLU input, in topological order
    tb = [None] * len(nodes)
    tb[0] = (inset.lo, inset.hi)
    relu_inputs = {nd.inputs[0] for nd in nodes if nd.kind == "relu"}
    for i in range(1, len(nodes)):
        tb[i] = ibp_node(nodes[i], tb)
        if i in relu_inputs and nodes[i].kind != "input":
            tb[i] = crown_tighten(net, i, tb, inset, max_rows)
    crown_lb = backward(net, out, C, tb, inset)
    return ibp_lb, crown_lb


def concretize_interval(C, bnd):
    lo, hi = bnd
    return (C.clamp(min=0) * lo.unsqueeze(1) + C.clamp(max=0) * hi.unsqueeze(1)).sum(-1)


def crown_tighten(net: Net, i: int, tb, inset: InputSet, max_rows: int):
    lo, hi = tb[i]
    B = lo.shape[0]
    shape = lo.shape[1:]
    n = lo[0].numel()
    lf = lo.reshape(B, n).clone()
    hf = hi.reshape(B, n).clone()
    unstable = (lf < 0) & (hf > 0)
    counts = unstable.sum(1)
    m = int(counts.max().item()) if B else 0
    if m == 0:
        return lo, hi
    # per-sample indices of unstable neurons, padded with a valid index
    order = torch.argsort((~unstable).to(torch.int8), dim=1, stable=True)[:, :m]
    valid = torch.arange(m, device=lo.device).unsqueeze(0) < counts.unsqueeze(1)
    chunk = max(1, max_rows // (2 * B))  # rows of one back-substitution, over the whole batch
    for s in range(0, m, chunk):
        idx = order[:, s : s + chunk]
        val = valid[:, s : s + chunk]
        k = idx.shape[1]
        A = torch.zeros((B, 2 * k, n), dtype=lo.dtype, device=lo.device)
        ar = torch.arange(k, device=lo.device).unsqueeze(0).expand(B, k)
        A[torch.arange(B).unsqueeze(1), ar, idx] = 1.0
        A[torch.arange(B).unsqueeze(1), ar + k, idx] = -1.0
        res = backward(net, i, A.reshape(B, 2 * k, *shape), tb, inset)
        new_l = res[:, :k]
        new_u = -res[:, k:]
        cur_l = torch.gather(lf, 1, idx)
        cur_u = torch.gather(hf, 1, idx)
        new_l = torch.where(val, torch.maximum(cur_l, new_l), cur_l)
        new_u = torch.where(val, torch.minimum(cur_u, new_u), cur_u)
        lf.scatter_(1, idx, new_l)
        hf.scatter_(1, idx, new_u)
    return lf.reshape(lo.shape), hf.reshape(hi.shape)
