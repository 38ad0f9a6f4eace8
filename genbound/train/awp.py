"""Adversarial weight perturbation (AWP; Wu, Xia & Wang 2020, "Adversarial Weight Perturbation
Helps Robust Generalization").

Per layer ``k`` (every parameter tensor with ndim >= 2, as the authors' ``diff_in_weights`` skips
1-D tensors), with ``g_k`` the gradient of the adversarial loss at the current weights:

    v_k = gamma * ||W_k||_F * g_k / ||g_k||_F          (ascent direction, relative size gamma)

The training step is taken at ``W + v`` (the gradient of the adversarial loss there), then the
weights are **restored** to ``W`` exactly (copied back, not subtracted) before the optimizer step.
The authors find ``v`` by one SGD ascent step on a proxy copy and rescale it layer-wise to the same
relative size; from a fresh proxy (no momentum) that step is parallel to ``g_k``, so the direction
is the same up to the proxy's weight decay, which we do not apply. ``gamma = 5e-3`` is their
CIFAR-10 value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from genbound.errors import UserInputError


class AWP:
    """Perturb-then-restore helper: ``perturb(loss_fn)`` then ``restore()``.

    ``loss_fn()`` must return the adversarial loss of the model (on already-generated adversarial
    examples). ``last_relative_sizes`` holds ``||v_k|| / ||W_k||`` of the last perturbation.
    """

    def __init__(self, model: nn.Module, gamma: float = 5e-3) -> None:
        if not gamma >= 0:
            raise UserInputError(f"AWP gamma must be non-negative, got {gamma}")
        self.model = model
        self.gamma = float(gamma)
        self.params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
        if not self.params:
            raise UserInputError("AWP needs at least one parameter tensor with ndim >= 2")
        self._saved: list[torch.Tensor] | None = None
        self.last_relative_sizes: dict[str, float] = {}

    def perturb(self, loss_fn: Callable[[], torch.Tensor]) -> None:
        """Move every layer by ``gamma ||W_k|| g_k / ||g_k||`` (gradient of ``loss_fn()`` at W)."""
        if self._saved is not None:
            raise RuntimeError("AWP.perturb called twice without restore()")
        tensors = [p for _, p in self.params]
        loss = loss_fn()
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        self._saved = [p.detach().clone() for p in tensors]
        sizes: dict[str, float] = {}
        with torch.no_grad():
            for (name, p), g in zip(self.params, grads):
                if g is None:
                    sizes[name] = 0.0
                    continue
                gn = g.norm()
                if gn == 0:
                    sizes[name] = 0.0
                    continue
                v = self.gamma * p.norm() * g / gn
                p.add_(v)
                sizes[name] = float(v.norm() / self._saved[len(sizes)].norm().clamp_min(1e-30))
        self.last_relative_sizes = sizes

    def restore(self) -> None:
        """Copy the saved weights back (exact restore)."""
        if self._saved is None:
            return
        with torch.no_grad():
            for (_, p), w in zip(self.params, self._saved):
                p.copy_(w)
        self._saved = None
