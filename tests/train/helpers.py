"""Tiny data and models for the training tests (fast on one CPU thread)."""

from __future__ import annotations

import torch
from torch import nn

from genbound.train import TrackConfig, TrainConfig


def toy_data(n: int = 160, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g)
    y = (x.flatten(1)[:, :18].mean(1) > x.flatten(1)[:, 18:].mean(1)).long() + 2 * (x[:, 0, 0, 0] > 0.5).long()
    return x, y


def toy_model(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(36, 24), nn.ReLU(), nn.Linear(24, 4))


def toy_config(method: str = "pgd", epochs: int = 4, schedule: dict | None = None, **kw) -> TrainConfig:
    return TrainConfig(
        method=method, eps=0.05, attack_steps=3, epochs=epochs, batch_size=40, lr=0.05,
        schedule=schedule or {"name": "piecewise", "milestones": [2], "factor": 0.1},
        track=TrackConfig(eval_train_size=80, eval_test_size=80, wci_subset=48, wci_probes=2, expensive_every=2,
                          dense_after_decay=1, top_eig_iters=5, trace_c_subset=24, batch_size=100),
        **kw,
    )
