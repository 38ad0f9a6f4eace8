"""Per-epoch tracking of adversarial training (spec wci.md §1 and §3).

:class:`Tracker` measures, in eval mode, on **fixed** subsets of the training and test sets and with
the **same** attack (PGD on the true label, fixed random-start seed across epochs):

- ``train_rob_acc``, ``test_rob_acc``, ``train_rob_loss``, ``test_rob_loss`` (mean cross-entropy on
  the adversarial examples), ``clean_train_acc``, ``clean_test_acc``;
- ``gap_acc = train_rob_acc - test_rob_acc`` and ``gap_loss = test_rob_loss - train_rob_loss``;
- every epoch: WCI (:func:`genbound.curvature.wci`, Hutchinson with few probes and the same probe
  seed every epoch, on the frozen adversarial examples of the first ``wci_subset`` examples of the
  train subset), its per-layer terms, ``weight_norm_sq = sum_k ||W_k||_F^2``, ``trace_h = sum_k Tr H_k``;
- on the epochs chosen by :meth:`Tracker.expensive_epoch` (every ``expensive_every`` epochs, the
  epoch before each planned decay, ``dense_after_decay`` epochs after it, and the last epoch):
  ``top_eig`` (largest Hessian eigenvalue over the WCI layers jointly, power iteration) and
  ``trace_c`` (trace of the per-example gradient covariance over the WCI layers); ``null`` elsewhere.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genbound.attacks import default_step_size
from genbound.curvature import gradient_noise_trace, pgd, top_eigenvalues, wci
from genbound.torch_utils import derive_seed

RECORD_FIELDS = ("epoch", "lr", "train_rob_acc", "test_rob_acc", "train_rob_loss", "test_rob_loss",
                 "clean_train_acc", "clean_test_acc", "gap_acc", "gap_loss", "wci", "weight_norm_sq",
                 "trace_h", "top_eig", "trace_c", "layers")


@dataclass
class TrackConfig:
    """What the tracker measures and how often (see module docstring)."""

    eval_train_size: int = 500
    eval_test_size: int = 1000
    eval_steps: int = 10
    eval_step_size: float | None = None
    wci_subset: int = 256
    wci_probes: int = 4
    wci_estimator: str = "hutchinson"
    expensive_every: int = 5
    dense_after_decay: int = 3
    top_eig_iters: int = 20
    top_eig_tol: float = 1e-3
    trace_c_subset: int = 128
    batch_size: int = 500


def _frozen(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Identity "attack": the inputs handed over are already the frozen adversarial examples."""
    return x


@torch.no_grad()
def _acc_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    correct, loss = 0, 0.0
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i : i + batch_size])
        correct += int((out.argmax(1) == y[i : i + batch_size]).sum())
        loss += float(F.cross_entropy(out, y[i : i + batch_size], reduction="sum"))
    return correct / x.shape[0], loss / x.shape[0]


class Tracker:
    """Measures the per-epoch record of spec wci.md §1 on fixed train/test subsets."""

    def __init__(self, config: TrackConfig, *, x_train: torch.Tensor, y_train: torch.Tensor,
                 x_test: torch.Tensor, y_test: torch.Tensor, eps: float, norm: str,
                 clip: tuple[float, float] | None, seed: int, decay_epochs: list[int], epochs: int,
                 x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None) -> None:
        self.cfg = config
        self.eps, self.norm, self.clip, self.seed = float(eps), norm, clip, int(seed)
        g = torch.Generator().manual_seed(derive_seed(seed, 11))
        itr = torch.randperm(x_train.shape[0], generator=g)[: config.eval_train_size]
        ite = torch.randperm(x_test.shape[0], generator=g)[: config.eval_test_size]
        self.x_tr, self.y_tr = x_train[itr], y_train[itr]
        self.x_te, self.y_te = x_test[ite], y_test[ite]
        self.x_val, self.y_val = x_val, y_val
        self.decay_epochs = list(decay_epochs)
        self.epochs = int(epochs)
        self.step_size = config.eval_step_size if config.eval_step_size is not None else default_step_size(self.eps, config.eval_steps)
        self.protocol = {
            "attack": f"pgd {norm} eps={eps} steps={config.eval_steps} step={self.step_size} random start, eval mode, true labels",
            "attack_seed": "fixed across epochs",
            "eval_train_size": int(self.x_tr.shape[0]), "eval_test_size": int(self.x_te.shape[0]),
            "val_size": None if x_val is None else int(x_val.shape[0]),
            "wci": f"{config.wci_estimator}, {config.wci_probes} probes per layer (hutchinson), same probe seed every epoch, first "
                   f"{min(config.wci_subset, self.x_tr.shape[0])} examples of the train subset",
            "top_eig": f"power iteration (max {config.top_eig_iters} iters, tol {config.top_eig_tol}) over the WCI layers jointly",
            "trace_c": f"per-example gradient covariance over the WCI layers, first {config.trace_c_subset} examples of the WCI subset",
            "expensive_every": config.expensive_every, "dense_after_decay": config.dense_after_decay,
        }

    def expensive_epoch(self, epoch: int) -> bool:
        """Whether ``top_eig`` and ``trace_c`` are measured after ``epoch``."""
        c = self.cfg
        if epoch == self.epochs - 1 or (c.expensive_every > 0 and epoch % c.expensive_every == 0):
            return True
        return any(d - 1 <= epoch < d + c.dense_after_decay for d in self.decay_epochs)

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, tag: int) -> torch.Tensor:
        return pgd(model, x, y, eps=self.eps, norm=self.norm, steps=self.cfg.eval_steps, step_size=self.step_size,
                   clip=self.clip, batch_size=self.cfg.batch_size, seed=derive_seed(self.seed, 12, tag))

    def measure(self, model: nn.Module, epoch: int, lr: float) -> dict[str, Any]:
        """The record of ``epoch`` (model left in eval mode)."""
        t0 = time.perf_counter()
        model.eval()
        bs = self.cfg.batch_size
        xa_tr = self._attack(model, self.x_tr, self.y_tr, 0)
        xa_te = self._attack(model, self.x_te, self.y_te, 1)
        tr_acc, tr_loss = _acc_loss(model, xa_tr, self.y_tr, bs)
        te_acc, te_loss = _acc_loss(model, xa_te, self.y_te, bs)
        ctr_acc, _ = _acc_loss(model, self.x_tr, self.y_tr, bs)
        cte_acc, _ = _acc_loss(model, self.x_te, self.y_te, bs)
        rec: dict[str, Any] = {
            "epoch": int(epoch), "lr": float(lr),
            "train_rob_acc": tr_acc, "test_rob_acc": te_acc, "train_rob_loss": tr_loss, "test_rob_loss": te_loss,
            "clean_train_acc": ctr_acc, "clean_test_acc": cte_acc,
            "gap_acc": tr_acc - te_acc, "gap_loss": te_loss - tr_loss,
        }
        if self.x_val is not None:
            xa_val = self._attack(model, self.x_val, self.y_val, 2)
            rec["val_rob_acc"], rec["val_rob_loss"] = _acc_loss(model, xa_val, self.y_val, bs)
        m = min(self.cfg.wci_subset, self.x_tr.shape[0])
        ys, xas = self.y_tr[:m], xa_tr[:m]
        # wci() draws its subset by a seeded permutation and hands the permuted inputs to ``attack``:
        # give it the frozen adversarial examples themselves and an identity attack, so inputs and
        # labels stay paired whatever order it uses.
        res = wci(model, (xas, ys), eps=self.eps, norm=self.norm, subset_size=None, seed=derive_seed(self.seed, 13),
                  n_probes=self.cfg.wci_probes, rel_se=None, estimator=self.cfg.wci_estimator, attack=_frozen, batch_size=bs, clip=self.clip, n_train=m)
        rec["wci"] = res.wci
        rec["wci_se"] = res.wci_se
        rec["weight_norm_sq"] = res.weight_norm_sq
        rec["trace_h"] = res.trace_h
        rec["top_eig"] = None
        rec["trace_c"] = None
        if self.expensive_epoch(epoch):
            eig = top_eigenvalues(model, (xas, ys), k=1, max_iter=self.cfg.top_eig_iters, tol=self.cfg.top_eig_tol,
                                  batch_size=bs, seed=derive_seed(self.seed, 14))
            rec["top_eig"] = eig.eigenvalues[0]
            k = min(self.cfg.trace_c_subset, m)
            rec["trace_c"] = gradient_noise_trace(model, (xas[:k], ys[:k]), batch_size=bs).total
        rec["layers"] = [{"name": lt.name, "fro_norm": lt.fro_norm, "trace_h": lt.trace_h,
                          "trace_h_se": lt.trace_h_se, "wci_term": lt.wci_term} for lt in res.layers]
        rec["measure_s"] = time.perf_counter() - t0
        for key, v in rec.items():
            if isinstance(v, float) and not math.isfinite(v):
                rec[key] = None
        return rec
