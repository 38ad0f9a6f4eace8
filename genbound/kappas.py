"""Kappa grids, validated one way (no torch here: the configuration and the numpy-only layers use it).

A kappa grid is a list of radii in [0, 1] pixel units before normalization: finite, >= 0 (``> 0``
with ``positive``), at most 1 for ``linf`` (pixels live in [0, 1]) and at most ``sqrt(dim)`` for
``l2`` (the cube's diameter); other kinds (Gaussian noise) are not bounded above. The layers take
a **strictly ascending** grid (their flags carry flips up the grid and proofs down it) and refuse
any other; the configuration, where users write a set of radii, sorts it and drops duplicates
(``sort=True``), as the demo always did.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from genbound.errors import UserInputError

__all__ = ["check_kappas"]


def check_kappas(kappas: Iterable[float], *, norm: str = "linf", dim: int | None = None, positive: bool = False,
                 sort: bool = False) -> np.ndarray:
    """Validate a kappa grid (module docstring); returns float64[J], strictly ascending."""
    upper = 1.0 if norm == "linf" else (float(np.sqrt(dim)) if norm == "l2" and dim else float("inf"))
    try:
        k = np.asarray(list(kappas) if not isinstance(kappas, np.ndarray) else kappas, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise UserInputError(f"kappas must be a list of numbers (radii in [0,1] pixel units); got {kappas!r}") from None
    if k.size == 0:
        raise UserInputError("the kappa grid is empty; give at least one radius, e.g. kappas=[2/255]")
    if not np.all(np.isfinite(k)) or np.any(k < 0) or np.any(k > upper) or (positive and np.any(k == 0)):
        raise UserInputError(f"{norm} kappas must lie in {'(' if positive else '['}0, {upper:.4g}] (pixel units before "
                             f"normalization); got {k.tolist()}")
    if sort:
        return np.unique(k)
    if np.any(np.diff(k) <= 0):
        raise UserInputError(f"kappas must be strictly ascending; got {k.tolist()} (sort them and drop duplicates)")
    return k
