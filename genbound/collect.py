"""One streaming pass of a model over a dataset: predictions, 0-1 losses, optional logits, and
whatever else needs every sample, computed from the same batches.

``consumers`` are per-batch accumulators (``update(x, y)`` on each batch, ``compute()`` -> a
per-sample array at the end; e.g. a partition's :meth:`assigner`, which gives cell ids): a run
reads each dataset once for the predictions and the cells of every partition, instead of once
per partition. ``indices`` restricts the pass to a shard of global sample positions; every
per-sample array is then aligned with ``Collected.index``. Batches are decoded by
:func:`genbound.data.loader.stream` (``workers`` processes; pinned memory and non-blocking copies
on CUDA).

The pass runs in eval mode under :func:`genbound.torch_utils.model_mode`, which restores the model's previous
train/eval state afterwards. A model handed over in train mode triggers a warning (BatchNorm
statistics and dropout in train mode give wrong numbers; a classic mistake, see foolbox #74,
ART #484), but is not silently and permanently switched.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from genbound.data.loader import stream
from genbound.data.source import DEFAULT_BATCH_SIZE, DataSource
from genbound.models.validate import check_logits
from genbound.torch_utils import model_mode, progress, resolve_device


@dataclass
class Collected:
    """Per-sample outputs of :func:`collect` (arrays in dataset order).

    ``pred`` int64[n] (argmax of the logits, ties to the lowest class), ``loss`` uint8[n]
    (1 = misclassified top-1; spec/bounds.md §1), ``labels`` int64[n], ``logits`` float32[n, C] or None;
    ``index`` int64[n]: the global sample positions the arrays belong to (``arange`` for a whole
    source); ``extra``: each consumer's array; ``seconds``: wall time in the forward pass (decoding
    included) and in the consumers.
    """

    pred: np.ndarray
    loss: np.ndarray
    labels: np.ndarray
    logits: np.ndarray | None = None
    index: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def error(self) -> float:
        """Mean 0-1 loss."""
        return float(self.loss.mean()) if self.loss.size else float("nan")


@torch.no_grad()
def collect(model: nn.Module | None, source: DataSource, *, batch_size: int = DEFAULT_BATCH_SIZE,
            device: str | torch.device | None = None, return_logits: bool = False,
            progress_bar: bool = True, consumers: Mapping[str, Any] | None = None,
            indices: np.ndarray | None = None, workers: int | str = 0) -> Collected:
    """Predictions and 0-1 losses of ``model`` on every sample of ``source`` (or at ``indices``),
    and each consumer's per-sample array, in one streaming pass. ``model=None``: consumers only
    (``pred`` and ``loss`` are then empty)."""
    dev = resolve_device(device, model)
    consumers = dict(consumers or {})
    index = np.arange(len(source), dtype=np.int64) if indices is None else np.asarray(indices, np.int64).reshape(-1)
    preds: list[np.ndarray] = []
    logit_parts: list[np.ndarray] = []
    t_fwd = t_con = 0.0
    cuda = dev.type == "cuda"
    batches = stream(source, batch_size=batch_size, indices=index, workers=workers, pin_memory=cuda)
    nb = -(-index.size // batch_size)
    with (model_mode(model, what="collect") if model is not None else contextlib.nullcontext()):
        t = time.perf_counter()
        for _, x, y in progress(batches, enabled=progress_bar, desc=f"pass over {source.name}", total=nb, unit="batch"):
            xd = x.to(dev, non_blocking=cuda)
            if model is not None:
                out = model(xd)
                check_logits(out, source.num_classes)
                preds.append(out.argmax(1).cpu().numpy().astype(np.int64))
                if return_logits:
                    logit_parts.append(out.float().cpu().numpy())
            t1 = time.perf_counter()
            t_fwd += t1 - t
            for c in consumers.values():
                c.update(xd, y)
            t = time.perf_counter()
            t_con += t - t1
    t1 = time.perf_counter()
    extra = {name: c.compute() for name, c in consumers.items()}
    t_con += time.perf_counter() - t1
    labels = source.labels[index].astype(np.int64)
    if model is None:
        pred, loss = np.zeros(0, np.int64), np.zeros(0, np.uint8)
    else:
        pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
        loss = (pred != labels).astype(np.uint8)
    logits = (np.concatenate(logit_parts) if logit_parts else np.zeros((0, 0), np.float32)) if return_logits else None
    return Collected(pred=pred, loss=loss, labels=labels, logits=logits, index=index, extra=extra,
                     seconds={"forward": t_fwd, "consumers": t_con})
