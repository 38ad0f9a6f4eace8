"""One streaming pass of a model over a dataset: predictions, 0-1 losses, optional logits.

The pass runs in eval mode under :func:`genbound.torch_utils.model_mode`, which restores the model's previous
train/eval state afterwards. A model handed over in train mode triggers a warning (BatchNorm
statistics and dropout in train mode give wrong numbers; a classic mistake, see foolbox #74,
ART #484), but is not silently and permanently switched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from genbound.data.source import DEFAULT_BATCH_SIZE, DataSource
from genbound.models.validate import check_logits
from genbound.torch_utils import model_mode, progress, resolve_device


@dataclass
class Collected:
    """Per-sample outputs of :func:`collect` (arrays in dataset order).

    ``pred`` int64[n] (argmax of the logits, ties to the lowest class), ``loss`` uint8[n]
    (1 = misclassified top-1; spec/bounds.md §1), ``labels`` int64[n], ``logits`` float32[n, C] or None.
    """

    pred: np.ndarray
    loss: np.ndarray
    labels: np.ndarray
    logits: np.ndarray | None = None

    @property
    def error(self) -> float:
        """Mean 0-1 loss."""
        return float(self.loss.mean()) if self.loss.size else float("nan")


@torch.no_grad()
def collect(model: nn.Module, source: DataSource, *, batch_size: int = DEFAULT_BATCH_SIZE,
            device: str | torch.device | None = None, return_logits: bool = False,
            progress_bar: bool = True) -> Collected:
    """Predictions and 0-1 losses of ``model`` on every sample of ``source`` (one streaming pass)."""
    dev = resolve_device(device, model)
    preds: list[np.ndarray] = []
    logit_parts: list[np.ndarray] = []
    with model_mode(model, what="collect"):
        for x, _ in progress(source.batches(batch_size), enabled=progress_bar, desc=f"collect {source.name}",
                             total=source.num_batches(batch_size), unit="batch"):
            out = model(x.to(dev))
            check_logits(out, source.num_classes)
            preds.append(out.argmax(1).cpu().numpy().astype(np.int64))
            if return_logits:
                logit_parts.append(out.float().cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    labels = source.labels.astype(np.int64)
    loss = (pred != labels).astype(np.uint8)
    logits = (np.concatenate(logit_parts) if logit_parts else np.zeros((0, 0), np.float32)) if return_logits else None
    return Collected(pred=pred, loss=loss, labels=labels, logits=logits)
