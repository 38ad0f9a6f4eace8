"""Blocked nearest-centroid assignment (squared Euclidean distance).

For a sample x and centroids c_1..c_K, ``argmin_k ||x - c_k||^2 = argmin_k (||c_k||^2 - 2 x.c_k)``
because ``||x||^2`` is the same for every k; we evaluate the right-hand side (the
``||x||^2 - 2 x c^T + ||c||^2`` expansion without its constant term, which only adds rounding
error) with one fused ``addmm`` per block. Samples are processed in blocks of ``sample_block``
rows and centroids in blocks of ``centroid_block``; the running minimum and its index are carried
across centroid blocks. Peak extra memory is one ``sample_block x centroid_block`` score matrix
(16 MiB at the defaults in float32), never ``n x K`` and never ``n x K x d``.

Centroids are either a tensor (held on the device) or :class:`UniformCentroids`, which are held
only while ``K x d`` floats fit in ``centroid_memory`` bytes (512 MiB by default) and otherwise
regenerated block by block from their seed for every block of samples: never ``K x d`` at once
(10,000 centroids at 224 x 224 x 3 would be 6 GiB). Both ways give the same centroids, the same
scores and the same cells.

Precision: the products run at full float32 precision whatever the process set (no TF32 or
bfloat16 rounding: :func:`genbound.torch_utils.full_float32`). There is no half-precision pass:
at 224 px a rounding bound that holds for any summation order covers every row's two best scores,
so every row would have to be re-decided (``bench/half_distance_ties.py``).

Ties: the lowest centroid index among equal computed scores wins (``argmin`` returns the first
minimum within a block; a later block replaces the running minimum only if strictly smaller).
Points whose two nearest centroids are within floating-point rounding of each other may be
assigned differently than by an exact computation; pass ``dtype=torch.float64`` to shrink that.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from genbound.errors import UserInputError
from genbound.torch_utils import full_float32, resolve_device


def _as_2d(a: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(a)
    if t.ndim != 2:
        t = t.reshape(t.shape[0], -1) if t.ndim > 2 else t
    if t.ndim != 2:
        raise UserInputError(f"{name} must be 2-D (rows x features); got shape {tuple(t.shape)}")
    return t


#: :class:`UniformCentroids` are held whole only up to this many bytes
CENTROID_MEMORY = 512 * 2**20
#: a regenerated block of centroids takes at most this many bytes
STREAM_BLOCK_BYTES = 128 * 2**20


class UniformCentroids:
    """``K`` centroids i.i.d. uniform in ``[0, 1]^d``: the rows of ``torch.rand(K, d, generator=g)``
    with ``g = torch.Generator().manual_seed(seed)``.

    :meth:`blocks` regenerates them in row order, a block at a time: torch's CPU generator fills a
    tensor element by element in memory order, so consecutive blocks drawn from one generator are
    exactly the rows of the one big draw (checked in the tests), and a pass costs one regeneration.
    """

    def __init__(self, K: int, d: int, seed: int) -> None:
        self.K, self.d, self.seed = int(K), int(d), int(seed)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.K, self.d)

    @property
    def nbytes(self) -> int:
        return self.K * self.d * 4

    def materialize(self) -> torch.Tensor:
        """All ``K x d`` centroids at once (small partitions only)."""
        return torch.rand(self.K, self.d, generator=torch.Generator().manual_seed(self.seed))

    def blocks(self, rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        """``(k0, centroids[k0:k0 + rows])`` in order; the yielded tensor is reused by the next block."""
        g = torch.Generator().manual_seed(self.seed)
        buf = torch.empty(min(rows, self.K), self.d)
        for k0 in range(0, self.K, rows):
            blk = buf[:min(rows, self.K - k0)]
            blk.uniform_(generator=g)
            yield k0, blk


class CentroidIndex:
    """Centroids prepared once on a device (with their squared norms) for repeated assignment.

    ``centroids``: a ``[K, d]`` tensor / array, or :class:`UniformCentroids` (held while they fit
    in ``centroid_memory`` bytes, default :data:`CENTROID_MEMORY`, else regenerated in blocks of
    at most :data:`STREAM_BLOCK_BYTES`; :attr:`streamed`).
    """

    def __init__(self, centroids: Any, *, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float32, centroid_block: int = 1024,
                 centroid_memory: int | None = None) -> None:
        if centroid_block < 1:
            raise UserInputError("centroid_block must be >= 1")
        self.device, self.dtype = resolve_device(device), dtype
        self.centroid_block = int(centroid_block)
        self._gen: UniformCentroids | None = None
        if isinstance(centroids, UniformCentroids):
            if centroids.nbytes > (CENTROID_MEMORY if centroid_memory is None else centroid_memory):
                self._gen = centroids
                self._K, self._d = centroids.shape
                self.centroid_block = max(1, min(self.centroid_block, STREAM_BLOCK_BYTES // (4 * self._d)))
                if self._K < 1:
                    raise UserInputError("need at least one centroid")
                return
            centroids = centroids.materialize()
        c = _as_2d(centroids, "centroids")
        if c.shape[0] < 1:
            raise UserInputError("need at least one centroid")
        self.c = c.to(self.device, dtype).contiguous()
        self.c2 = (self.c * self.c).sum(1)
        self._K, self._d = int(c.shape[0]), int(c.shape[1])

    @property
    def streamed(self) -> bool:
        """True when the centroids are regenerated for every block of samples instead of held."""
        return self._gen is not None

    @property
    def num_centroids(self) -> int:
        return self._K

    @property
    def dim(self) -> int:
        return self._d

    def _blocks(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        cb = self.centroid_block
        if self._gen is None:
            for k0 in range(0, self._K, cb):
                yield k0, self.c[k0:k0 + cb], self.c2[k0:k0 + cb]
            return
        for k0, blk in self._gen.blocks(cb):
            c = blk.to(self.device, self.dtype)
            yield k0, c, (c * c).sum(1)

    def assign(self, x: Any, *, sample_block: int = 4096) -> np.ndarray:
        """Index of the nearest centroid of every row of ``x``; int64[n]."""
        xt = _as_2d(x, "x")
        if sample_block < 1:
            raise UserInputError("sample_block must be >= 1")
        return self.assign_chunks([xt[s:s + sample_block] for s in range(0, xt.shape[0], sample_block)])

    @torch.no_grad()
    def assign_chunks(self, chunks: list[torch.Tensor]) -> np.ndarray:
        """Nearest centroids of the rows of several ``[b_i, d]`` chunks, concatenated; int64[sum b_i].

        Held centroids: chunk by chunk. Streamed centroids: every chunk is scored against each
        regenerated block before the next is drawn, so they are drawn once for all the chunks
        (the caller bounds the chunks' total size). Either way each row meets the centroid blocks
        in the same order, so the result does not depend on how the rows are chunked.
        """
        for ch in chunks:
            if ch.ndim != 2 or ch.shape[1] != self.dim:
                raise UserInputError(f"points have {tuple(ch.shape[1:])} features but centroids have {self.dim}")
        groups = [chunks] if self.streamed else [[ch] for ch in chunks]
        out: list[np.ndarray] = []
        with full_float32():
            for group in groups:
                xs = [ch.to(self.device, self.dtype) for ch in group]
                best = [(torch.full((xb.shape[0],), float("inf"), device=self.device, dtype=self.dtype),
                         torch.zeros(xb.shape[0], dtype=torch.int64, device=self.device)) for xb in xs]
                for k0, c, c2 in self._blocks():
                    for j, xb in enumerate(xs):
                        # scores[i, k] = ||c_k||^2 - 2 x_i . c_k
                        scores = torch.addmm(c2.unsqueeze(0), xb, c.T, beta=1, alpha=-2)
                        idx = scores.argmin(1)
                        val = scores.gather(1, idx.unsqueeze(1)).squeeze(1)
                        best_val, best_idx = best[j]
                        better = val < best_val
                        best[j] = (torch.where(better, val, best_val), torch.where(better, idx + k0, best_idx))
                        del scores
                out.extend(b[1].cpu().numpy() for b in best)
        return np.concatenate(out) if out else np.zeros(0, np.int64)


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
