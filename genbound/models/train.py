"""A simple, seeded trainer for the reference models (cross-entropy, SGD or Adam).

Not a training framework: enough to produce models for examples, tests and memorization checks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from genbound.data.source import DataSource, randomize_labels
from genbound.errors import UserInputError
from genbound.torch_utils import array_hash, progress, resolve_device


def train_classifier(model: nn.Module, source: DataSource, *, epochs: int = 5, lr: float = 1e-3,
                     optimizer: str = "adam", momentum: float = 0.9, weight_decay: float = 0.0,
                     batch_size: int = 128, seed: int = 0, random_label_fraction: float = 0.0,
                     label_seed: int | None = None, device: str | torch.device | None = None,
                     progress_bar: bool = True) -> nn.Module:
    """Train ``model`` on ``source`` with cross-entropy; returns the model (in eval mode, on ``device``).

    Each epoch visits every sample once in a seeded random order (``numpy.random.default_rng(seed)``);
    no augmentation. ``optimizer`` is ``"adam"`` (``torch.optim.Adam``) or ``"sgd"`` (with
    ``momentum``); ``weight_decay`` is passed to the optimizer (L2 penalty coefficient).

    Memorization: ``random_label_fraction = f > 0`` trains on
    ``randomize_labels(source, f, seed=label_seed if given else seed)`` (see
    :func:`genbound.data.randomize_labels`); call that function with the same arguments to get
    the labels the model was trained on, which are the labels its training loss must use.

    The run is recorded in ``model.genbound_training`` (a dict: every argument, seeds, the hash of
    the labels used, final-epoch mean loss and training accuracy, wall time).
    """
    if epochs < 0 or batch_size < 1 or lr <= 0 or weight_decay < 0:
        raise UserInputError("need epochs >= 0, batch_size >= 1, lr > 0, weight_decay >= 0")
    if len(source) == 0:
        raise UserInputError("cannot train on an empty dataset")
    dev = resolve_device(device)
    record: dict[str, Any] = {"epochs": epochs, "lr": lr, "optimizer": optimizer, "momentum": momentum,
                              "weight_decay": weight_decay, "batch_size": batch_size, "seed": seed,
                              "source": source.name, "n": len(source), "device": str(dev)}
    if random_label_fraction > 0:
        lseed = seed if label_seed is None else label_seed
        source, rl = randomize_labels(source, random_label_fraction, seed=lseed)
        record["random_labels"] = {k: v for k, v in rl.items() if k != "changed_indices"}
    record["labels_hash"] = array_hash(source.labels)
    model = model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        raise UserInputError(f"optimizer must be 'adam' or 'sgd'; got {optimizer!r}")
    rng = np.random.default_rng(seed)
    n = len(source)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    mean_loss, acc = float("nan"), float("nan")
    with torch.random.fork_rng(devices=[dev.index if dev.index is not None else torch.cuda.current_device()]
                               if dev.type == "cuda" else []):
        torch.manual_seed(seed)  # dropout or other stochastic layers, if the model has any
        model.train()
        for epoch in range(epochs):
            order = rng.permutation(n)
            tot_loss, correct = 0.0, 0
            bar = progress(range(0, n, batch_size), enabled=progress_bar, desc=f"train epoch {epoch + 1}/{epochs}",
                           total=-(-n // batch_size), unit="batch")
            for start in bar:
                x, y = source.get(order[start:start + batch_size])
                x, y = x.to(dev), y.to(dev)
                logits = model(x)
                loss = loss_fn(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot_loss += float(loss.detach()) * y.numel()
                correct += int((logits.detach().argmax(1) == y).sum())
            mean_loss, acc = tot_loss / n, correct / n
    model.eval()
    record.update({"final_epoch_loss": mean_loss, "final_epoch_train_accuracy": acc,
                   "wall_s": round(time.perf_counter() - t0, 3)})
    model.genbound_training = record  # type: ignore[assignment]
    return model
