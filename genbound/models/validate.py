"""Checks that a model fits the data it is judged on, before any long work starts.

A model built for another input shape, with a different number of outputs than the data has
classes, or with NaN/inf weights would otherwise fail deep inside an attack with a traceback, or
worse, run to the end and report a wrong number (a 0-1 loss against labels the model cannot
predict, argmax over NaN logits). Each of these is the user's to fix, so each is a
:class:`UserInputError` naming the model and what to change.
"""

from __future__ import annotations

import torch
from torch import nn

from genbound.errors import UserInputError, first_line
from genbound.torch_utils import model_mode

def check_finite_weights(model: nn.Module, what: str = "model") -> None:
    """Every parameter and floating-point buffer of ``model`` is finite."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UserInputError(f"{what}: {name} holds NaN or inf values; retrain or reload the weights")


def check_logits(out: object, num_classes: int, what: str = "model") -> None:
    """``out`` is a finite float tensor of shape (batch, num_classes)."""
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserInputError(f"{what} returned {shape} for a batch; a classifier must return logits of shape "
                             "(batch, classes)")
    if out.shape[1] != num_classes:
        raise UserInputError(f"{what} has {out.shape[1]} outputs but the data have {num_classes} classes; build the "
                             "model for the data's classes, or declare the model's class list for an image folder "
                             "([data] classes: imagenet, cifar10, a labels file or a list)")
    if not bool(torch.isfinite(out).all()):
        raise UserInputError(f"{what} returned NaN or inf logits; check its weights and inputs")


@torch.no_grad()
def check_model(model: nn.Module, x: torch.Tensor, num_classes: int, *, what: str = "model") -> None:
    """One forward pass of ``model`` on the batch ``x`` (a few samples, on the model's device):
    finite weights, no error, logits of shape (batch, num_classes), finite. The model's train/eval
    flags are left as they were (the pass runs in eval mode)."""
    check_finite_weights(model, what)
    with model_mode(model, warn=False):
        try:
            out = model(x)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # the user's model fails on the data's inputs: a shape or dtype mismatch
            raise UserInputError(f"{what} fails on inputs of shape {tuple(x.shape[1:])} from the data "
                                 f"({type(exc).__name__}: {first_line(exc)}); build it for that input shape") from None
    check_logits(out, num_classes, what)
