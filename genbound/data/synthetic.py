"""Synthetic sources with a known distribution (for tests and sanity checks).

Both generators are exactly reproducible from their seed and document their law, so the Bayes
error (and hence the true error of the teacher rule) is known.
"""

from __future__ import annotations

import numpy as np

from genbound.data.source import TensorSource
from genbound.errors import UserInputError


def _check(n: int, shape: tuple[int, ...], num_classes: int) -> None:
    if n < 1:
        raise UserInputError(f"n must be >= 1; got {n}")
    if not shape or any(s < 1 for s in shape):
        raise UserInputError(f"shape must be positive, e.g. (1, 8, 8); got {shape}")
    if num_classes < 2:
        raise UserInputError(f"num_classes must be >= 2; got {num_classes}")


def make_linear_teacher(n: int, *, shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 2,
                        label_noise: float = 0.0, seed: int = 0) -> tuple[TensorSource, dict]:
    """x ~ Uniform([0,1]^d); y = argmax_c (W x + b)_c, then flipped to a uniformly random other
    class with probability ``label_noise``.

    ``W`` has i.i.d. N(0, 1/d) entries and ``b = -W @ (0.5 * 1)`` (the boundary passes through the
    cube's centre), both drawn from ``seed``. The Bayes error of the teacher is ``label_noise``.
    Returns the source and ``{"W", "b", "seed", "label_noise"}``.
    """
    _check(n, shape, num_classes)
    if not 0.0 <= label_noise < 1.0:
        raise UserInputError(f"label_noise must be in [0, 1); got {label_noise}")
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    w = rng.normal(0.0, 1.0 / np.sqrt(d), size=(num_classes, d)).astype(np.float32)
    b = (-w @ np.full(d, 0.5, dtype=np.float32)).astype(np.float32)
    x = rng.random((n, d), dtype=np.float32)
    y = np.argmax(x @ w.T + b, axis=1).astype(np.int64)
    flip = rng.random(n) < label_noise
    y[flip] = (y[flip] + rng.integers(1, num_classes, size=int(flip.sum()))) % num_classes
    src = TensorSource(x.reshape((n, *shape)), y, name="synthetic-linear", num_classes=num_classes)
    src.provenance = {"generator": "make_linear_teacher", "seed": int(seed), "label_noise": float(label_noise)}
    return src, {"W": w, "b": b, "seed": int(seed), "label_noise": float(label_noise)}


def make_prototypes(n: int, *, shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10,
                    spread: float = 0.25, seed: int = 0) -> TensorSource:
    """Class prototypes plus bounded uniform noise: y ~ Uniform{0..C-1}, x = p_y + u.

    Prototypes ``p_c`` are i.i.d. Uniform([spread, 1 - spread]^d) and ``u ~ Uniform([-spread,
    spread]^d)``, so every pixel stays in [0, 1] without clipping and the law is exactly known.
    Balanced classes up to sampling noise.
    """
    _check(n, shape, num_classes)
    if not 0.0 <= spread <= 0.5:
        raise UserInputError(f"spread must be in [0, 0.5]; got {spread}")
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    protos = rng.uniform(spread, 1.0 - spread, size=(num_classes, d)).astype(np.float32)
    y = rng.integers(0, num_classes, size=n).astype(np.int64)
    x = protos[y] + rng.uniform(-spread, spread, size=(n, d)).astype(np.float32)
    x = np.clip(x, 0.0, 1.0)  # no-op up to float rounding
    src = TensorSource(x.reshape((n, *shape)), y, name="synthetic-prototypes", num_classes=num_classes)
    src.provenance = {"generator": "make_prototypes", "seed": int(seed), "spread": float(spread)}
    return src
