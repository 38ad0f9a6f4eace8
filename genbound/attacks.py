"""Attack primitives shared by the stability engines (and available to curvature and training):
sampling a norm ball, the seeded random start of a sample, and one projected ascent step.

Radii are in [0, 1] pixel units before normalization; iterates are clipped to [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from genbound.errors import UserInputError
from genbound.torch_utils import float_key, generator

__all__ = ["ascent_step", "project_delta", "project_step", "random_start", "sample_ball"]


DEFAULT_REL_STEP = 2.5


def default_step_size(eps: float, steps: int, rel: float = DEFAULT_REL_STEP) -> float:
    """The one default PGD step: ``alpha = rel * eps / steps`` with ``rel = 2.5`` (Madry et al. 2018),
    so that ``steps`` steps can cross the ball 2.5 times; ``eps / 4`` at the usual 10 steps."""
    return float(rel) * float(eps) / max(int(steps), 1)


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


def random_start(norm: str, kappa: float, shape: tuple[int, ...], seed: int, indices: Sequence[int],
                 restart: int = 0) -> torch.Tensor:
    """One uniform point of the ``norm`` ball per sample, ``[len(indices), *shape]`` (CPU, float32).

    Sample ``i`` (its index in the data source) draws from a generator seeded with
    ``derive_seed(seed, i, float64 bits of kappa, restart)``: the start does not depend on the
    batch, the shard, or the other radii of a grid.
    """
    shape = tuple(shape)
    return torch.stack([sample_ball(norm, float(kappa), 1, shape, generator(seed, int(i), float_key(kappa), restart))[0]
                        for i in indices])


def ascent_step(grad: torch.Tensor, alpha: float, norm: str) -> torch.Tensor:
    """The step of steepest ascent of size ``alpha`` in ``norm``: ``alpha * sign(grad)`` (l_inf) or
    ``alpha * grad / ||grad||_2`` per sample (l_2; the norm floored at 1e-12)."""
    if norm == "linf":
        return alpha * grad.sign()
    gn = grad.reshape(grad.shape[0], -1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
    return alpha * grad / gn


def project_delta(d: torch.Tensor, x: torch.Tensor, eps: float, norm: str,
                  clip: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """A perturbation ``d`` of ``x`` projected onto the ``eps``-ball of ``norm`` (l_inf: clamp per
    coordinate; l_2: rescaled to norm <= eps) and then, with ``clip``, onto ``x + d`` in the clip
    range (which keeps it in the ball, ``x`` being in the range). The perturbation form of
    :func:`project_step`, used by the curvature and training attacks."""
    if norm == "linf":
        d = d.clamp(-eps, eps)
    else:
        n = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (d.ndim - 1))
        d = d * torch.clamp(eps / n, max=1.0)
    if clip is not None:
        d = (x + d).clamp(clip[0], clip[1]) - x
    return d


def project_step(x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, kappa: float, alpha: float,
                 norm: str) -> torch.Tensor:
    """One ascent step from ``x_adv`` projected back to the ``kappa``-ball around ``x`` and [0, 1]:

    - l_inf: ``clip_[0,1]( Proj_{||x'-x||_inf <= kappa}( x' + alpha * sign(grad) ) )``
    - l_2:   ``clip_[0,1]( Proj_{||x'-x||_2 <= kappa}( x' + alpha * grad / ||grad||_2 ) )``

    Clipping to the cube after the ball projection keeps the point in the ball (x is in the cube).
    """
    x_new = x_adv + ascent_step(grad, alpha, norm)
    if norm == "linf":
        x_new = torch.minimum(torch.maximum(x_new, x - kappa), x + kappa)
    else:
        delta = x_new - x
        dn = delta.reshape(delta.shape[0], -1).norm(dim=1).view(-1, *([1] * (grad.ndim - 1)))
        x_new = x + delta * torch.clamp(kappa / dn.clamp_min(1e-12), max=1.0)
    return x_new.clamp_(0.0, 1.0)
