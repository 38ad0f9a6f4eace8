"""Partition layer: cells of the input space, one protocol for every kind.

:class:`~genbound.partition.protocol.PartitionProtocol` (``assign(source)``, ``K``, ``log_K``,
``record()``, ``max_cell_diameter``, ``depends_on_training_set``, ``uses_heldout``) is followed by

- Voronoi partitions (:mod:`genbound.partition.voronoi`): :class:`PartitionSpec` (kind ``uniform``
  / ``heldout`` / ``projection``, label-pure option) -> :func:`build_partition` -> :class:`Partition`,
  with blocked nearest-centroid assignment (:func:`nearest_centroid`, :class:`CentroidIndex`);
- kappa-fine label-pure grids (:mod:`genbound.partition.grid`): :func:`build_grid` ->
  :class:`GridPartition` (``grid_partition`` builds one from arrays);
- k-means clusters (:mod:`genbound.partition.kmeans`): :class:`KMeansSpec` (fit on a held-out
  split or the training set, pixels or a named layer's features) -> :func:`build_kmeans` ->
  :class:`KMeansPartition`.
"""

from genbound.partition.assign import CentroidIndex, nearest_centroid
from genbound.partition.grid import GridPartition, build_grid, grid_partition
from genbound.partition.kmeans import KMeansPartition, KMeansSpec, build_kmeans, check_kmeans
from genbound.partition.protocol import PartitionProtocol
from genbound.partition.voronoi import KINDS, Partition, PartitionSpec, build_partition

__all__ = ["KINDS", "CentroidIndex", "GridPartition", "KMeansPartition", "KMeansSpec", "Partition", "PartitionProtocol", "PartitionSpec",
           "build_grid", "build_kmeans", "build_partition", "check_kmeans", "grid_partition", "nearest_centroid"]
