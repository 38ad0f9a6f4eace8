"""Streaming a source's batches, decoded in parallel worker processes when that pays.

:func:`stream` yields ``(index, x, y)`` for consecutive batches of the given sample positions (all
of them by default, or a shard: any int64 array of global positions), always in that order.
With ``workers > 0`` a :class:`torch.utils.data.DataLoader` decodes batches in that many
processes (each calls ``source.get`` on one batch of positions) and ``pin_memory`` has the
loader put them in page-locked memory, so a CUDA copy can be ``non_blocking``. ``workers = 0``
decodes in the calling process (no pinning: it would be one more synchronous copy). :func:`resolve_workers` turns ``"auto"`` into a number: no workers for in-memory sources
(a worker would only copy tensors that are already decoded), a few for sources that decode files.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import torch

from genbound.data.source import DataSource
from genbound.distributed import split_batches
from genbound.errors import UserInputError

#: at most this many decoding processes with ``workers = "auto"``
AUTO_WORKERS_MAX = 4


def resolve_workers(workers: int | str, source: DataSource) -> int:
    """``"auto"``: 0 for an in-memory source, else ``min(4, usable cores - 1)`` (at least 1); an int as given."""
    if workers == "auto":
        if not getattr(source, "decodes", False):
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, min(AUTO_WORKERS_MAX, cores - 1))
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise UserInputError(f"workers must be an integer >= 0 or \"auto\"; got {workers!r}")
    return int(workers)


def batch_positions(n: int, batch_size: int, indices: np.ndarray | None = None) -> list[np.ndarray]:
    """Consecutive batches of ``indices`` (default ``arange(n)``), the last one shorter: the
    batches of :func:`genbound.distributed.split_batches`, after checking the positions against ``n``."""
    if indices is None:
        return split_batches(n, batch_size)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise UserInputError(f"sample indices out of range for a source of {n} samples")
    return split_batches(idx, batch_size)


class _Batches(torch.utils.data.Dataset):
    """Item ``i`` = batch ``i`` of positions, decoded. A user mistake found while decoding (a bad
    file) comes back as a value and is raised in the main process, so it stays a one-line error
    instead of the worker's wrapped traceback."""

    def __init__(self, source: DataSource, parts: list[np.ndarray]) -> None:
        self.source, self.parts = source, parts

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, i: int) -> Any:
        idx = self.parts[i]
        try:
            x, y = self.source.get(idx)
        except UserInputError as exc:
            return exc
        return torch.from_numpy(idx), x, y


def stream(source: DataSource, *, batch_size: int, indices: np.ndarray | None = None, workers: int | str = 0,
           pin_memory: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """``(index, x, y)`` batches of ``source`` at ``indices`` (default: every sample), in order."""
    yield from decode(source, batch_positions(len(source), batch_size, indices), workers=workers,
                      pin_memory=pin_memory)


def decode(source: DataSource, parts: list[np.ndarray], *, workers: int | str = 0,
           pin_memory: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """``(index, x, y)`` for each batch of positions in ``parts``, in order, decoded by ``workers``
    processes (:func:`resolve_workers`) while the caller works on the previous batches."""
    nw = resolve_workers(workers, source)
    if nw == 0:
        for idx in parts:
            x, y = source.get(idx)
            yield idx, x, y  # pinning here would be one more synchronous copy: only workers pin
        return
    loader = torch.utils.data.DataLoader(_Batches(source, parts), batch_size=None, shuffle=False,
                                         num_workers=min(nw, max(1, len(parts))), pin_memory=pin_memory)
    for item in loader:
        if isinstance(item, UserInputError):
            raise item
        idx, x, y = item
        yield idx.numpy(), x, y
