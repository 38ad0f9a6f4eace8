"""Low-dimensional synthetic tasks with a non-linear boundary and a known law.

x ~ Uniform([0, 1]^d); the clean label is a fixed rule ``c(x)`` and the observed label is
``c(x)`` flipped (binary) with probability ``label_noise``, independently of x. For any classifier
h the true error is therefore exactly

    R(h) = eta + (1 - 2 eta) * P_x(h(x) != c(x)),        eta = label_noise,

so it can be estimated from fresh *unlabelled* draws of x against the clean rule (lower variance
than noisy labels); :func:`true_error` does that with a Clopper–Pearson interval.

Rules (``kind``):

* ``circle``: ``c(x) = 1[ ||(x_1, x_2) - (0.5, 0.5)||_2 < 0.3 ]`` (a disc; other coordinates are
  nuisance features the rule ignores);
* ``sine``: ``c(x) = 1[ x_2 > 0.5 + 0.2 sin(2 pi x_1) ]`` (other coordinates are nuisance).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import beta

from genbound.errors import UserInputError

__all__ = ["LOWDIM_RULES", "clean_rule", "sample_lowdim", "true_error"]


def _circle(x: np.ndarray) -> np.ndarray:
    return (((x[:, 0] - 0.5) ** 2 + (x[:, 1] - 0.5) ** 2) < 0.3**2).astype(np.int64)


def _sine(x: np.ndarray) -> np.ndarray:
    return (x[:, 1] > 0.5 + 0.2 * np.sin(2.0 * np.pi * x[:, 0])).astype(np.int64)


LOWDIM_RULES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"circle": _circle, "sine": _sine}


def clean_rule(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """The clean labelling rule ``c(x)`` of ``kind`` (``circle`` or ``sine``)."""
    if kind not in LOWDIM_RULES:
        raise UserInputError(f"unknown low-dimensional rule {kind!r}; choose one of {sorted(LOWDIM_RULES)}")
    return LOWDIM_RULES[kind]


def sample_lowdim(n: int, d: int, kind: str, label_noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` i.i.d. draws: inputs float32 ``[n, d]`` in [0, 1], noisy labels and clean labels (int64)."""
    if n < 1 or d < 2:
        raise UserInputError(f"need n >= 1 and d >= 2, got n={n}, d={d}")
    if not 0.0 <= label_noise < 0.5:
        raise UserInputError(f"label_noise must be in [0, 0.5), got {label_noise}")
    rule = clean_rule(kind)
    rng = np.random.default_rng(seed)
    x = rng.random((n, d), dtype=np.float32)
    clean = rule(x.astype(np.float64))
    flip = rng.random(n) < label_noise
    y = np.where(flip, 1 - clean, clean).astype(np.int64)
    return x, y, clean


def true_error(predict: Callable[[np.ndarray], np.ndarray], d: int, kind: str, label_noise: float, *,
               draws: int = 1_000_000, seed: int = 12345, chunk: int = 200_000, alpha: float = 0.001) -> dict:
    """True error of a classifier on the task, from ``draws`` fresh inputs (formula in the module doc).

    ``predict`` maps float32 ``[k, d]`` inputs to int labels. Returns ``{"value", "low", "high",
    "draws", "disagreement", "method"}``; ``low``/``high`` is the two-sided Clopper–Pearson
    interval at ``1 - alpha`` of the disagreement, mapped through the formula.
    """
    rule = clean_rule(kind)
    rng = np.random.default_rng(seed)
    dis, done = 0, 0
    while done < draws:
        k = min(chunk, draws - done)
        x = rng.random((k, d), dtype=np.float32)
        dis += int(np.count_nonzero(np.asarray(predict(x)) != rule(x.astype(np.float64))))
        done += k
    q = dis / draws
    lo = 0.0 if dis == 0 else float(beta.ppf(alpha / 2, dis, draws - dis + 1))
    hi = 1.0 if dis == draws else float(beta.ppf(1 - alpha / 2, dis + 1, draws - dis))
    f = lambda p: label_noise + (1.0 - 2.0 * label_noise) * p  # noqa: E731
    return {"value": f(q), "low": f(lo), "high": f(hi), "draws": int(draws), "disagreement": q,
            "method": f"eta + (1 - 2 eta) * P(h != clean rule), P from {draws} fresh inputs; "
                      f"interval: Clopper-Pearson at {1 - alpha:g}"}
