"""Real tabular data sets that ship with scikit-learn (iris, wine, breast cancer), in [0, 1].

A kappa-fine grid needs a fixed input range. These features have no published fixed range, so the
range is taken from a **scaling split** disjoint from the training and held-out samples (never
min-max fitted on the training set, spec §2): per feature, ``[min - m span, max + m span]`` of the
scaling split (``m = margin``), then ``x -> clip((x - lo) / (hi - lo), 0, 1)``. That map is fixed
before the training sample is drawn (it depends only on the disjoint split), so a partition of
its output space is data-independent, and the classifier, the partition and the bound all speak
about the same transformed distribution.
"""

from __future__ import annotations

import numpy as np

from genbound.errors import UserInputError

__all__ = ["TABULAR", "load_tabular", "fit_range", "apply_range", "three_way_split"]

TABULAR = {"iris": "load_iris", "wine": "load_wine", "breast_cancer": "load_breast_cancer"}


def load_tabular(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw features float64 ``[N, d]``, labels int64, number of classes (from scikit-learn, offline)."""
    if name not in TABULAR:
        raise UserInputError(f"unknown tabular data set {name!r}; choose one of {sorted(TABULAR)}")
    import sklearn.datasets as ds

    b = getattr(ds, TABULAR[name])()
    y = np.asarray(b.target, dtype=np.int64)
    return np.asarray(b.data, dtype=np.float64), y, int(y.max()) + 1


def three_way_split(y: np.ndarray, fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, ...]:
    """Seeded stratified split of indices into (scaling, train, held-out) by ``fractions``."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    f = np.asarray(fractions, dtype=np.float64)
    if f.size != 3 or np.any(f <= 0) or abs(f.sum() - 1) > 1e-9:
        raise UserInputError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        a = int(round(f[0] * idx.size))
        b = a + int(round(f[1] * idx.size))
        for p, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            p.extend(chunk.tolist())
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def fit_range(x_scaling: np.ndarray, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature range ``[min - margin*span, max + margin*span]`` of the **scaling split** only."""
    if x_scaling.shape[0] < 2:
        raise UserInputError("the scaling split needs at least 2 samples")
    lo, hi = x_scaling.min(0), x_scaling.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return lo - margin * span, hi + margin * span


def apply_range(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``clip((x - lo) / (hi - lo), 0, 1)`` as float32 (a fixed map, applied to every split alike)."""
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
