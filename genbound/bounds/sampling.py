"""Stability checked on a uniform random subsample: exact hypergeometric limits (``spec/bounds.md`` §8 b).

When the stability flags of only ``s`` of the ``n`` training samples are computed, drawn uniformly
without replacement from a seed fixed before any flag was seen, the number ``c`` of subsampled
samples with a flag-dependent 0/1 property (e.g. "correctly classified and not stable") is
hypergeometric: population ``n``, ``C`` successes (the unknown full-sample count), ``s`` draws.
Every flag-dependent diagnostic replaces ``C`` by the exact one-sided upper confidence limit of
:func:`hypergeom_upper` and reports the point estimate ``c n / s`` beside it.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.stats import hypergeom

__all__ = ["hypergeom_upper", "point_estimate"]


def hypergeom_upper(c: int | np.ndarray, n: int, s: int, delta: float) -> np.ndarray:
    """Exact one-sided upper confidence limit at ``1 - delta`` for the number ``C`` of successes in a
    population of ``n`` from ``c`` successes in ``s`` draws without replacement.

    The limit is the largest ``C`` consistent with the observed ``c``::

        C_U(c) = max { C in {c, ..., n - s + c} :
                       P_C(X <= c) = sum_{i=0}^{c} binom(C, i) binom(n - C, s - i) / binom(n, s) > delta }

    (``X ~ Hypergeometric(n, C, s)``; ``scipy.stats.hypergeom.cdf(c, n, C, s)``). ``P_C(X <= c)``
    falls as ``C`` grows, so the set is an interval starting at ``c`` (where it is 1) and a binary
    search finds its end. Coverage: ``C_U(X) < C`` iff ``P_C(X' <= X) <= delta``, an event of
    probability at most ``delta`` under ``C`` (the exact-test construction, as Clopper–Pearson
    for the binomial). With ``s = n`` the sample is the population and ``C_U = c`` exactly.
    The tail is evaluated in floating point: at an exact tie ``P_C(X <= c) = delta`` the limit may
    come out one larger, the conservative side (coverage only grows).

    Parameters
    ----------
    c:
        Observed successes in the subsample (int or int array, ``0 <= c <= s``).
    n, s:
        Population size and subsample size, ``1 <= s <= n``.
    delta:
        One-sided failure probability in (0, 1).
    """
    n, s = int(n), int(s)
    if not 1 <= s <= n:
        raise ValueError(f"need 1 <= s <= n, got s={s}, n={n}")
    if not 0.0 < float(delta) < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    c = np.asarray(c, dtype=np.int64)
    if np.any(c < 0) or np.any(c > s):
        raise ValueError(f"observed counts must lie in [0, s={s}]")
    if s == n:
        return c.copy()
    # one run asks for the same counts once per partition and result name: solve each set once
    flat = _upper_limits(tuple(int(v) for v in c.ravel()), n, s, float(delta))
    return np.array(flat, dtype=np.int64).reshape(c.shape)


@functools.lru_cache(maxsize=1024)
def _upper_limits(c_values: tuple[int, ...], n: int, s: int, delta: float) -> tuple[int, ...]:
    """The binary search of :func:`hypergeom_upper` for every count at once (memoized)."""
    c = np.asarray(c_values, dtype=np.int64)
    lo = c.copy()  # P_c(X <= c) = 1 > delta: always inside the set
    hi = c + (n - s)  # at least s - c failures are known: C <= n - (s - c)
    while np.any(lo < hi):
        mid = (lo + hi + 1) // 2
        ok = hypergeom.cdf(c, n, mid, s) > delta
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid - 1)
    return tuple(int(v) for v in lo)


def point_estimate(c: int | np.ndarray, n: int, s: int) -> np.ndarray:
    """The unbiased estimate ``c n / s`` of the full-sample count ``C``."""
    return np.asarray(c, dtype=np.float64) * (float(n) / float(s))
