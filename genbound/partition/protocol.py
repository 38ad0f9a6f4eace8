"""The partition protocol: what every partition of the input space offers the pipeline.

A partition maps samples to cells. Whatever its kind (Voronoi cells of K centroids,
:mod:`genbound.partition.voronoi`; kappa-fine label-pure grids, :mod:`genbound.partition.grid`),
it exposes:

- ``assign(source, batch_size=, device=, progress_bar=)`` -> int64[n] cell ids (streamed);
- ``assigner(device=)`` -> an accumulator with ``update(x, y)`` per batch and ``compute()`` ->
  int64[n]: how the one pass over a dataset (:func:`genbound.collect.collect`) assigns cells from
  the batches the model sees, every partition of the run at once;
- ``K`` (number of cells, empty ones included; ``None`` beyond int64) and ``log_K``;
- ``max_cell_diameter``: ``{norm: diameter}`` known by construction, or ``None`` when unknown
  (never estimated from points); :meth:`diameter` reads one norm;
- ``depends_on_training_set``: built with the training sample (then every partition result is
  a diagnostic); ``uses_heldout``: built with held-out data (those points are left out of the
  held-out statistics, :meth:`heldout_statistics_mask`);
- ``record()``: the JSON record every result carries (spec §1), with the keys
  ``kind``, ``K``, ``log_K``, ``max_cell_diameter``, ``depends_on_training_set``, ``uses_heldout``.

A new partition (e.g. a clustering of held-out data) implements these and is built in
:func:`genbound.pipeline.build_partitions`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from genbound.data.source import DataSource

__all__ = ["PartitionProtocol"]


@runtime_checkable
class PartitionProtocol(Protocol):
    K: int | None
    log_K: float
    max_cell_diameter: dict[str, float] | None
    depends_on_training_set: bool
    uses_heldout: bool

    def assign(self, source: DataSource, *, batch_size: int = ..., device: str | torch.device | None = None,
               progress_bar: bool = True) -> np.ndarray: ...

    def assigner(self, *, device: str | torch.device | None = None) -> Any: ...

    def record(self) -> dict[str, Any]: ...

    def diameter(self, norm: str) -> float | None: ...

    def heldout_statistics_mask(self, m: int) -> np.ndarray: ...
