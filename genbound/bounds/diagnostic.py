"""Diagnostic results (``spec/bounds.md`` §4): estimates from the literature, not bounds.

They plug labelled held-out samples (or empirical stability) into terms that the theorems need as
suprema or population quantities, so they can fall below the true error; every one is printed
beside the held-out error with ``covers``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genbound.bounds.concentration import u_g, u_kaw
from genbound.bounds.counts import CellCounts
from genbound.bounds.sampling import hypergeom_upper, point_estimate
from genbound.bounds.stats import SampleStats


def _u_kaw(stats: SampleStats, counts: CellCounts, delta: float) -> float:
    return u_kaw(int(np.count_nonzero(counts.occupied)), stats.log_K, stats.n, delta)


def than_family(stats: SampleStats, counts: CellCounts, delta: float) -> dict[str, tuple[float | None, dict]]:
    """Than, Phan & Vu (2024/2025) recipe (``background-bounds.md`` §5.3), in 0-1 units.

    Kept cells have >= 1 training and >= 1 held-out sample; ``w_k = n_k / sum_kept n_k``;
    ``eps_k = max |l(z) - l(s)|`` and ``sig_k = t_k (1 - h_k) + (1 - t_k) h_k`` over (held-out z,
    train s) pairs of the cell; ``avg_k`` = mean loss over its train and held-out points::

        than_rob      = R_S + max_k eps_k + U_kaw
        than_localrob = R_S + sum w_k eps_k + U_kaw
        than_localsen = R_S + sum w_k sig_k + U_kaw
        than_localavg = sum w_k avg_k + U_g(a, a_o)

    with ``a_k = avg_k`` on kept cells, the training error elsewhere in T, ``a_o = max_{k in T} a_k``.
    """
    n_k, err_k, m_k, herr_k = counts.n_k, counts.err_k, counts.m_k, counts.herr_k
    R = float(err_k.sum()) / stats.n
    U = _u_kaw(stats, counts, delta)
    kept = (n_k > 0) & (m_k > 0)
    names = ("than_rob", "than_localrob", "than_localsen", "than_localavg")
    if not np.any(kept):
        none = {"kept_cells": 0}
        return {name: (None, none) for name in names}
    nk, ek, mk, hk = (a[kept].astype(np.float64) for a in (n_k, err_k, m_k, herr_k))
    w = nk / nk.sum()
    eps = (((nk - ek) > 0) & (hk > 0)) | ((ek > 0) & ((mk - hk) > 0))
    t, h = ek / nk, hk / mk
    sig = t * (1.0 - h) + (1.0 - t) * h
    avg = (ek + hk) / (nk + mk)
    occ = n_k > 0
    a = err_k[occ] / n_k[occ]
    a[kept[occ]] = avg
    a_o = float(a.max())
    Ug = u_g(n_k[occ].astype(np.float64), a, a_o, stats.log_K, stats.n, delta)
    common = {"train_error": R, "kept_cells": int(kept.sum()), "|T|": int(occ.sum()), "n": stats.n, "m": stats.m}
    rob, lrob, lsen, lavg = float(eps.max()), float(w @ eps), float(w @ sig), float(w @ avg)
    return {
        "than_rob": (R + rob + U, {**common, "robustness": rob, "concentration": U}),
        "than_localrob": (R + lrob + U, {**common, "robustness": lrob, "concentration": U}),
        "than_localsen": (R + lsen + U, {**common, "robustness": lsen, "concentration": U}),
        "than_localavg": (lavg + Ug, {**common, "main": lavg, "concentration": Ug, "a_o": a_o}),
    }


@dataclass(frozen=True)
class FlagCounts:
    """Per kappa, the flag-dependent counts of the stability diagnostics (spec §4, §8).

    ``observed``: the counts among the samples whose flags the diagnostics read (every training
    sample, unchecked ones counted as not stable, unless the flags are a uniform subsample: then
    the ``s`` checked ones); ``limit``: the full-sample count each diagnostic uses (``observed``,
    or its hypergeometric upper limit at ``1 - delta``); ``estimate``: ``observed`` scaled by n/s.
    Keys: ``b`` (correct and not stable), ``u`` (not stable), ``a`` (correct, not stable, in a cell
    with ``e_k = 1``; only with held-out data).
    """

    observed: dict[str, np.ndarray]
    limit: dict[str, np.ndarray]
    estimate: dict[str, np.ndarray]
    s: int
    delta: float | None  # the sampling confidence of ``limit`` (None: no sampling term)


def flag_counts(stats: SampleStats, counts: CellCounts, delta_s: float) -> FlagCounts:
    """Counts of spec §4 per kappa; with a uniform subsample (``stats.subsampled``) each count
    ``C`` is replaced by :func:`~genbound.bounds.sampling.hypergeom_upper` of the observed ``c``
    (population n, s draws) at ``1 - delta_s``. A cell selection (or none) has no sampling term:
    every training sample is counted, unchecked ones as not stable (the upper side)."""
    n = stats.n
    ok, bad = counts.stable_ok, counts.stable_err  # (C, J); zero rows for unchecked samples
    if counts.checked_k is not None:
        pop, pop_err, s = counts.checked_k, counts.checked_err_k, stats.s
    else:
        pop, pop_err, s = counts.n_k, counts.err_k, n
    correct = pop - pop_err
    obs = {"b": correct.sum() - ok.sum(axis=0), "u": pop.sum() - (ok + bad).sum(axis=0)}
    if stats.m:
        e = (counts.herr_k > 0) | (counts.m_k == 0)
        obs["a"] = correct[e].sum() - ok[e].sum(axis=0)
    obs = {k: np.asarray(v, dtype=np.int64) for k, v in obs.items()}
    if counts.checked_k is None:
        return FlagCounts(obs, obs, {k: v.astype(np.float64) for k, v in obs.items()}, s, None)
    return FlagCounts(obs, {k: hypergeom_upper(v, n, s, delta_s) for k, v in obs.items()},
                      {k: point_estimate(v, n, s) for k, v in obs.items()}, s, float(delta_s))


def stability_family(stats: SampleStats, counts: CellCounts, delta: float) -> list[dict[str, tuple[float, dict]]]:
    """Stability-scaled estimates at every kappa (``background-bounds.md`` §7.4; spec §4, §8).

    ``cu_k`` = correctly classified, **not** stable training samples of cell k; ``e_k = 1`` if the
    cell holds a misclassified held-out sample or none at all::

        stability_b = R_S + (1/n) sum_k cu_k + U_kaw           (robust training error + U)
        stability_a = R_S + (1/n) sum_k cu_k e_k + U_kaw
        stability_c = stability_a + (1/n) sum_k (#correct stable in k) e_k
                    = R_S + (1/n) sum_k (#correct in k) e_k + U_kaw   (flag-free)

    With the flags of a uniform subsample of s < n samples (spec §8 b) the counts
    ``C_b = sum_k cu_k`` and ``C_a = sum_k cu_k e_k`` are replaced by their exact hypergeometric
    upper limits at ``1 - stats.delta_s`` (:func:`flag_counts`), the point estimate in ``terms``;
    likewise ``unstable_fraction`` and ``robust_train_error = R_S + C_b / n``. ``stability_c``
    needs no sampling term. ``stability_a`` and ``stability_c`` need held-out data and are left
    out without it. One dict per kappa, computed for the whole grid at once.
    """
    n = stats.n
    R = float(counts.err_k.sum()) / n
    U = _u_kaw(stats, counts, delta)
    fc = flag_counts(stats, counts, stats.delta_s)
    E = int(counts.err_k.sum())
    if stats.m:
        e = (counts.herr_k > 0) | (counts.m_k == 0)
        rc = float((counts.n_k - counts.err_k)[e].sum()) / n
    out = []
    for j in range(stats.J):
        rb = float(fc.limit["b"][j]) / n
        common = {"train_error": R, "concentration": U, "unstable_fraction": float(fc.limit["u"][j]) / n,
                  "robust_train_error": float(E + fc.limit["b"][j]) / n, "n": n}
        if fc.delta is not None:
            common.update({"delta_s": fc.delta, "s": fc.s, "selection": "uniform",
                           "unstable_fraction_estimate": float(fc.estimate["u"][j]) / n,
                           "robust_train_error_estimate": (E + float(fc.estimate["b"][j])) / n})

        def sampled(key: str) -> dict:
            if fc.delta is None:
                return {}
            est = float(fc.estimate[key][j]) / n
            return {"point_estimate": R + est + U, "sampling_term": float(fc.limit[key][j]) / n - est,
                    "observed_count": int(fc.observed[key][j]), "count_limit": int(fc.limit[key][j])}

        fam = {"stability_b": (R + rb + U, {**common, "robustness": rb, **sampled("b")})}
        if stats.m:
            ra = float(fc.limit["a"][j]) / n
            fam["stability_a"] = (R + ra + U, {**common, "robustness": ra, "m": stats.m, **sampled("a")})
            fam["stability_c"] = (R + rc + U, {**common, "robustness": rc, "m": stats.m})
        out.append(fam)
    return out


def best_over_kappa_subsampled(stats: SampleStats, counts: CellCounts, delta: float) -> list[dict]:
    """Smallest ``stability_b`` / ``stability_a`` over the kappa grid for a uniform subsample
    (spec §8 b): each count limit at ``1 - delta_s / J`` so that all J limits hold at once with
    probability >= 1 - delta_s and the minimum inherits that. Empty unless ``stats.subsampled``."""
    if not stats.subsampled or stats.J == 0:
        return []
    n, J = stats.n, stats.J
    R = float(counts.err_k.sum()) / n
    U = _u_kaw(stats, counts, delta)
    fc = flag_counts(stats, counts, stats.delta_s / J)
    out = []
    for name, key in (("stability_b", "b"), ("stability_a", "a")):
        if key not in fc.limit:
            continue
        values = R + fc.limit[key] / n + U
        j = int(np.argmin(values))
        out.append({"model": stats.model, "name": name, "kind": "diagnostic", "value": float(values[j]),
                    "kappa": float(stats.kappas[j]), "delta_s": stats.delta_s / J, "s": stats.s, "n": n,
                    "note": (f"minimum over the kappa grid of a subsampled diagnostic: each count limit at "
                             f"1 - delta_s/J = 1 - {stats.delta_s:g}/{J}, so all hold at once at 1 - {stats.delta_s:g}; "
                             "an estimate, not a bound")})
    return out
