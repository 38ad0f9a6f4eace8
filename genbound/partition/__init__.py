"""Partition layer: data-independent Voronoi partitions of the input space and blocked
nearest-centroid assignment.

Public API: :class:`PartitionSpec` (kind ``uniform`` / ``heldout`` / ``projection``, label-pure
option), :func:`build_partition` -> :class:`Partition` (``assign(source)`` -> int64 cell ids,
``record()``, ``heldout_indices_used``), :func:`nearest_centroid` and :class:`CentroidIndex`.
"""

from genbound.partition.assign import CentroidIndex, nearest_centroid
from genbound.partition.partition import KINDS, Partition, PartitionSpec, build_partition

__all__ = ["KINDS", "CentroidIndex", "Partition", "PartitionSpec", "build_partition", "nearest_centroid"]
