"""Sound stability certificates, written in plain torch: IBP, CROWN and an exact LP search.

What is proven
--------------
For a sample ``x`` with predicted class ``c`` (argmax of the network at ``x``) and a radius
``kappa`` in pre-normalization [0, 1] pixel units, a ``True`` flag means: for every ``x'`` in the
ball ``{x' : ||x' - x|| <= kappa}`` (norm ``linf`` or ``l2``) intersected with the input domain
(default ``[0, 1]^d``), every margin ``z_c(x') - z_j(x')``, ``j != c``, is ``> 0``: the predicted
class cannot change. Proofs are about the network in exact real arithmetic with the model's
weights (float32 weights are exactly representable in float64). The bound arithmetic runs in
float64, and a sample is certified only if every margin lower bound exceeds
``tol = rtol * (1 + max_j |z_j(x)|)`` (``rtol = 1e-9`` by default), far above float64 rounding
for networks of this kind (~1e-13 relative). The radius is inflated by a relative ``1e-9`` so
that float64 rounding of cell boundaries in :mod:`genbound.partition.grid` is covered too.
A sample whose float64 prediction differs from the model's own forward pass is never certified.

Methods (``method=``)
---------------------
``ibp``    interval bound propagation; the last affine layers are folded into the margin
           (``C W`` before concretizing), as is standard.
``crown``  the combined certificate: CROWN back-substitution of the margins ``z_c - z_j`` to the
           input (ReLU upper relaxation = chord; lower = adaptive slope 1 if ``u >= -l`` else 0),
           with intermediate pre-activation bounds computed by CROWN itself layer by layer for
           the neurons that IBP leaves unstable, intersected with IBP (and the tightened bounds
           are propagated forward by IBP). Final lower bound per margin = max(IBP, CROWN), so it
           certifies at least what ``ibp`` certifies. Concretization: ``linf`` over the box
           ``[max(0, x - k), min(1, x + k)]``; ``l2`` as ``max(A x - k ||A||_2, box bound)``.
``exact``  for tiny inputs (``d <= 8``), ``linf`` only: samples not certified by ``crown`` are
           decided by enumerating the linear regions (ReLU activation patterns) of the network
           inside the ball with LPs (scipy HiGHS), branching neuron by neuron. Each region's
           margin minimum is bounded from below by a *safe dual bound* (valid for any dual vector,
           so LP inaccuracy cannot produce a false proof); a region whose LP minimizer flips the
           prediction in the real forward pass is a counterexample. Sound; complete up to the
           tolerance: a sample is ``stable``, ``unstable`` (counterexample found) or
           ``undecided`` (margin minimum in (0, tol], LP failure, or ``max_lps`` exhausted).

Supported modules (the contract for model code)
-----------------------------------------------
The model is walked structurally; a module is supported when its *exact type* is one of:

* ``nn.Sequential`` (nested; subclasses only if they do not override ``forward``);
* ``nn.Linear``, ``nn.Conv2d`` (any stride/padding/dilation/groups/padding_mode),
  ``nn.Conv1d``;
* ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` in **eval mode** with running statistics (folded into
  an affine map);
* ``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d``, ``nn.Flatten`` (``start_dim=1``), ``nn.Identity``,
  ``nn.Dropout`` in eval mode;
* ``nn.ReLU``;
* input normalization: any module with ``genbound_normalize = True`` and tensor attributes
  ``mean`` and ``std`` of shape ``[C]`` (or scalars) whose forward is ``(x - mean) / std`` along
  dim 1 (channels); :class:`Normalize` here is one;
* residual blocks: any module with ``genbound_residual = True`` and attributes ``block``,
  ``shortcut`` (a module or ``None`` = identity) and ``post`` (a module or ``None``) whose forward
  is ``post(block(x) + shortcut(x))``; :class:`Residual` here is one;
* any other module exposing ``genbound_layers`` (an ``nn.Sequential`` or list of modules) whose
  forward equals applying those layers in order (e.g. a ResNet class).

Every structural claim is checked numerically: the verifier's own forward pass must reproduce
``model(x)`` on the data, or the model is ``unverified``. Anything else (``nn.Tanh``,
``nn.MaxPool2d``, custom modules, functional calls hidden in a custom ``forward``) makes the
whole model **unverified**: all flags False, ``evidence["status"] == "unverified"`` and the
reason recorded -- never ``stable``. A model with BatchNorm or Dropout in **training mode** is
refused with :class:`~genbound.errors.UserInputError` (call ``model.eval()``): its output is
not a fixed function of the input.

Flags are monotone in kappa: samples are tried at ascending kappas and dropped at the first kappa
that is not proven (early stop), so ``stable[i, j]`` implies ``stable[i, :j]``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genbound.errors import UserInputError
from genbound.models.architectures import Residual  # noqa: F401  (re-exported: the residual protocol)
from genbound.models.normalize import Normalize  # noqa: F401  (re-exported: the normalization protocol)

__all__ = [
    "Normalize",
    "Residual",
    "UnsupportedModelError",
    "SoundStabilityResult",
    "sound_stability",
    "compile_network",
    "margin_lower_bounds",
    "SOUND_METHODS",
]

SOUND_METHODS = ("ibp", "crown", "exact")
DEFAULT_RTOL = 1e-9
RADIUS_INFLATION = 1e-9
EXACT_MAX_DIM = 8


# ---------------------------------------------------------------------------------------------
# Public helper modules (the protocols)
# ---------------------------------------------------------------------------------------------


def _normalize(x, mean, std):
    mean = mean.to(x.dtype).reshape(-1)
    std = std.to(x.dtype).reshape(-1)
    shape = [1] * x.dim()
    if mean.numel() > 1:
        shape[1] = mean.numel()
    else:
        shape = [1]
    return (x - mean.reshape(shape)) / std.reshape(shape)


class UnsupportedModelError(Exception):
    """Internal: the model holds a module the verifier cannot bound (-> ``unverified``)."""


# ---------------------------------------------------------------------------------------------
# Intermediate representation: a DAG of affine / relu / add nodes, in topological order
# ---------------------------------------------------------------------------------------------


class _Affine:
    """An affine map given by a float64 callable ``fwd`` and its absolute-value linear part."""

    def __init__(self, name, fwd, absfwd, tfn=None, module=None):
        self.name = name
        self.module = module  # the model's own module (its float32 weights), for float32 interval bounds
        self.fwd = fwd  # [N, *in] -> [N, *out], affine
        self.absfwd = absfwd  # [N, *in] (>= 0) -> [N, *out], upper bound of |M| r
        self.tfn = tfn  # optional direct ``A M`` ([N, *out] -> [N, *in]); else the vjp of ``fwd``
        self._f0 = None

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


@dataclass
class _Node:
    kind: str  # "input" | "affine" | "relu" | "add"
    inputs: list
    op: _Affine | None = None
    shape: tuple = ()


class _Net:
    def __init__(self):
        self.nodes: list[_Node] = []

    def add(self, kind, inputs, op=None):
        self.nodes.append(_Node(kind, list(inputs), op))
        return len(self.nodes) - 1

    # exact float64 forward, also records shapes
    def forward(self, x):
        vals = [None] * len(self.nodes)
        for i, nd in enumerate(self.nodes):
            if nd.kind == "input":
                v = x
            elif nd.kind == "affine":
                v = nd.op.fwd(vals[nd.inputs[0]])
            elif nd.kind == "relu":
                v = torch.clamp(vals[nd.inputs[0]], min=0)
            else:
                v = vals[nd.inputs[0]] + vals[nd.inputs[1]]
            vals[i] = v
            nd.shape = tuple(v.shape[1:])
        return vals


def _double(m: nn.Module, device) -> nn.Module:
    md = copy.deepcopy(m).to(device=device, dtype=torch.float64)
    for p in md.parameters():
        p.requires_grad_(False)
    return md


def _is_plain(m: nn.Module, cls) -> bool:
    return type(m) is cls


def _check_train_mode(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if m.training and isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)):
            raise UserInputError(
                f"module '{name or type(m).__name__}' ({type(m).__name__}) is in training mode; "
                "call model.eval() before certifying stability"
            )


def _leaf_affine(m: nn.Module, device) -> _Affine | None:
    t = type(m)
    if t is nn.Linear:
        md = _double(m, device)
        W = md.weight.detach()
        return _Affine("Linear", lambda x: md(x), lambda r: F.linear(r, W.abs()), lambda a: a @ W, m)
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

        return _Affine(t.__name__, lambda x: md(x), absfwd, module=m)
    if t in (nn.BatchNorm1d, nn.BatchNorm2d):
        if m.training or m.running_mean is None or m.running_var is None:
            return None
        md = _double(m, device)
        scale = md.weight.detach() / torch.sqrt(md.running_var + md.eps) if md.affine else 1.0 / torch.sqrt(md.running_var + md.eps)
        scale = scale.detach()

        def absfwd(r, scale=scale):
            shape = [1, -1] + [1] * (r.dim() - 2)
            return r * scale.abs().reshape(shape)

        return _Affine(t.__name__, lambda x: md(x), absfwd)
    if t in (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AdaptiveAvgPool1d):
        md = _double(m, device)
        return _Affine(t.__name__, lambda x: md(x), lambda r: md(r), module=m)  # non-negative weights
    if t is nn.Flatten:
        if m.start_dim != 1:
            return None
        return _Affine("Flatten", lambda x: m(x), lambda r: m(r), lambda a: a, m)  # transpose() reshapes
    if t is nn.Identity or (t in (nn.Dropout, nn.Dropout1d, nn.Dropout2d) and not m.training):
        return _Affine(t.__name__, lambda x: x, lambda r: r, lambda a: a, m)
    if getattr(m, "genbound_normalize", False) is True:
        mean = getattr(m, "mean", None)
        std = getattr(m, "std", None)
        if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)):
            return None
        mean = mean.detach().to(device=device, dtype=torch.float64).reshape(-1)
        std = std.detach().to(device=device, dtype=torch.float64).reshape(-1)
        if torch.any(std == 0) or mean.numel() != std.numel():
            return None
        return _Affine(
            "Normalize",
            lambda x: _normalize(x, mean, std),
            lambda r: _normalize(r, torch.zeros_like(mean), std.abs()),
            module=m,
        )
    return None


def _build(m: nn.Module, net: _Net, src: int, device, path: str) -> int:
    t = type(m)
    if isinstance(m, nn.Sequential) and t.forward is nn.Sequential.forward:
        for name, sub in m.named_children():
            src = _build(sub, net, src, device, f"{path}.{name}" if path else name)
        return src
    if t is nn.ReLU:
        return net.add("relu", [src])
    if getattr(m, "genbound_residual", False) is True:
        if not hasattr(m, "block"):
            raise UnsupportedModelError(f"'{path}': residual module without a 'block' attribute")
        b = _build(m.block, net, src, device, f"{path}.block")
        sc = getattr(m, "shortcut", None)
        s = src if sc is None else _build(sc, net, src, device, f"{path}.shortcut")
        out = net.add("add", [b, s])
        post = getattr(m, "post", None)
        if post is not None:
            out = _build(post, net, out, device, f"{path}.post")
        return out
    aff = _leaf_affine(m, device)
    if aff is not None:
        return net.add("affine", [src], aff)
    layers = getattr(m, "genbound_layers", None)
    if layers is not None:
        if isinstance(layers, nn.Module):
            layers = [layers]
        for k, sub in enumerate(layers):
            src = _build(sub, net, src, device, f"{path}.genbound_layers[{k}]")
        return src
    extra = ""
    if t is nn.BatchNorm1d or t is nn.BatchNorm2d:
        extra = " (BatchNorm without running statistics is not an affine map)"
    if t is nn.Flatten:
        extra = " (only start_dim=1 is supported)"
    raise UnsupportedModelError(f"unsupported module '{path or '<model>'}' of type {t.__name__}{extra}")


def compile_network(model: nn.Module, device=None) -> _Net:
    """Compile ``model`` into the verifier's float64 graph (raises UnsupportedModelError)."""
    _check_train_mode(model)
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    net = _Net()
    src = net.add("input", [])
    out = _build(model, net, src, device, "")
    if out == 0:
        # identity network: logits are the input itself
        out = net.add("affine", [0], _Affine("Identity", lambda x: x, lambda r: r))
    if out != len(net.nodes) - 1:  # pragma: no cover - _build always appends the output last
        raise UnsupportedModelError("internal: output node is not last")
    return net


# ---------------------------------------------------------------------------------------------
# Bound propagation
# ---------------------------------------------------------------------------------------------


@dataclass
class _InputSet:
    x0: torch.Tensor  # [B, *in]
    lo: torch.Tensor  # box (for linf: exactly the set; for l2: an enclosing box)
    hi: torch.Tensor
    norm: str
    eps: torch.Tensor  # [B]

    @classmethod
    def ball(cls, x0: torch.Tensor, kap: float, norm: str, domain) -> "_InputSet":
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


def _ibp_node(nd: _Node, bounds):
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


def _ibp_pass(net: _Net, bounds: list, start: int = 1) -> list:
    """Fill ``bounds[i]`` for every node ``i >= start`` by interval propagation (in place)."""
    for i in range(start, len(net.nodes)):
        bounds[i] = _ibp_node(net.nodes[i], bounds)
    return bounds


def _backward(net: _Net, target: int, A: torch.Tensor, bounds, inset: _InputSet, stop: int | None = None,
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


def _trailing_affine_start(net: _Net) -> int:
    """The node whose interval IBP concretizes the margins against (last affine layers folded)."""
    i = len(net.nodes) - 1
    while net.nodes[i].kind == "affine":
        i = net.nodes[i].inputs[0]
    return i


def _margin_matrix(pred: torch.Tensor, nclass: int, dtype) -> torch.Tensor:
    B = pred.shape[0]
    eye = torch.eye(nclass, dtype=dtype, device=pred.device)
    C = eye[pred].unsqueeze(1) - eye.unsqueeze(0)  # [B, nclass, nclass]: row j = e_c - e_j
    keep = ~torch.nn.functional.one_hot(pred, nclass).bool()  # drop j == c
    return C[keep].reshape(B, nclass - 1, nclass)


def margin_lower_bounds(
    net: _Net, x0, pred, inset: _InputSet, method: str, max_rows: int = 4096, intermediate: str = "crown",
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
    C = _margin_matrix(pred, nclass, x0.dtype)

    if bounds is None:  # pure IBP pass
        bounds = _ibp_pass(net, [(inset.lo, inset.hi)] + [None] * (len(nodes) - 1))
    ibp_stop = _trailing_affine_start(net)
    ibp_lb = _backward(net, out, C, bounds, inset, stop=ibp_stop) if ibp_stop != out else _conc(C, bounds[out])
    if method == "ibp":
        return ibp_lb, None
    if intermediate == "ibp":  # the IBP bounds are the intermediate bounds
        return ibp_lb, _backward(net, out, C, bounds, inset)

    # CROWN pass: tighten pre-activation bounds of every ReLU input, in topological order
    tb = [None] * len(nodes)
    tb[0] = (inset.lo, inset.hi)
    relu_inputs = {nd.inputs[0] for nd in nodes if nd.kind == "relu"}
    for i in range(1, len(nodes)):
        tb[i] = _ibp_node(nodes[i], tb)
        if i in relu_inputs and nodes[i].kind != "input":
            tb[i] = _crown_tighten(net, i, tb, inset, max_rows)
    crown_lb = _backward(net, out, C, tb, inset)
    return ibp_lb, crown_lb


def _conc(C, bnd):
    lo, hi = bnd
    return (C.clamp(min=0) * lo.unsqueeze(1) + C.clamp(max=0) * hi.unsqueeze(1)).sum(-1)


def _crown_tighten(net: _Net, i: int, tb, inset: _InputSet, max_rows: int):
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
        res = _backward(net, i, A.reshape(B, 2 * k, *shape), tb, inset)
        new_l = res[:, :k]
        new_u = -res[:, k:]
        cur_l = torch.gather(lf, 1, idx)
        cur_u = torch.gather(hf, 1, idx)
        new_l = torch.where(val, torch.maximum(cur_l, new_l), cur_l)
        new_u = torch.where(val, torch.minimum(cur_u, new_u), cur_u)
        lf.scatter_(1, idx, new_l)
        hf.scatter_(1, idx, new_u)
    return lf.reshape(lo.shape), hf.reshape(hi.shape)


# ---------------------------------------------------------------------------------------------
# Exact search (linear regions + LP with safe dual bounds), tiny inputs, linf
# ---------------------------------------------------------------------------------------------


def _safe_lp_min(c, c0, G, h, lo, hi):
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


class _ExactSearch:
    def __init__(self, net: _Net, x0: torch.Tensor, pred: int, lo, hi, tol: float, max_lps: int, slack: float):
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
        return _safe_lp_min(c, c0, G, h, self.lo, self.hi)

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


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


@dataclass
class SoundStabilityResult:
    """``stable[i, j]``: sample i proven stable at ``kappas[j]``; ``evidence``: how."""

    stable: np.ndarray  # bool[n, J]
    evidence: dict
    margin_lb: np.ndarray = field(repr=False, default=None)  # float64[n, J], nan where not tried
    status: np.ndarray = field(repr=False, default=None)  # str codes per (i, j), see evidence


def _validate(x, kappas, norm, method, domain):
    if method not in SOUND_METHODS:
        raise UserInputError(f"unknown sound stability method {method!r}; use one of {', '.join(SOUND_METHODS)}")
    if norm not in ("linf", "l2"):
        raise UserInputError(f"norm must be 'linf' or 'l2', got {norm!r}")
    k = np.asarray(kappas, dtype=np.float64).reshape(-1)
    if k.size == 0 or not np.all(np.isfinite(k)) or np.any(k < 0):
        raise UserInputError("kappas must be a non-empty list of finite radii >= 0 (pixel units in [0, 1])")
    if np.any(np.diff(k) < 0):
        raise UserInputError("kappas must be sorted ascending")
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dim() < 2:
        raise UserInputError(f"x must be a batch [n, ...] of inputs, got shape {tuple(x.shape)}")
    if not torch.all(torch.isfinite(x)):
        raise UserInputError("x contains NaN or inf")
    if domain is not None:
        dlo, dhi = domain
        if x.numel() and (x.min().item() < dlo or x.max().item() > dhi):
            raise UserInputError(
                f"x has values in [{x.min().item():.4g}, {x.max().item():.4g}] outside the input domain "
                f"[{dlo}, {dhi}]; pass inputs in pre-normalization pixel units (put normalization "
                "inside the model, e.g. genbound.stability.sound.Normalize) or set domain="
            )
    if method == "exact":
        if norm != "linf":
            raise UserInputError("method 'exact' supports norm='linf' only; use method='crown' for l2")
        d = x[0].numel()
        if d > EXACT_MAX_DIM:
            raise UserInputError(
                f"method 'exact' is for tiny inputs (d <= {EXACT_MAX_DIM}); this input has d={d}: use 'crown'"
            )
    return x, k


def sound_stability(
    model: nn.Module,
    x,
    kappas,
    *,
    norm: str = "linf",
    method: str = "crown",
    domain: tuple | None = (0.0, 1.0),
    batch_size: int = 64,
    rtol: float = DEFAULT_RTOL,
    device=None,
    progress: bool = True,
    max_rows: int = 4096,
    intermediate: str = "crown",
    exact_max_lps: int = 20000,
) -> SoundStabilityResult:
    """Prove per-sample stability of ``model``'s prediction in kappa-balls (see module docstring).

    Parameters
    ----------
    model : a network of supported modules (module docstring), in eval mode; its input is in
        pre-normalization pixel units (normalization inside the model).
    x : ``[n, *input_shape]`` inputs in ``domain``.
    kappas : ascending radii, pixel units.
    norm : ``"linf"`` or ``"l2"``. method : ``"ibp"``, ``"crown"`` (combined) or ``"exact"``.
    domain : ``(lo, hi)`` the input domain intersected with every ball, or None for all of R^d.
    rtol : certified iff every margin lower bound > ``rtol * (1 + max_j |z_j(x)|)``.
    max_rows : cap on rows (over the batch) of one back-substitution: the memory knob of CROWN
        intermediates (memory ~ max_rows x largest activation size x 8 bytes).
    intermediate : ``"crown"`` (default: CROWN bounds for the neurons IBP leaves unstable,
        intersected with IBP) or ``"ibp"`` (IBP intermediates only; much cheaper on large conv
        nets, still sound, looser).

    Returns :class:`SoundStabilityResult` with ``stable`` bool[n, J] (monotone in kappa) and
    ``evidence`` (method, sound=True, norm, tolerance, per-kappa counts, status, reason).
    """
    x, k = _validate(x, kappas, norm, method, domain)
    if intermediate not in ("crown", "ibp"):
        raise UserInputError(f"intermediate must be 'crown' or 'ibp', got {intermediate!r}")
    if int(batch_size) < 1 or int(max_rows) < 2:
        raise UserInputError("batch_size must be >= 1 and max_rows >= 2")
    n, J = x.shape[0], k.size
    stable = np.zeros((n, J), dtype=bool)
    margin_lb = np.full((n, J), np.nan)
    status = np.full((n, J), "untried", dtype=object)
    evidence = {
        "method": method,
        "sound": True,
        "norm": norm,
        "kappas": k.tolist(),
        "domain": None if domain is None else [float(domain[0]), float(domain[1])],
        "tolerance": {"rtol": float(rtol), "rule": "margin lower bound > rtol * (1 + max_j |logit_j(x)|)"},
        "radius_inflation": RADIUS_INFLATION,
        "arithmetic": "float64",
        "intermediate_bounds": None
        if method == "ibp"
        else ("crown (unstable neurons) intersected with ibp" if intermediate == "crown" else "ibp"),
        "relu_relaxation": None if method == "ibp" else "upper: chord; lower: adaptive slope (1 if u >= -l else 0)",
        "status": "verified",
        "unsupported_reason": None,
        "n": int(n),
        "proven_stable_per_kappa": [0] * J,
        "tried_per_kappa": [0] * J,
    }
    if method == "exact":
        evidence["exact"] = {
            "algorithm": "linear-region enumeration with LPs (HiGHS) and safe dual bounds, after crown",
            "complete": "up to tolerance; undecided samples are not proven",
            "max_lps": int(exact_max_lps),
            "unstable_per_kappa": [0] * J,
            "undecided_per_kappa": [0] * J,
            "crown_proven_per_kappa": [0] * J,
        }
    if n == 0:
        return SoundStabilityResult(stable, evidence, margin_lb, status)

    model_device = device
    if model_device is None:
        p = next(iter(model.parameters()), None)
        model_device = p.device if p is not None else torch.device("cpu")
    try:
        net = compile_network(model, model_device)
    except UnsupportedModelError as e:
        evidence["status"] = "unverified"
        evidence["unsupported_reason"] = str(e)
        status[:] = "unverified"
        return SoundStabilityResult(stable, evidence, margin_lb, status)

    from tqdm.auto import tqdm

    bar = tqdm(total=n * J, desc=f"sound stability ({method}, {norm})", unit="check", disable=not progress)
    alive = np.arange(n)
    param_dtype = next((p.dtype for p in model.parameters()), torch.float32)
    try:
        for j in range(J):
            kap = float(k[j]) * (1.0 + RADIUS_INFLATION)
            proven_j = []
            for s in range(0, alive.size, batch_size):
                idx = alive[s : s + batch_size]
                xb = x[idx]
                ok, lbs, st = _certify_batch(
                    net, model, xb, kap, norm, method, domain, rtol, model_device, param_dtype, max_rows,
                    exact_max_lps, intermediate,
                )
                if ok is None:  # forward mismatch: model not what the structure says
                    evidence["status"] = "unverified"
                    evidence["unsupported_reason"] = st
                    stable[:] = False
                    margin_lb[:] = np.nan
                    status[:] = "unverified"
                    return SoundStabilityResult(stable, evidence, margin_lb, status)
                margin_lb[idx, j] = lbs
                status[idx, j] = st
                proven_j.append(idx[ok])
                bar.update(idx.size)
            evidence["tried_per_kappa"][j] = int(alive.size)
            bar.update((n - alive.size))
            alive = np.concatenate(proven_j) if proven_j else np.zeros(0, dtype=np.int64)
            stable[alive, j] = True
            evidence["proven_stable_per_kappa"][j] = int(alive.size)
            if method == "exact":
                col = status[:, j]
                evidence["exact"]["unstable_per_kappa"][j] = int(np.sum(col == "unstable"))
                evidence["exact"]["undecided_per_kappa"][j] = int(np.sum(col == "undecided"))
                evidence["exact"]["crown_proven_per_kappa"][j] = int(np.sum(col == "stable_crown"))
            if alive.size == 0:
                bar.update(n * (J - j - 1))
                break
    finally:
        bar.close()
    # monotone by construction (early stop); enforce anyway: a proof at kappa_j carries down
    stable = np.flip(np.maximum.accumulate(np.flip(stable, 1), axis=1), 1).copy()
    return SoundStabilityResult(stable, evidence, margin_lb, status)


def structure_mismatch(net: _Net, model: nn.Module, xb: torch.Tensor, kap: float, domain, device, param_dtype):
    """Check that the compiled graph reproduces ``model`` on ``xb`` and on random points of the
    ``kap``-box around it; returns ``(x64, z64, ref)`` (``xb`` in float64, the float64 logits of the
    graph and of the model at ``xb``) or a string saying what does not match."""
    x64 = xb.to(device=device, dtype=torch.float64)
    with torch.no_grad():
        vals = net.forward(x64)
        z = vals[-1]
        if z.dim() != 2:
            return f"model output has shape {tuple(z.shape)}; expected logits [n, classes]"
        ref = model(xb.to(device=device, dtype=param_dtype)).to(torch.float64)
    if ref.shape != z.shape or not torch.allclose(ref, z, rtol=1e-4, atol=1e-4 * (1 + z.abs().max().item())):
        return (
            "the verifier's forward pass does not reproduce model(x) (max difference "
            f"{(ref - z).abs().max().item() if ref.shape == z.shape else float('nan'):.3g}); "
            "a module's forward does not match its documented structure"
        )
    # structural check away from the data too: random points of the (inflated) box around x
    gen = torch.Generator(device="cpu").manual_seed(0)
    xr = x64 + (2 * torch.rand(x64.shape, generator=gen, dtype=torch.float64) - 1).to(device) * kap
    if domain is not None:
        xr = xr.clamp(float(domain[0]), float(domain[1]))
    with torch.no_grad():
        zr = net.forward(xr)[-1]
        rr = model(xr.to(param_dtype)).to(torch.float64)
    if not torch.allclose(rr, zr, rtol=1e-4, atol=1e-4 * (1 + zr.abs().max().item())):
        return (
            "the verifier's forward pass does not reproduce model(x') near the data (max difference "
            f"{(rr - zr).abs().max().item():.3g}); a module's forward does not match its documented structure"
        )
    return x64, z, ref


def _certify_batch(net, model, xb, kap, norm, method, domain, rtol, device, param_dtype, max_rows, max_lps, intermediate):
    checked = structure_mismatch(net, model, xb, kap, domain, device, param_dtype)
    if isinstance(checked, str):
        return None, None, checked
    x64, z, ref = checked
    B, nclass = z.shape
    pred = z.argmax(1)
    agree = (ref.argmax(1) == pred).cpu().numpy()
    scale = 1.0 + z.abs().max(1).values
    tol = rtol * scale
    if nclass == 1:
        ok = agree.copy()
        lbs = np.full(B, np.inf)
        return ok, lbs, np.where(ok, "stable", "not_proven").astype(object)
    inset = _InputSet.ball(x64, kap, norm, domain)
    lo, hi = inset.lo, inset.hi
    with torch.no_grad():
        ibp_lb, crown_lb = margin_lower_bounds(
            net, x64, pred, inset, "ibp" if method == "ibp" else "crown", max_rows, intermediate
        )
    lb = ibp_lb if crown_lb is None else torch.maximum(ibp_lb, crown_lb)
    worst = lb.min(1).values
    ok = ((worst > tol).cpu().numpy()) & agree
    lbs = worst.cpu().numpy()
    st = np.where(ok, "stable", "not_proven").astype(object)
    if method == "exact":
        st = np.where(ok, "stable_crown", "not_proven").astype(object)
        for b in np.nonzero(~ok & agree)[0]:
            search = _ExactSearch(
                net, x64[b : b + 1], int(pred[b]), lo[b].reshape(-1).cpu().numpy(), hi[b].reshape(-1).cpu().numpy(),
                float(tol[b]), max_lps, slack=1e-9,
            )
            res = search.run()
            st[b] = res
            if res == "stable":
                ok[b] = True
    return ok, lbs, st
