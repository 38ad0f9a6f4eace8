"""Diagnostic results (``spec/bounds.md`` §4): estimates from the literature, not bounds.

They plug labelled held-out samples (or empirical stability) into terms that the theorems need as
suprema or population quantities, so they can fall below the true error; every one is printed
beside the held-out error with ``covers``.
"""

from __future__ import annotations

import numpy as np

from genbound.bounds.concentration import u_g, u_kaw
from genbound.bounds.counts import CellCounts
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


def stability_family(stats: SampleStats, counts: CellCounts, delta: float) -> list[dict[str, tuple[float, dict]]]:
    """Stability-scaled estimates at every kappa (``background-bounds.md`` §7.4; spec §4).

    ``cu_k`` = correctly classified, **not** stable training samples of cell k; ``e_k = 1`` if the
    cell holds a misclassified held-out sample or none at all::

        stability_b = R_S + (1/n) sum_k cu_k + U_kaw           (robust training error + U)
        stability_a = R_S + (1/n) sum_k cu_k e_k + U_kaw
        stability_c = stability_a + (1/n) sum_k (#correct stable in k) e_k

    ``stability_a`` and ``stability_c`` need held-out data and are left out without it. One dict
    per kappa, computed for the whole grid at once.
    """
    n = stats.n
    R = float(counts.err_k.sum()) / n
    U = _u_kaw(stats, counts, delta)
    ok = counts.stable_ok  # (C, J)
    cu = (counts.n_k - counts.err_k)[:, None] - ok
    unstable, robust_error = counts.stability_rates()
    if stats.m:
        e = (counts.herr_k > 0) | (counts.m_k == 0)
        ra_all = cu[e].sum(axis=0) / n
        rc_all = ok[e].sum(axis=0) / n
    out = []
    for j in range(stats.J):
        rb = float(robust_error[j]) - R
        common = {"train_error": R, "concentration": U, "unstable_fraction": float(unstable[j]),
                  "robust_train_error": float(robust_error[j]), "n": n}
        fam = {"stability_b": (R + rb + U, {**common, "robustness": rb})}
        if stats.m:
            ra, rc = float(ra_all[j]), float(rc_all[j])
            fam["stability_a"] = (R + ra + U, {**common, "robustness": ra, "m": stats.m})
            fam["stability_c"] = (R + ra + U + rc, {**common, "robustness": ra + rc, "m": stats.m})
        out.append(fam)
    return out
