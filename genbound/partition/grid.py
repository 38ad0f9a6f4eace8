"""kappa-fine, label-pure grid partitions of a fixed input range (Corollary N1, spec §1/§3).

A cell is ``label x (l_inf grid cell of side kappa)`` over a range ``[lo, hi]^d`` that is fixed
and known in advance (default ``[0, 1]^d``, pre-normalization pixel units) -- never rescaled with
statistics of the data, so the partition is data-independent and the same function is applied to
training and held-out samples.

Along dimension ``i`` the grid has ``B_i = ceil((hi_i - lo_i) / kappa)`` bins; the bin of a
coordinate is ``floor((x_i - lo_i) / kappa)`` clipped to ``B_i - 1`` so the upper edge ``hi_i``
belongs to the last bin. Every cell region is therefore a box with sides ``<= kappa``:

* ``max_cell_diameter["linf"] = max_i min(kappa, hi_i - lo_i)``  (= kappa for the unit cube),
* ``max_cell_diameter["l2"]  = sqrt(sum_i min(kappa, hi_i - lo_i)^2)``  (= kappa * sqrt(d)),

known by construction, never estimated from points. ``K = num_classes * prod_i B_i`` and
``log_K`` is computed in log space, so ``d = 784`` or ``d = 150528`` works. Cell coordinates are
never turned into one big integer: occupied cells are relabelled to compact int64 ids, jointly
over the training and held-out samples (and later via :meth:`GridPartition.assign_arrays`, which maps
coordinates through the same dictionary), so one cell always has one id.

Cell boundaries are evaluated in float64 (relative error ~1e-16 of kappa); the sound stability
verifier (:mod:`genbound.stability.sound`) inflates its radius by a relative 1e-9 to cover this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from genbound.errors import UserInputError

__all__ = ["GridPartition", "build_grid", "grid_partition", "grid_num_bins"]

# K is returned as a Python int only while it fits in int64 (JSON/numpy safe); beyond, None.
_K_INT_LIMIT = 2**63 - 1


def _as_2d(x, name: str) -> np.ndarray:
    try:
        import torch  # local: partition must not require torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        raise UserInputError(f"{name} must be an array of samples [n, ...], got a scalar")
    a = a.reshape(a.shape[0], -1)
    if not np.all(np.isfinite(a)):
        raise UserInputError(f"{name} contains NaN or inf; clean the data before partitioning")
    return a


def _as_labels(y, n: int, num_classes: int, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(y)
    if a.shape != (n,):
        raise UserInputError(f"{name} must have shape ({n},) to match the inputs, got {a.shape}")
    if a.size and (not np.issubdtype(a.dtype, np.integer)):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise UserInputError(f"{name} must hold integer class labels")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        raise UserInputError(
            f"{name} must be in [0, {num_classes}) (num_classes={num_classes}); "
            f"got labels in [{a.min()}, {a.max()}]"
        )
    return a


def grid_num_bins(lo: np.ndarray, hi: np.ndarray, kappa: float) -> np.ndarray:
    """Bins per dimension, ``ceil((hi - lo) / kappa)``, made safe against float rounding.

    The result always satisfies ``lo + B * kappa >= hi`` in float64, so no cell is wider than
    kappa (a rounding up by one only adds an almost empty bin: valid, K counts it).
    """
    width = hi - lo
    b = np.maximum(1, np.ceil(width / kappa)).astype(np.int64)
    short = lo + b * kappa < hi
    while np.any(short):  # pragma: no cover - float corner case
        b = b + short
        short = lo + b * kappa < hi
    return b


@dataclass
class GridPartition:
    """A kappa-fine label-pure l_inf grid over a fixed range, with a consistent id dictionary.

    Follows :class:`genbound.partition.protocol.PartitionProtocol`: ``assign(source)`` streams a
    data source (ids handed out in order of first appearance, so assigning the training set and
    then the held-out set gives the ids :func:`grid_partition` gives), ``record()``,
    ``max_cell_diameter`` (known by construction), never built with training or held-out data.
    """

    kappa: float
    lo: np.ndarray  # float64[d]
    hi: np.ndarray  # float64[d]
    num_classes: int
    bins: np.ndarray  # int64[d]
    log_K: float
    K: int | None
    train_cell: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    heldout_cell: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    _ids: dict = field(default_factory=dict, repr=False)

    depends_on_training_set = False  # a fixed range and side: a function of nothing observed
    uses_heldout = False

    @property
    def d(self) -> int:
        return int(self.lo.shape[0])

    @property
    def max_cell_diameter(self) -> dict:
        side = np.minimum(self.kappa, self.hi - self.lo)
        return {"linf": float(side.max()), "l2": float(math.sqrt(float(np.sum(side**2))))}

    def diameter(self, norm: str) -> float | None:
        """Largest cell diameter in ``norm`` (``linf`` or ``l2``), by construction."""
        return self.max_cell_diameter.get(norm)

    def heldout_statistics_mask(self, m: int) -> np.ndarray:
        """bool[m]: every held-out sample (the grid uses none of them)."""
        return np.ones(m, dtype=bool)

    def record(self) -> dict:
        """The partition spec recorded with every result (spec §1; keys of the protocol)."""
        lo, hi = self.lo, self.hi
        scalar = bool(np.all(lo == lo[0]) and np.all(hi == hi[0]))
        return {
            "kind": "grid",
            "side": float(self.kappa),
            "range": [float(lo[0]), float(hi[0])] if scalar else [lo.tolist(), hi.tolist()],
            "d": self.d,
            "num_classes": int(self.num_classes),
            "label_pure": True,
            "metric": "linf",
            "max_cell_diameter": self.max_cell_diameter,
            "K": self.K,
            "log_K": float(self.log_K),
            "depends_on_training_set": self.depends_on_training_set,
            "uses_heldout": self.uses_heldout,
            "seed": None,
            "n_occupied": len(self._ids),
        }

    def coordinates(self, x) -> np.ndarray:
        """Integer grid coordinates ``[n, d]`` of samples (UserInputError outside the range)."""
        a = _as_2d(x, "x")
        if a.shape[1] != self.d:
            raise UserInputError(
                f"samples have {a.shape[1]} features but the grid was built for d={self.d}"
            )
        return _coords(a, self.lo, self.hi, self.kappa, self.bins)

    def assign_arrays(self, x, y) -> np.ndarray:
        """Cell ids of new samples, consistent with the ids already handed out.

        Cells not seen before get fresh ids after the existing ones, in order of first appearance
        (ids need not be < K).
        """
        c = self.coordinates(x)
        lab = _as_labels(y, c.shape[0], self.num_classes, "y")
        if c.shape[0] == 0:
            return np.zeros(0, np.int64)
        full = np.ascontiguousarray(np.concatenate([lab[:, None], c], axis=1).astype(np.int64, copy=False))
        rows = full.view(np.dtype((np.void, full.dtype.itemsize * full.shape[1]))).ravel()
        uniq, first, inv = np.unique(rows, return_index=True, return_inverse=True)
        ids = np.empty(uniq.size, dtype=np.int64)
        for r in np.argsort(first, kind="stable"):  # new cells numbered in order of first appearance
            key = uniq[r].tobytes()
            j = self._ids.get(key)
            if j is None:
                j = len(self._ids)
                self._ids[key] = j
            ids[r] = j
        return ids[inv.ravel()]

    def assigner(self, *, device=None, **_) -> "GridCells":
        """A per-batch accumulator of cell ids (``update(x, y)``, ``compute()``) for the one pass
        over a dataset; ids are handed out in sample order, as by :meth:`assign`."""
        return GridCells(self)

    def assign(self, source, *, batch_size: int = 4096, device=None, progress_bar: bool = True) -> np.ndarray:
        """Cell ids of every sample of a :class:`~genbound.data.source.DataSource` (streamed in batches)."""
        parts = [self.assign_arrays(x, y) for x, y in source.batches(batch_size)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


class GridCells:
    """Cell ids of a stream of batches of one grid: ``update(x, y)``, ``compute()`` -> int64[n]."""

    def __init__(self, grid: GridPartition) -> None:
        self.grid = grid
        self._parts: list[np.ndarray] = []

    def update(self, x, y) -> None:
        self._parts.append(self.grid.assign_arrays(x, y))

    def compute(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros(0, np.int64)


def _coords(a: np.ndarray, lo: np.ndarray, hi: np.ndarray, kappa: float, bins: np.ndarray) -> np.ndarray:
    if a.size:
        below = a < lo
        above = a > hi
        if np.any(below) or np.any(above):
            i, j = np.argwhere(below | above)[0]
            raise UserInputError(
                f"sample {i} feature {j} = {a[i, j]!r} lies outside the grid range "
                f"[{lo[j]}, {hi[j]}]; pass inputs in pre-normalization units inside the range "
                "(or widen range=)"
            )
    c = np.floor((a - lo) / kappa).astype(np.int64)
    np.clip(c, 0, bins - 1, out=c)
    return c


def _grid_size(lo: np.ndarray, hi: np.ndarray, kappa: float, num_classes: int) -> tuple[np.ndarray, float, int | None]:
    bins = grid_num_bins(lo, hi, kappa)
    log_K = math.log(num_classes) + float(np.sum(np.log(bins.astype(np.float64))))
    K: int | None = None
    if log_K < math.log(_K_INT_LIMIT) - 1.0:  # cheap pre-check, then exact integer product
        k = num_classes
        for b in bins.tolist():
            k *= int(b)
        K = k if k <= _K_INT_LIMIT else None
    return bins, log_K, K


def _check_args(kappa: float, num_classes: int) -> tuple[float, int]:
    kappa = float(kappa)
    if not (math.isfinite(kappa) and kappa > 0):
        raise UserInputError(f"kappa must be a positive finite number, got {kappa!r}")
    if int(num_classes) != num_classes or num_classes < 1:
        raise UserInputError(f"num_classes must be a positive integer, got {num_classes!r}")
    return kappa, int(num_classes)


def _range(range, d: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: A002
    try:
        lo_in, hi_in = range
    except (TypeError, ValueError):
        raise UserInputError(f"range must be a pair (lo, hi), got {range!r}") from None
    lo = np.broadcast_to(np.asarray(lo_in, dtype=np.float64), (d,)).copy()
    hi = np.broadcast_to(np.asarray(hi_in, dtype=np.float64), (d,)).copy()
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise UserInputError(f"range must be finite with hi > lo, got {range!r}")
    return lo, hi


def build_grid(*, kappa: float, input_dim: int, num_classes: int, range: tuple = (0.0, 1.0)) -> GridPartition:  # noqa: A002
    """The kappa-fine label-pure grid of side ``kappa`` over ``range`` for inputs of ``input_dim``
    features, before any sample is seen (cells get ids as :meth:`GridPartition.assign` meets them)."""
    kappa, num_classes = _check_args(kappa, num_classes)
    d = int(input_dim)
    if d < 1:
        raise UserInputError("input_dim must be >= 1")
    lo, hi = _range(range, d)
    bins, log_K, K = _grid_size(lo, hi, kappa, num_classes)
    return GridPartition(kappa=kappa, lo=lo, hi=hi, num_classes=num_classes, bins=bins, log_K=log_K, K=K)


def grid_partition(
    train_x,
    train_y,
    heldout_x=None,
    heldout_y=None,
    *,
    kappa: float,
    num_classes: int,
    range: tuple = (0.0, 1.0),  # noqa: A002 - the spec's word
) -> GridPartition:
    """Build the kappa-fine label-pure grid and the cell ids of training and held-out samples.

    Parameters
    ----------
    train_x, heldout_x : array-like ``[n, ...]`` (numpy or torch), flattened per sample;
        values must lie in ``range`` (pre-normalization units).
    train_y, heldout_y : integer labels in ``[0, num_classes)``.
    kappa : grid side (> 0), in the units of ``range``.
    num_classes : number of labels (cells are label x region, so K counts every label).
    range : ``(lo, hi)`` scalars, or per-dimension arrays; fixed in advance, default [0, 1].

    Returns a :class:`GridPartition` with ``train_cell`` / ``heldout_cell`` (int64, compact,
    jointly relabelled), ``K`` (int, or None beyond int64), ``log_K`` and ``record()``.
    """
    kappa, num_classes = _check_args(kappa, num_classes)
    tx = _as_2d(train_x, "train_x")
    d = tx.shape[1]
    if d < 1:
        raise UserInputError("train_x has zero features per sample")
    ty = _as_labels(train_y, tx.shape[0], num_classes, "train_y")
    if heldout_x is None:
        if heldout_y is not None:
            raise UserInputError("heldout_y given without heldout_x")
        hx = np.zeros((0, d))
        hy = np.zeros((0,), dtype=np.int64)
    else:
        hx = _as_2d(heldout_x, "heldout_x")
        if hx.shape[0] == 0:
            hx = hx.reshape(0, d)
        if hx.shape[1] != d:
            raise UserInputError(
                f"heldout_x has {hx.shape[1]} features per sample but train_x has {d}"
            )
        hy = _as_labels(heldout_y, hx.shape[0], num_classes, "heldout_y")

    lo, hi = _range(range, d)
    bins, log_K, K = _grid_size(lo, hi, kappa, num_classes)
    coords = _coords(np.concatenate([tx, hx], axis=0), lo, hi, kappa, bins)
    labels = np.concatenate([ty, hy])
    n = tx.shape[0]
    ids = np.empty(coords.shape[0], dtype=np.int64)
    table: dict = {}
    if coords.shape[0]:
        full = np.ascontiguousarray(np.concatenate([labels[:, None], coords], axis=1))
        rows = full.view(np.dtype((np.void, full.dtype.itemsize * full.shape[1]))).ravel()
        uniq, first, inv = np.unique(rows, return_index=True, return_inverse=True)
        # ids in order of first appearance (train first), deterministic and compact
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        ids = rank[inv.ravel()].astype(np.int64)
        for r, u in enumerate(uniq):
            table[u.tobytes()] = int(rank[r])
    part = GridPartition(
        kappa=kappa,
        lo=lo,
        hi=hi,
        num_classes=num_classes,
        bins=bins,
        log_K=log_K,
        K=K,
        train_cell=ids[:n],
        heldout_cell=ids[n:],
        _ids=table,
    )
    return part
