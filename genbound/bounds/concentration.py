"""Concentration terms of ``spec/bounds.md`` §2 and the Clopper–Pearson limit (loss bound 1).

Every function is a pure numpy expression of counts. ``log_K`` (natural log of the number of
cells K) is used wherever K enters through ``L = ln(c K / delta)``, so that astronomically large
partitions (kappa-fine grids in high dimension) stay finite where the theorem allows; where K
enters linearly the term is ``inf`` and the caller reports the value as null.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

SQRT2 = math.sqrt(2.0)
LN2 = math.log(2.0)


def log_confidence(log_K: float, delta: float, factor: float = 2.0) -> float:
    """``L = ln(factor * K / delta)`` computed from ``log_K = ln K``."""
    return math.log(factor) + log_K - math.log(delta)


def k_as_float(log_K: float) -> float:
    """K as a float, ``inf`` when it overflows."""
    return math.exp(log_K) if log_K < 709.0 else math.inf


def u_xm(log_K: float, n: int, delta: float) -> float:
    """Xu & Mannor (2012), Thm 3, with loss bound M = 1.

    ``U_xm(K, n, delta) = sqrt((2 K ln 2 + 2 ln(1/delta)) / n)``; ``inf`` when K overflows.
    """
    K = k_as_float(log_K)
    return math.sqrt((2.0 * K * LN2 + 2.0 * math.log(1.0 / delta)) / n)


def u_kaw(T: int, log_K: float, n: int, delta: float) -> float:
    """Kawaguchi, Deng, Luh & Huang (ICML 2022), Thm 1 with zeta = 1.

    ``U_kaw(|T|, K, n, delta) = (sqrt(2)+1) sqrt(|T| L / n) + 2 |T| L / n``, ``L = ln(2K/delta)``.
    """
    L = log_confidence(log_K, delta)
    return (SQRT2 + 1.0) * math.sqrt(T * L / n) + 2.0 * T * L / n


def u_g(n_k: np.ndarray, a_k: np.ndarray, a_o: float, log_K: float, n: int, delta: float) -> float:
    """Refined per-cell multinomial term (Kawaguchi et al. 2022, Lemma 7 form; Than et al. ``g3``).

    ``U_g(a, a_o) = sqrt(L)/n * sum_{k in T} sqrt(n_k) (a_o + sqrt(2) a_k)
    + 2L/n * (a_o |T| + sum_{k in T} a_k)``, ``L = ln(2K/delta)``. ``n_k`` and ``a_k`` hold the
    occupied cells T only.
    """
    L = log_confidence(log_K, delta)
    T = n_k.size
    s = float(np.sum(np.sqrt(n_k) * (a_o + SQRT2 * a_k)))
    return math.sqrt(L) / n * s + 2.0 * L / n * (a_o * T + float(np.sum(a_k)))


def u_m(n_k: np.ndarray, a_k: np.ndarray, a_o: float, log_K: float, n: int, delta: float) -> float:
    """Lemma M (``background-bounds.md`` §4; Chernoff lower + Bernstein upper tail per cell).

    ``U_M(a, a_o) = sqrt(2L)/n * sum_{k in T} sqrt(n_k) (a_k + a_o)
    + L/n * (2 sum_{k in T} a_k + (2/3) a_o |T|)``, ``L = ln(2K/delta)``. ``n_k``, ``a_k``: the
    occupied cells T only.
    """
    L = log_confidence(log_K, delta)
    T = n_k.size
    s = float(np.sum(np.sqrt(n_k) * (a_k + a_o)))
    return math.sqrt(2.0 * L) / n * s + L / n * (2.0 * float(np.sum(a_k)) + (2.0 / 3.0) * a_o * T)


def clopper_pearson_upper(errors: np.ndarray | int, trials: np.ndarray | int, alpha: float | np.ndarray) -> np.ndarray:
    """One-sided Clopper–Pearson upper limit at confidence ``1 - alpha``.

    ``beta.ppf(1 - alpha, e + 1, m - e)``, and 1 where ``e = m`` (including ``m = 0``). Computed as
    ``beta.isf(alpha, ...)`` so that tiny ``alpha`` (``delta / 2K`` with large K) keeps its
    precision instead of rounding ``1 - alpha`` to 1.
    """
    e = np.asarray(errors, dtype=np.float64)
    m = np.asarray(trials, dtype=np.float64)
    e, m, a = np.broadcast_arrays(e, m, np.asarray(alpha, dtype=np.float64))
    out = np.ones(e.shape, dtype=np.float64)
    ok = e < m
    if np.any(ok):
        out[ok] = stats.beta.isf(a[ok], e[ok] + 1.0, m[ok] - e[ok])
    return out
