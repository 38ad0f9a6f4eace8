"""Statistics of a study: correlations of WCI with the robust gap, the robust-overfitting verdict."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def correlations(x: list[float | None], y: list[float | None]) -> dict[str, float | None]:
    """Pearson, Spearman and Kendall correlations of paired values (pairs with a null dropped).

    ``None`` where undefined: fewer than 3 pairs or a constant series.
    """
    from scipy import stats

    pairs = [(a, b) for a, b in zip(x, y) if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    out: dict[str, float | None] = {"n": len(pairs), "pearson": None, "spearman": None, "kendall": None}  # type: ignore[dict-item]
    if len(pairs) < 3:
        return out
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    for name, fn in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr), ("kendall", stats.kendalltau)):
        v = float(fn(a, b)[0])
        out[name] = v if math.isfinite(v) else None
    return out


def wci_gap_correlations(run: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Correlations of ``wci`` with ``gap_acc`` over epochs: overall, then per learning-rate phase
    (``phase`` = number of planned decays at or before the epoch)."""
    rows = [{"run": run, "phase": "all", **correlations([r["wci"] for r in records], [r["gap_acc"] for r in records])}]
    for ph in sorted({r.get("phase", 0) for r in records}):
        sel = [r for r in records if r.get("phase", 0) == ph]
        rows.append({"run": run, "phase": int(ph), **correlations([r["wci"] for r in sel], [r["gap_acc"] for r in sel])})
    return rows


def binomial_half_width(p: float, m: int) -> float:
    """95 % normal-approximation half-width of an accuracy ``p`` on ``m`` examples: ``1.96 sqrt(p(1-p)/m)``."""
    return 1.96 * math.sqrt(max(p * (1 - p), 0.0) / m)


def robust_overfitting(records: list[dict[str, Any]], decay_epochs: list[int], m_test: int) -> dict[str, Any]:
    """The verdict of the study's definition, computed from the records.

    Robust overfitting is **observed** when (1) the robust test accuracy peaks at or after the first
    decay, (2) it then falls to the last epoch by more than the 95 % binomial half-width
    ``1.96 sqrt(p(1-p)/m_test)`` at the peak accuracy ``p``, and (3) the robust train accuracy keeps
    rising after the peak: its last value exceeds its value at the peak epoch and its Spearman
    correlation with the epoch over ``[peak, last]`` is positive.
    """
    te = [r["test_rob_acc"] for r in records]
    tr = [r["train_rob_acc"] for r in records]
    k = int(np.argmax(te))
    peak, last = te[k], te[-1]
    hw = binomial_half_width(peak, m_test)
    first = decay_epochs[0] if decay_epochs else None
    after = first is not None and records[k]["epoch"] >= first
    drop = peak - last
    trend = correlations([float(r["epoch"]) for r in records[k:]], tr[k:])["spearman"]
    rising = tr[-1] > tr[k] and (trend is not None and trend > 0)
    return {
        "observed": bool(after and drop > hw and rising),
        "definition": "test robust acc peaks at/after the first decay, then falls by > 1.96 sqrt(p(1-p)/m_test) "
                      "while train robust acc keeps rising (last > at peak, Spearman vs epoch > 0 after the peak)",
        "first_decay": first,
        "peak_epoch": int(records[k]["epoch"]),
        "peak_test_rob_acc": peak,
        "last_test_rob_acc": last,
        "drop": drop,
        "half_width": hw,
        "m_test": int(m_test),
        "peak_after_decay": bool(after),
        "train_rob_acc_at_peak": tr[k],
        "train_rob_acc_last": tr[-1],
        "train_trend_spearman_after_peak": trend,
        "train_rising": bool(rising),
    }
