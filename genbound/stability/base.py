"""Common pieces of the stability engines: the result type, ball samplers, model-evaluation counts.

"x is kappa-stable" := argmax f(x') == argmax f(x) for every x' in the kappa-ball around x, with
x' in [0, 1] pixel units *before* normalization (spec/bounds.md §7). The engines here search for
a counterexample; finding none is evidence, not proof, so every result says ``sound=False``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from genbound.errors import UserInputError

UNITS = "[0,1] pixel units, before normalization"


@dataclass
class StabilityResult:
    """Output of a stability engine.

    ``stable``: bool[n, J], sample i showed no flip in the kappa_j-neighbourhood (spec §1
    ``train_stable``); ``kappas``: float64[J], ascending; ``pred``: int64[n] clean predictions;
    ``evidence``: method, ``sound`` (False here), every parameter, seeds and model-evaluation counts.
    """

    stable: np.ndarray
    kappas: np.ndarray
    pred: np.ndarray
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def sound(self) -> bool:
        return bool(self.evidence.get("sound", False))

    @property
    def unstable_fraction(self) -> np.ndarray:
        """float64[J]: fraction of samples with a flip found at each kappa."""
        return 1.0 - self.stable.mean(axis=0) if self.stable.size else np.zeros(self.kappas.size)


class EvalCounter:
    """Counts model evaluations in samples: one forward (backward) pass of one input = 1."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    def as_dict(self) -> dict[str, int]:
        return {"forward": int(self.forward), "backward": int(self.backward),
                "total": int(self.forward + self.backward)}


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter for the block (input gradients only, so the
    backward pass skips weight gradients), then restore each flag."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def sample_ball(kind: str, kappa: float, count: int, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """``count`` perturbations of one sample, float32 ``[count, *shape]``, drawn from ``g`` (CPU):

    - ``linf``: uniform in the l_inf ball, ``kappa * (2U - 1)`` per coordinate, U ~ Uniform[0, 1);
    - ``l2``: uniform in the l_2 ball of radius kappa, ``kappa * V^(1/d) * G / ||G||_2`` with
      G ~ N(0, I_d), V ~ Uniform[0, 1) (direction uniform on the sphere, radius law r^d);
    - ``gaussian``: ``kappa * G``, G ~ N(0, I_d) (kappa is the standard deviation).
    """
    d = int(np.prod(shape))
    if kind == "linf":
        out = (torch.rand(count, d, generator=g) * 2.0 - 1.0) * kappa
    elif kind == "l2":
        gauss = torch.randn(count, d, generator=g)
        radius = kappa * torch.rand(count, 1, generator=g).pow(1.0 / d)
        out = gauss * (radius / gauss.norm(dim=1, keepdim=True).clamp_min(1e-30))
    elif kind == "gaussian":
        out = torch.randn(count, d, generator=g) * kappa
    else:
        raise UserInputError(f"noise kind must be 'linf', 'l2' or 'gaussian'; got {kind!r}")
    return out.reshape(count, *shape)
