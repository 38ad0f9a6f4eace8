"""A named layer's output as a feature map of the input (a forward hook on the model).

``LayerFeatures(model, "layer4")(x)`` runs ``model`` on ``x`` (``[b, ...]`` in [0, 1] pixels, the
model's own input) in eval mode without gradients and returns the output of the submodule
``layer4`` flattened to ``[b, p]`` (float32, on the model's device). The layer is named as the
network's ``named_modules()`` names it (``"features.3"``, ``"layer4.1.conv2"``); a network that
genbound put behind its input normalization (:func:`genbound.models.with_normalization`) keeps
its own names; an unknown name lists what there is.

Features of a trained model depend on its training sample: a partition built on them is a
diagnostic only (spec/bounds.md §2).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genbound.errors import UserInputError
from genbound.torch_utils import model_device, model_mode

__all__ = ["LayerFeatures", "resolve_layer"]


def _network(model: nn.Module) -> nn.Module:
    """The user's network inside ``with_normalization``'s ``Sequential(Normalize, network)``."""
    if (isinstance(model, nn.Sequential) and len(model) == 2
            and getattr(model[0], "genbound_normalize", False)):
        return model[1]
    return model


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule of ``model``'s network named ``layer``; a one-line error naming the choices otherwise."""
    net = _network(model)
    names = [n for n, _ in net.named_modules() if n]
    if not isinstance(layer, str) or not layer:
        raise UserInputError(f"a feature layer must be a non-empty module name, got {layer!r}")
    if layer not in names:
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise UserInputError(f"the model has no layer {layer!r}; its layers are: {shown or '(none)'}")
    return net.get_submodule(layer)


class LayerFeatures:
    """Callable ``x -> [b, p]``: the flattened output of one named layer of ``model``."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.model, self.layer = model, layer
        self.module = resolve_layer(model, layer)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise UserInputError(f"layer {self.layer!r} returns a {type(output).__name__}, not a tensor; "
                                     "name a layer whose output is one tensor")
            captured.append(output)

        handle = self.module.register_forward_hook(hook)
        try:
            with model_mode(self.model, what="feature extraction"):
                self.model(x.to(model_device(self.model)))
        finally:
            handle.remove()
        if len(captured) != 1:
            raise UserInputError(f"layer {self.layer!r} ran {len(captured)} times in one forward pass; "
                                 "name a layer that runs exactly once")
        out = captured[0]
        return out.reshape(out.shape[0], -1).float()
