"""The model takes [0, 1] pixels: per-channel normalization is the model's first layer.

With normalization inside the model, attacks and noise act in pixel space and a radius kappa is
in [0, 1] pixel units; per channel c that is kappa / std_c in normalized units (spec §7).
"""

from __future__ import annotations

import torch
from torch import nn

from genbound.data.source import Normalization


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (dim 1); a single value broadcasts to every channel.

    For flat inputs ``(N, d)`` only a single mean/std is allowed (applied to every feature).
    ``genbound_normalize = True`` lets the sound verifier fold it into an affine map (its forward
    pass is checked numerically there).
    """

    genbound_normalize = True

    def __init__(self, mean: tuple[float, ...] | Normalization = (0.0,), std: tuple[float, ...] = (1.0,)) -> None:
        super().__init__()
        norm = mean if isinstance(mean, Normalization) else Normalization(tuple(mean), tuple(std))
        self.register_buffer("mean", torch.tensor(norm.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(norm.std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim >= 2 else (-1,)
        if self.mean.numel() == 1 and self.std.numel() == 1:
            return (x - self.mean) / self.std
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


def with_normalization(model: nn.Module, normalization: Normalization | None) -> nn.Module:
    """``nn.Sequential(Normalize(normalization), model)``; ``model`` itself if the normalization is
    None or the identity. The result takes [0, 1] pixels."""
    if normalization is None or normalization.is_identity:
        return model
    return nn.Sequential(Normalize(normalization), model)
