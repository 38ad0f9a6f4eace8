"""Small reference classifiers: MLP, small CNN, small ResNet.

All use ReLU and **average pooling only** (no max-pool), so interval/linear-relaxation verifiers
(IBP, CROWN) apply to them later; BatchNorm is optional and, in eval mode, an affine map. Each
factory function takes ``seed`` and initializes the weights under a forked RNG seeded with it,
so the same call gives the same weights and leaves the global RNG untouched. The factory strings
for :func:`genbound.models.load_model` are ``"mlp"``, ``"small_cnn"``, ``"small_resnet"`` (or
``"genbound.models.architectures:small_cnn"`` etc.).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from genbound.errors import UserInputError


def _seeded(build: Callable[[], nn.Module], seed: int | None) -> nn.Module:
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


class Residual(nn.Module):
    """``post(block(x) + shortcut(x))``; ``shortcut=None`` is the identity, ``post=None`` none.

    The residual protocol of the sound verifier (``genbound_residual = True`` with ``block``,
    ``shortcut``, ``post``; see ``genbound/stability/sound/__init__.py``).
    """

    genbound_residual = True

    def __init__(self, block: nn.Module, shortcut: nn.Module | None = None, post: nn.Module | None = None) -> None:
        super().__init__()
        self.block = block
        self.shortcut = shortcut
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x) + (x if self.shortcut is None else self.shortcut(x))
        return y if self.post is None else self.post(y)


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU] x len(hidden) -> Linear(num_classes)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        d = int(np.prod(input_shape))
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(d, int(h)), nn.ReLU()]
            d = int(h)
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    @property
    def genbound_layers(self) -> nn.Sequential:
        """What ``forward`` applies, in order (read by the sound verifier)."""
        return self.net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _bn(c: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if on else nn.Identity()


class SmallCNN(nn.Module):
    """conv3x3(w) [BN] ReLU AvgPool2 -> conv3x3(2w) [BN] ReLU AdaptiveAvgPool(pool) -> FC(hidden) ReLU -> FC."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, pool: int = 2,
                 hidden: int = 64, batchnorm: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), _bn(width, batchnorm), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), _bn(2 * width, batchnorm), nn.ReLU(),
            nn.AdaptiveAvgPool2d(pool),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * pool * pool, hidden), nn.ReLU(),
                                        nn.Linear(hidden, num_classes))

    @property
    def genbound_layers(self) -> list[nn.Module]:
        """What ``forward`` applies, in order (read by the sound verifier)."""
        return [self.features, self.classifier]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def basic_block(c_in: int, c_out: int, stride: int = 1, batchnorm: bool = False) -> Residual:
    """ResNet basic block: conv-[BN]-ReLU-conv-[BN] + shortcut, ReLU. Stride-2 blocks use a 1x1
    stride-2 conv shortcut (no pooling)."""
    block = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batchnorm), _bn(c_out, batchnorm),
                          nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batchnorm), _bn(c_out, batchnorm))
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not batchnorm), _bn(c_out, batchnorm))
    return Residual(block, shortcut, post=nn.ReLU())


class SmallResNet(nn.Module):
    """Stem conv3x3(w) -> stages of BasicBlocks (widths w, 2w, 4w, ...; stride 2 between stages)
    -> global average pool -> FC."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, blocks: Sequence[int] = (1, 1, 1),
                 batchnorm: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=not batchnorm),
                                  _bn(width, batchnorm), nn.ReLU())
        layers: list[nn.Module] = []
        c = width
        for s, nb in enumerate(blocks):
            c_out = width * 2 ** s
            for b in range(int(nb)):
                layers.append(basic_block(c, c_out, stride=2 if (s > 0 and b == 0) else 1, batchnorm=batchnorm))
                c = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c, num_classes)

    @property
    def genbound_layers(self) -> list[nn.Module]:
        """What ``forward`` applies, in order (read by the sound verifier)."""
        return [self.stem, self.layers, self.pool, self.flatten, self.fc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


def _check_common(num_classes: int) -> None:
    if int(num_classes) < 2:
        raise UserInputError(f"num_classes must be >= 2; got {num_classes}")


def mlp(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, hidden: Sequence[int] = (256, 256),
        seed: int | None = 0) -> MLP:
    """An :class:`MLP` for inputs of ``input_shape``, weights initialized from ``seed``."""
    _check_common(num_classes)
    return _seeded(lambda: MLP(tuple(input_shape), int(num_classes), tuple(hidden)), seed)  # type: ignore[return-value]


def small_cnn(in_channels: int = 1, num_classes: int = 10, width: int = 16, pool: int = 2, hidden: int = 64,
              batchnorm: bool = False, seed: int | None = 0) -> SmallCNN:
    """A :class:`SmallCNN`, weights initialized from ``seed``."""
    _check_common(num_classes)
    return _seeded(lambda: SmallCNN(int(in_channels), int(num_classes), int(width), int(pool), int(hidden),
                                    bool(batchnorm)), seed)  # type: ignore[return-value]


def small_resnet(in_channels: int = 1, num_classes: int = 10, width: int = 16, blocks: Sequence[int] = (1, 1, 1),
                 batchnorm: bool = False, seed: int | None = 0) -> SmallResNet:
    """A :class:`SmallResNet`, weights initialized from ``seed``."""
    _check_common(num_classes)
    return _seeded(lambda: SmallResNet(int(in_channels), int(num_classes), int(width), tuple(blocks),
                                       bool(batchnorm)), seed)  # type: ignore[return-value]


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "small_cnn": small_cnn, "small_resnet": small_resnet}
