"""The tracker's curvature is that of the frozen adversarial examples with their own labels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genbound.curvature import exact, pgd
from genbound.torch_utils import derive_seed
from genbound.train import TrackConfig, Tracker
from tests.train.helpers import toy_data


def test_tracker_wci_pairs_examples_with_labels():
    # tanh: the per-layer Hessian depends on the labels, so a mispairing would show
    x, y = toy_data(60)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    x = x.double()
    cfg = TrackConfig(eval_train_size=40, eval_test_size=20, wci_subset=40, wci_estimator="exact",
                      expensive_every=0, dense_after_decay=0)
    tr = Tracker(cfg, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:], eps=0.05, norm="linf",
                 clip=(0.0, 1.0), seed=3, decay_epochs=[], epochs=5)
    rec = tr.measure(model, 0, 0.1)
    xa = pgd(model, tr.x_tr, tr.y_tr, eps=0.05, steps=cfg.eval_steps, step_size=0.05 / 4, batch_size=cfg.batch_size,
             seed=derive_seed(3, 12, 0))
    ref = exact(model, (xa, tr.y_tr))
    assert rec["trace_h"] == pytest.approx(ref.total, rel=1e-9)
    wrong = exact(model, (xa, tr.y_tr.roll(1)))
    assert abs(wrong.total - ref.total) > 1e-6 * abs(ref.total)
    assert rec["top_eig"] is None and rec["trace_c"] is None  # not an expensive epoch (expensive_every=0)
