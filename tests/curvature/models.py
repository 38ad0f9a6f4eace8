"""Tiny float64 models for the curvature tests."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_net(seed: int = 0, n_classes: int = 4) -> nn.Module:
    """Conv -> eval-mode BatchNorm -> ReLU -> avg-pool -> Linear, on (1, 6, 6) inputs."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(27, n_classes),
    ).double()
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        bn = net[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return net.eval()


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.conv2(self.relu(self.bn1(self.conv1(x)))))


class ResNetTiny(nn.Module):
    """Stem conv, one residual block, max-pool, Linear, on (1, 6, 6) inputs."""

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.block = ResBlock(2)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(18, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


def resnet_tiny(seed: int = 1, n_classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    net = ResNetTiny(n_classes).double()
    with torch.no_grad():
        bn = net.block.bn1
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return net.eval()


def gelu_net(seed: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.GELU(), nn.Linear(8, 4)).double().eval()


def toy_data(n: int = 24, seed: int = 0, n_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return x, y


def digits_net() -> nn.Module:
    """Factory for the CLI tests: (1, 8, 8) inputs, 10 classes."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).eval()
