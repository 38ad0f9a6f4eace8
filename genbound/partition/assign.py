"""Blocked nearest-centroid assignment (squared Euclidean distance).

For a sample x and centroids c_1..c_K, ``argmin_k ||x - c_k||^2 = argmin_k (||c_k||^2 - 2 x.c_k)``
because ``||x||^2`` is the same for every k; we evaluate the right-hand side (the
``||x||^2 - 2 x c^T + ||c||^2`` expansion without its constant term, which only adds rounding
error) with one fused ``addmm`` per block. Samples are processed in blocks of ``sample_block``
rows and centroids in blocks of ``centroid_block``; the running minimum and its index are carried
across centroid blocks. Peak extra memory is one ``sample_block x centroid_block`` score matrix
(16 MiB at the defaults in float32), never ``n x K`` and never ``n x K x d``.

Ties: the lowest centroid index among equal computed scores wins (``argmin`` returns the first
minimum within a block; a later block replaces the running minimum only if strictly smaller).
Points whose two nearest centroids are within floating-point rounding of each other may be
assigned differently than by an exact computation; pass ``dtype=torch.float64`` to shrink that.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from genbound.errors import UserInputError
from genbound.torch_utils import resolve_device


def _as_2d(a: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(a)
    if t.ndim != 2:
        t = t.reshape(t.shape[0], -1) if t.ndim > 2 else t
    if t.ndim != 2:
        raise UserInputError(f"{name} must be 2-D (rows x features); got shape {tuple(t.shape)}")
    return t


class CentroidIndex:
    """Centroids prepared once on a device (with their squared norms) for repeated assignment."""

    def __init__(self, centroids: Any, *, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32, centroid_block: int = 1024) -> None:
        c = _as_2d(centroids, "centroids")
        if c.shape[0] < 1:
            raise UserInputError("need at least one centroid")
        if centroid_block < 1:
            raise UserInputError("centroid_block must be >= 1")
        self.device, self.dtype = resolve_device(device), dtype
        self.c = c.to(self.device, dtype).contiguous()
        self.c2 = (self.c * self.c).sum(1)
        self.centroid_block = int(centroid_block)

    @property
    def num_centroids(self) -> int:
        return int(self.c.shape[0])

    @property
    def dim(self) -> int:
        return int(self.c.shape[1])

    @torch.no_grad()
    def assign(self, x: Any, *, sample_block: int = 4096) -> np.ndarray:
        """Index of the nearest centroid of every row of ``x``; int64[n]."""
        xt = _as_2d(x, "x")
        if xt.shape[1] != self.dim:
            raise UserInputError(f"points have {xt.shape[1]} features but centroids have {self.dim}")
        if sample_block < 1:
            raise UserInputError("sample_block must be >= 1")
        n, K, cb = xt.shape[0], self.num_centroids, self.centroid_block
        out = np.empty(n, dtype=np.int64)
        for s in range(0, n, sample_block):
            xb = xt[s:s + sample_block].to(self.device, self.dtype)
            best_val = torch.full((xb.shape[0],), float("inf"), device=self.device, dtype=self.dtype)
            best_idx = torch.zeros(xb.shape[0], dtype=torch.int64, device=self.device)
            for k0 in range(0, K, cb):
                # scores[i, k] = ||c_k||^2 - 2 x_i . c_k
                scores = torch.addmm(self.c2[k0:k0 + cb].unsqueeze(0), xb, self.c[k0:k0 + cb].T, beta=1, alpha=-2)
                idx = scores.argmin(1)
                val = scores.gather(1, idx.unsqueeze(1)).squeeze(1)
                better = val < best_val
                best_val = torch.where(better, val, best_val)
                best_idx = torch.where(better, idx + k0, best_idx)
                del scores
            out[s:s + xb.shape[0]] = best_idx.cpu().numpy()
        return out


def nearest_centroid(x: Any, centroids: Any, *, sample_block: int = 4096, centroid_block: int = 1024,
                     device: str | torch.device | None = None, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Nearest centroid (squared Euclidean) of each row of ``x`` (``[n, d]``, or ``[n, ...]`` flattened)
    among the rows of ``centroids`` (``[K, d]``); int64[n]. Blocked; see the module docstring."""
    return CentroidIndex(centroids, device=device, dtype=dtype, centroid_block=centroid_block).assign(
        x, sample_block=sample_block)


def label_pure_cells(region: np.ndarray, labels: np.ndarray | None, num_classes: int | None) -> np.ndarray:
    """Cell ids from region ids: the regions themselves, or (``num_classes`` given: a label-pure
    partition) ``region * num_classes + label``, so K = regions x classes."""
    if num_classes is None:
        return np.asarray(region).astype(np.int64)
    if labels is None:
        raise UserInputError("a label-pure partition needs the labels of the points")
    C = int(num_classes)
    if labels.size and (labels.min() < 0 or labels.max() >= C):
        raise UserInputError(f"labels must lie in [0, {C}) for this label-pure partition")
    return np.asarray(region).astype(np.int64) * C + labels.astype(np.int64)
