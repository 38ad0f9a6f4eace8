"""TRADES (Zhang et al. 2019, "Theoretically Principled Trade-off between Robustness and Accuracy").

    L(x, y) = CE(f(x), y) + beta * KL( p(x) || p(x') ),   x' = argmax_{||x' - x|| <= eps} KL( p(x) || p(x') )

with ``p = softmax(f)``; the inner maximization is PGD on the KL started at ``x + 0.001 * N(0, I)``
(the authors' code), in eval mode, with ``p(x)`` held fixed; the KL is the batch mean of the
per-example KL (the authors use ``KLDivLoss(reduction="sum") / batch_size``, the same value).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genbound.attacks import ascent_step, default_step_size, project_delta
from genbound.errors import UserInputError
from genbound.torch_utils import model_mode


def kl_div(logits_nat: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """Batch mean of ``KL(softmax(logits_nat) || softmax(logits_adv))``."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), F.log_softmax(logits_nat, dim=1), reduction="batchmean",
                    log_target=True)


def trades_attack(model: nn.Module, x: torch.Tensor, *, eps: float, norm: str = "linf", steps: int = 10,
                  step_size: float | None = None, clip: tuple[float, float] | None = (0.0, 1.0),
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The TRADES inner maximizer: PGD ascent on ``KL(p(x) || p(x'))`` (eval mode; detached result)."""
    if norm not in ("linf", "l2"):
        raise UserInputError(f"norm must be 'linf' or 'l2', got {norm!r}")
    alpha = default_step_size(eps, steps) if step_size is None else float(step_size)
    with model_mode(model, grad=False, warn=False):
        with torch.no_grad():
            p_nat = model(x).detach()
        d = 0.001 * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        for _ in range(int(steps)):
            d.requires_grad_(True)
            loss = kl_div(p_nat, model(x + d))
            (g,) = torch.autograd.grad(loss, d)
            with torch.no_grad():
                d = project_delta(d + ascent_step(g, alpha, norm), x, eps, norm, clip)
    return (x + d).detach()


def trades_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, beta: float = 6.0) -> torch.Tensor:
    """``CE(f(x), y) + beta * KL(p(x) || p(x_adv))`` in the model's current mode (train mode when training)."""
    logits = model(x)
    return F.cross_entropy(logits, y) + float(beta) * kl_div(logits, model(x_adv))
