"""Partitions of the input space into Voronoi cells of K centroids (spec/bounds.md §1-2).

Kinds (background-bounds §9.1 step 1):

- ``uniform``: K centroids i.i.d. uniform in the input cube [0, 1]^d (Than & Phan 2025).
- ``heldout``: K centroids sampled without replacement from a held-out set (Than et al. code).
  The held-out indices used are reported (:attr:`Partition.heldout_indices_used`) so they can be
  excluded from held-out statistics (:meth:`Partition.heldout_statistics_mask`); a held-out
  hybrid bound (``theorem_h``) that uses the same held-out set is then only a diagnostic.
- ``projection``: a seeded random Gaussian projection ``z = x P`` with ``P`` in R^{d x p}, entries
  N(0, 1/p), then centroids in the projected space: ``centroids="uniform"`` draws them uniformly
  in the bounding box of the projected cube ``P^T [0,1]^d`` (coordinate j ranges over
  ``[sum_i min(P_ij, 0), sum_i max(P_ij, 0)]``; in high dimension most such cells stay empty),
  ``centroids="heldout"`` projects sampled held-out points.

``label_pure=True`` splits every region by label: ``cell = region * num_classes + label``, so
``K = regions x num_classes`` (empty cells included).

**Independence from the training sample.** Every partition here is a function of the seed, the
input dimension and (for ``heldout``) held-out data only; the training set is never looked at
when the partition is built, and it is assigned with the raw [0, 1] pixels (no statistics fitted
on it). This is what the concentration terms of spec §2 require. ``max_cell_diameter`` is
unknown (``None``) for Voronoi cells: it is never estimated from observed points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from genbound.data.source import DEFAULT_BATCH_SIZE, DataSource
from genbound.errors import UserInputError
from genbound.names import VORONOI_KINDS
from genbound.data.loader import stream
from genbound.partition.assign import CentroidIndex, UniformCentroids, label_pure_cells
from genbound.torch_utils import array_hash, free_memory, derive_seed, full_float32, progress, resolve_device

KINDS = VORONOI_KINDS


@dataclass(frozen=True)
class PartitionSpec:
    """What a partition is, fixed before any training data is seen (pre-registered).

    ``regions``: number of centroids; ``K`` = regions (x num_classes if ``label_pure``).
    ``projection_dim`` and ``centroids`` (``"uniform"`` or ``"heldout"``) apply to ``projection``.
    """

    kind: str
    regions: int
    seed: int = 0
    label_pure: bool = False
    num_classes: int | None = None
    projection_dim: int | None = None
    centroids: str = "uniform"
    metric: str = "l2"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserInputError(f"partition kind must be one of {KINDS}; got {self.kind!r}")
        if int(self.regions) < 1:
            raise UserInputError(f"number of regions (centroids) must be >= 1; got {self.regions}")
        if self.label_pure and (self.num_classes is None or self.num_classes < 2):
            raise UserInputError("a label-pure partition needs num_classes >= 2")
        if self.kind == "projection":
            if self.projection_dim is None or self.projection_dim < 1:
                raise UserInputError("a projection partition needs projection_dim >= 1")
            if self.centroids not in ("uniform", "heldout"):
                raise UserInputError(f"projection centroids must be 'uniform' or 'heldout'; got {self.centroids!r}")
        if self.metric != "l2":
            raise UserInputError(f"only metric='l2' (nearest centroid in Euclidean distance) is supported; got {self.metric!r}")

    @property
    def K(self) -> int:
        """Total number of cells, empty ones included."""
        return int(self.regions) * (int(self.num_classes) if self.label_pure else 1)

    @property
    def uses_heldout(self) -> bool:
        return self.kind == "heldout" or (self.kind == "projection" and self.centroids == "heldout")


class Partition:
    """Centroids (and projection) of a built partition; assigns cell ids to any source."""

    def __init__(self, spec: PartitionSpec, centroids: torch.Tensor | UniformCentroids, *, input_dim: int,
                 projection: torch.Tensor | None = None, heldout_indices_used: np.ndarray | None = None,
                 source: str = "") -> None:
        self.spec = spec
        self.centroid_source = centroids
        self.projection = projection
        self._proj_dev: torch.Tensor | None = None
        self.input_dim = int(input_dim)
        self.heldout_indices_used = (np.zeros(0, np.int64) if heldout_indices_used is None
                                     else np.asarray(heldout_indices_used, np.int64))
        self.source = source

    @property
    def centroids(self) -> torch.Tensor:
        """The ``[regions, d]`` centroids as one tensor (drawn now for uniform ones: small K x d only)."""
        c = self.centroid_source
        return c.materialize() if isinstance(c, UniformCentroids) else c

    @property
    def K(self) -> int:
        return self.spec.K

    @property
    def log_K(self) -> float:
        return math.log(self.K)

    max_cell_diameter = None
    """Unknown for Voronoi cells (never estimated from points): no cell is ever proven from it."""

    depends_on_training_set = False
    """Built from the seed, the input dimension and (``heldout`` kinds) held-out data only."""

    @property
    def uses_heldout(self) -> bool:
        return self.spec.uses_heldout

    def diameter(self, norm: str) -> float | None:
        """Largest cell diameter in ``norm``: unknown (``None``) for Voronoi cells."""
        return None

    def record(self) -> dict[str, Any]:
        """The partition spec as every result records it (spec/bounds.md §1; keys of the protocol)."""
        return {**asdict(self.spec), "K": self.K, "log_K": self.log_K, "input_dim": self.input_dim,
                "source": self.source, "max_cell_diameter": None,
                "n_heldout_used": int(self.heldout_indices_used.size),
                "heldout_indices_hash": array_hash(self.heldout_indices_used) if self.heldout_indices_used.size else None,
                "depends_on_training_set": self.depends_on_training_set, "uses_heldout": self.uses_heldout}

    def heldout_statistics_mask(self, m: int) -> np.ndarray:
        """bool[m]: held-out samples *not* used as centroids (use only these for held-out statistics)."""
        mask = np.ones(m, dtype=bool)
        mask[self.heldout_indices_used[self.heldout_indices_used < m]] = False
        return mask

    def _features(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        z = x.reshape(x.shape[0], -1).to(device, torch.float32)
        if z.shape[1] != self.input_dim:
            raise UserInputError(f"data have {z.shape[1]} features; this partition was built for {self.input_dim}")
        if self.projection is not None:
            if self._proj_dev is None or self._proj_dev.device != z.device:
                self._proj_dev = self.projection.to(device)
            with full_float32():  # the cells must not depend on the process's TF32 / bfloat16 setting
                z = z @ self._proj_dev
        return z

    def assigner(self, *, device: str | torch.device | None = None, sample_block: int = 4096,
                 centroid_block: int = 1024, centroid_memory: int | None = None) -> "VoronoiCells":
        """A per-batch accumulator of cell ids (``update(x, y)``, ``compute()``): what the one pass
        over a dataset feeds, batch by batch, beside the model's forward pass."""
        dev = resolve_device(device)
        index = CentroidIndex(self.centroid_source, device=dev, centroid_block=centroid_block,
                              centroid_memory=centroid_memory)
        return VoronoiCells(self, index, dev, sample_block)

    def assign(self, source: DataSource, *, batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = None,
               sample_block: int = 4096, centroid_block: int = 1024, progress_bar: bool = True,
               workers: int | str = 0) -> np.ndarray:
        """Cell id of every sample of ``source`` (streamed in batches): int64[n] in [0, K)."""
        acc = self.assigner(device=device, sample_block=sample_block, centroid_block=centroid_block)
        for _, x, y in progress(stream(source, batch_size=batch_size, workers=workers), enabled=progress_bar,
                                desc=f"assign cells {source.name}", total=source.num_batches(batch_size), unit="batch"):
            acc.update(x, y)
        return acc.compute()

    def assign_arrays(self, x: Any, labels: Any = None, *, device: str | torch.device | None = None,
                      sample_block: int = 4096, centroid_block: int = 1024) -> np.ndarray:
        """Cell ids of in-memory points ``x`` ``[n, ...]`` (labels needed if label-pure)."""
        dev = resolve_device(device)
        index = CentroidIndex(self.centroid_source, device=dev, centroid_block=centroid_block)
        region = index.assign(self._features(torch.as_tensor(x), dev), sample_block=sample_block)
        return self._cell(region, None if labels is None else np.asarray(labels))

    def _cell(self, region: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        return label_pure_cells(region, labels, self.spec.num_classes if self.spec.label_pure else None)


#: streamed centroids are regenerated once per buffer of at most this many bytes of samples
SAMPLE_BUFFER_BYTES = 512 * 2**20


class VoronoiCells:
    """Cell ids of a stream of batches: ``update(x, y)`` per batch, ``compute()`` -> int64[n].

    With held centroids every batch is assigned at once. With streamed (regenerated) centroids
    the batches' features are kept until they reach ``sample_block`` rows or
    ``SAMPLE_BUFFER_BYTES`` bytes and then assigned together, so the centroids are regenerated
    once per such group rather than per batch (drawing them costs about as much as scoring a few
    hundred samples against them).
    """

    def __init__(self, partition: Partition, index: CentroidIndex, device: torch.device, sample_block: int) -> None:
        self.partition, self.index, self.device = partition, index, device
        self.sample_block = int(sample_block)
        self.rows = (max(1, min(self.sample_block, SAMPLE_BUFFER_BYTES // (4 * index.dim))) if index.streamed else 0)
        self._pending: list[torch.Tensor] = []
        self._pending_rows = 0
        self._labels: list[np.ndarray] = []
        self._regions: list[np.ndarray] = []

    def update(self, x: torch.Tensor, y: torch.Tensor | np.ndarray) -> None:
        z = self.partition._features(x, self.device)
        self._labels.append(np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y))
        if not self.rows:
            self._regions.append(self.index.assign(z, sample_block=self.sample_block))
            return
        self._pending.append(z)
        self._pending_rows += z.shape[0]
        if self._pending_rows >= self.rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._regions.append(self.index.assign_chunks(self._pending))
            self._pending, self._pending_rows = [], 0

    def compute(self) -> np.ndarray:
        """Cell ids of every sample given so far, in order."""
        self._flush()
        if not self._regions:
            return np.zeros(0, np.int64)
        return self.partition._cell(np.concatenate(self._regions), np.concatenate(self._labels))


def build_partition(spec: PartitionSpec, *, input_dim: int, heldout: DataSource | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> Partition:
    """Draw the centroids (and projection) of ``spec`` for inputs of ``input_dim`` features.

    Randomness: the projection uses seed ``derive_seed(spec.seed, 1)``, uniform centroids
    ``derive_seed(spec.seed, 0)``, the held-out choice ``numpy.random.default_rng(derive_seed(spec.seed, 2))``.
    The training set is not an argument: the partition cannot depend on it.
    """
    d = int(input_dim)
    if d < 1:
        raise UserInputError("input_dim must be >= 1")
    K = int(spec.regions)
    projection = None
    if spec.kind == "projection":
        g = torch.Generator().manual_seed(derive_seed(spec.seed, 1))
        p = int(spec.projection_dim)  # type: ignore[arg-type]
        projection = torch.randn(d, p, generator=g) / math.sqrt(p)
    heldout_used = None
    if spec.uses_heldout:
        if heldout is None or len(heldout) == 0:
            raise UserInputError(f"a {spec.kind!r} partition needs held-out data to sample its centroids from")
        if heldout.dim != d:
            raise UserInputError(f"held-out data have {heldout.dim} features, expected {d}")
        if K > len(heldout):
            raise UserInputError(f"cannot sample {K} centroids from {len(heldout)} held-out samples; lower K")
        width = d if projection is None else projection.shape[1]
        free = free_memory(torch.device("cpu"))
        if free is not None and K * width * 4 > free:
            raise UserInputError(
                f"a {spec.kind!r} partition holds its K = {K:,} held-out centroids in {width:,} dimensions: "
                f"{K * width * 4 / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB are free; use a 'uniform' partition "
                "(its centroids are regenerated block by block), "
                + ("a smaller projection_dim" if projection is not None else "a 'projection' partition")
                + ", or a smaller K")
        rng = np.random.default_rng(derive_seed(spec.seed, 2))
        heldout_used = np.sort(rng.choice(len(heldout), size=K, replace=False)).astype(np.int64)
        # filled in place: K x d floats once (a list of chunks and their concatenation would hold them twice)
        centroids = torch.empty(K, width, dtype=torch.float32)
        for s in range(0, K, batch_size):
            x, _ = heldout.get(heldout_used[s:s + batch_size])
            z = x.reshape(x.shape[0], -1).to(torch.float32)
            with full_float32():
                centroids[s:s + z.shape[0]] = z @ projection if projection is not None else z
        source = f"heldout:{heldout.name}"
    else:
        g = torch.Generator().manual_seed(derive_seed(spec.seed, 0))
        if projection is None:
            # the rows of torch.rand(K, d, generator=g), regenerated block by block when large
            centroids = UniformCentroids(K, d, derive_seed(spec.seed, 0))
            source = f"uniform [0,1]^{d}"
        else:
            lo, hi = projection.clamp(max=0).sum(0), projection.clamp(min=0).sum(0)
            centroids = lo + (hi - lo) * torch.rand(K, projection.shape[1], generator=g)
            source = f"uniform in the bounding box of P^T [0,1]^{d}"
    return Partition(spec, centroids if isinstance(centroids, UniformCentroids) else centroids.contiguous(), input_dim=d, projection=projection,
                     heldout_indices_used=heldout_used, source=source)
