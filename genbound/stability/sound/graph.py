"""The verifier's graph: a model compiled into a DAG of affine / relu / add nodes.

:func:`compile_network` walks the model structurally (the contract is in
:mod:`genbound.stability.sound`) and returns a :class:`Net` whose nodes are in topological order;
affine nodes hold an :class:`~genbound.stability.sound.operators.Affine` built by
:func:`~genbound.stability.sound.operators.leaf_affine`. ``Net.forward`` is the exact float64
forward pass (it also records every node's shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from genbound.torch_utils import refuse_train_mode
from genbound.stability.sound.operators import Affine, leaf_affine

__all__ = ["Net", "Node", "UnsupportedModelError", "compile_network"]


class UnsupportedModelError(Exception):
    """Internal: the model holds a module the verifier cannot bound (-> ``unverified``)."""


@dataclass
class Node:
    kind: str  # "input" | "affine" | "relu" | "add"
    inputs: list
    op: Affine | None = None
    shape: tuple = ()


class Net:
    def __init__(self):
        self.nodes: list[Node] = []

    def add(self, kind, inputs, op=None):
        self.nodes.append(Node(kind, list(inputs), op))
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


def _build(m: nn.Module, net: Net, src: int, device, path: str) -> int:
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
    aff = leaf_affine(m, device)
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


def compile_network(model: nn.Module, device=None) -> Net:
    """Compile ``model`` into the verifier's float64 graph (raises UnsupportedModelError)."""
    refuse_train_mode(model, "certifying stability")
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    net = Net()
    src = net.add("input", [])
    out = _build(model, net, src, device, "")
    if out == 0:
        # identity network: logits are the input itself
        out = net.add("affine", [0], Affine("Identity", lambda x: x, lambda r: r, float32_op=lambda s, n: None))
    if out != len(net.nodes) - 1:  # pragma: no cover - _build always appends the output last
        raise UnsupportedModelError("internal: output node is not last")
    return net
