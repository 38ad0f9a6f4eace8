"""Plain PGD for the frozen adversarial examples of the curvature estimators.

Projected gradient ascent on the cross-entropy against the **true** label (the training-style
adversarial loss of spec wci.md §1; Madry et al. 2018):

- ``norm="linf"``: ``delta <- clip_eps(delta + alpha * sign(grad))``, random start uniform in the
  ball;
- ``norm="l2"``: ``delta <- proj_eps(delta + alpha * grad / ||grad||_2)``, random start uniform
  in direction with radius ``eps * U(0, 1)``;

and ``x + delta`` clipped to ``[lo, hi]`` (default ``[0, 1]``) after every step. The model runs in
eval mode (its mode is restored afterwards); the returned examples are detached: nothing
downstream differentiates through the attack. A later merge may swap this for the stability
module's engine.
"""

from __future__ import annotations

import torch
from torch import nn

from genbound.attacks import ascent_step, default_step_size, project_delta
from genbound.curvature._common import make_generator, model_dtype, stable_cross_entropy
from genbound.errors import UserInputError
from genbound.torch_utils import model_mode, resolve_device

NORMS = ("linf", "l2")


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    clip: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 256,
    seed: int | None = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Adversarial examples ``x_adv`` (same shape, device and dtype as the model's inputs).

    ``step_size`` defaults to :func:`genbound.attacks.default_step_size` (``2.5 eps / steps``). ``eps = 0`` returns ``x`` unchanged.
    """
    if norm not in NORMS:
        raise UserInputError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if eps < 0:
        raise UserInputError(f"eps must be non-negative, got {eps}")
    if int(steps) < 0:
        raise UserInputError(f"steps must be non-negative, got {steps}")
    dev = resolve_device(device, model)
    alpha = default_step_size(eps, steps) if step_size is None else float(step_size)
    gen = make_generator(seed, dev)
    x = x.to(device=dev, dtype=model_dtype(model))
    y = y.to(device=dev, dtype=torch.long)
    if eps == 0 or (steps == 0 and not random_start):
        return x.detach().clone()
    out = []
    with model_mode(model, grad=False, warn=False):  # input gradients only; flags restored after
        for i in range(0, x.shape[0], batch_size):
            out.append(_pgd_batch(model, x[i : i + batch_size], y[i : i + batch_size], eps, norm, int(steps), alpha, random_start, clip, gen))
    return torch.cat(out)


def _pgd_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str,
    steps: int,
    alpha: float,
    random_start: bool,
    clip: tuple[float, float] | None,
    gen: torch.Generator,
) -> torch.Tensor:
    def project(d: torch.Tensor) -> torch.Tensor:
        return project_delta(d, x, eps, norm, clip)

    if random_start:
        if norm == "linf":
            d = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps
        else:
            d = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
            r = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype)
            d = d * (eps * r).view(-1, *[1] * (x.ndim - 1))
        d = project(d)
    else:
        d = torch.zeros_like(x)
    for _ in range(steps):
        d.requires_grad_(True)
        # float64 loss: at a saturated softmax float32's p_y - 1 rounds to 0 and the gradient
        # loses its -grad z_y part, which points the step the wrong way
        loss = stable_cross_entropy(model(x + d), y)
        (g,) = torch.autograd.grad(loss, d)
        with torch.no_grad():
            d = project(d + ascent_step(g, alpha, norm))
    return (x + d).detach()
