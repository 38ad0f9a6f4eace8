"""Certified results (``spec/bounds.md`` §3): true high-probability upper bounds on the 0-1 error.

Each function takes the validated statistics, their per-cell counts and delta, and returns the
value with its decomposition. Assumptions are attached by :mod:`genbound.bounds.suite`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from genbound.bounds.concentration import (
    LN2,
    clopper_pearson_upper,
    log_confidence,
    u_kaw,
    u_m,
    u_xm,
)
from genbound.bounds.counts import CellCounts
from genbound.bounds.stats import SampleStats
from genbound.errors import UserInputError


@dataclass(frozen=True)
class Proof:
    """Which cells are proven at one kappa (``spec/bounds.md`` §3, ``eps_cert`` and ``M_k``)."""

    provable: bool  # label-pure, diameter <= kappa, sound stability
    reason: str  # why cells cannot be proven (empty when provable)
    zero_cells: np.ndarray  # bool[C]: M_k = 0 (a correct training sample proven stable)
    eps_cert: int  # 0 iff provable and every occupied cell holds a proven-stable training sample


def proof_at(stats: SampleStats, counts: CellCounts, j: int | None) -> Proof:
    """Proven cells at ``kappas[j]`` (``j=None``: no stability information, nothing proven)."""
    C = counts.n_k.size
    nothing = np.zeros(C, dtype=bool)
    reasons = []
    if j is None:
        reasons.append("no stability flags: no cell is proven")
    else:
        kappa = float(stats.kappas[j])
        if stats.subsampled:
            reasons.append(f"the flags are a uniform subsample ({stats.s} of {stats.n}; spec §8 b): certified results "
                           "do not read them")
        if not stats.stability_sound:
            reasons.append(f"stability method {stats.stability_method!r} is not sound")
        if not stats.label_pure:
            reasons.append("the partition is not label-pure")
        if stats.max_cell_diameter is None:
            reasons.append("max_cell_diameter is unknown")
        elif stats.max_cell_diameter > kappa:
            reasons.append(f"max_cell_diameter {stats.max_cell_diameter:g} > kappa {kappa:g}")
    if reasons:
        return Proof(False, "; ".join(reasons) + " (eps_cert = 1, M_k = 1)", nothing, 1)
    ok, bad = counts.stable_ok[:, j], counts.stable_err[:, j]
    _check_certificate(stats, counts, j)
    zero = ok > 0
    occupied = counts.occupied
    eps = 0 if bool(np.all((ok + bad)[occupied] > 0)) else 1
    return Proof(True, "", zero, eps)


def _check_certificate(stats: SampleStats, counts: CellCounts, j: int) -> None:
    """A proven cell has constant loss: samples of the other loss value there contradict it."""
    ok, bad = counts.stable_ok[:, j], counts.stable_err[:, j]
    correct, hcorrect = counts.n_k - counts.err_k, counts.m_k - counts.herr_k
    clash = ((ok > 0) & ((counts.err_k > 0) | (counts.herr_k > 0))) | ((bad > 0) & ((correct > 0) | (hcorrect > 0)))
    if np.any(clash):
        k = int(np.flatnonzero(clash)[0])
        raise UserInputError(
            f"statistics contradict the certificate at kappa={stats.kappas[j]:g}: a label-pure cell of diameter "
            f"<= kappa holds a training sample proven stable (sound method {stats.stability_method!r}), so the loss "
            f"is constant on it, yet the cell also holds samples with the other loss ({int(np.sum(clash))} such "
            f"cells, e.g. compact cell {k}); check that cells, losses and stability flags come from the same model "
            f"and preprocessing"
        )


def holdout_cp(stats: SampleStats, delta: float) -> tuple[float, dict]:
    """One-sided Clopper–Pearson upper limit of the held-out error at confidence 1 - delta.

    ``beta.ppf(1 - delta, e + 1, m - e)``, 1 if ``e = m`` (Clopper & Pearson 1934).
    """
    e = int(stats.heldout_loss.sum(dtype=np.int64))
    value = float(clopper_pearson_upper(e, stats.m, delta))
    return value, {"heldout_errors": e, "m": stats.m, "heldout_error": e / stats.m}


def xu_mannor(stats: SampleStats, counts: CellCounts, proof: Proof, delta: float) -> tuple[float, dict]:
    """Xu & Mannor (2012), Thm 3: ``R_S + eps_cert + U_xm(K, n, delta)``."""
    R = _train_error(stats, counts)
    U = u_xm(stats.log_K, stats.n, delta)
    return R + proof.eps_cert + U, {"train_error": R, "robustness": float(proof.eps_cert), "concentration": U, "n": stats.n}


def kawaguchi(stats: SampleStats, counts: CellCounts, proof: Proof, delta: float) -> tuple[float, dict]:
    """Kawaguchi et al. (2022), Thm 1 with zeta = 1: ``R_S + eps_cert + U_kaw(|T|, K, n, delta)``."""
    R = _train_error(stats, counts)
    T = int(np.count_nonzero(counts.occupied))
    U = u_kaw(T, stats.log_K, stats.n, delta)
    return R + proof.eps_cert + U, {
        "train_error": R, "robustness": float(proof.eps_cert), "concentration": U, "|T|": T, "n": stats.n,
    }


def theorem_n(stats: SampleStats, counts: CellCounts, proofs: list[Proof], delta: float) -> list[tuple[float, dict]]:
    """Stability-scaled local robustness bound (``background-bounds.md`` §7.3, forms of spec §3).

    With ``M_k in {0,1}`` (0 only for proven cells), ``L1 = L2 = ln(3K/delta)``::

        N1 = sum_{k in T} M_k (n_k/n + sqrt(2 n_k L1)/n + 2 L1/n) + (K - |T|) 2 L1 / n
        N2 = sum_{k in T} (n_k/n) M_k + sum_{k: M_k=0} (sqrt(2 n_k L2)/n + 2 L2/(3n))
        N3 = sum_{k in T} (n_k/n) M_k + (1/2) sqrt((2 K ln 2 + 2 ln(3/delta)) / n)

    each at confidence 1 - delta/3; the value is ``min(N1, N2, N3)``, valid at 1 - delta. One
    (value, terms) pair per proof (one per kappa), computed for the whole grid at once.
    """
    n = stats.n
    occ = counts.occupied
    T = int(np.count_nonzero(occ))
    R = _train_error(stats, counts)
    n_k = counts.n_k.astype(np.float64)
    L = log_confidence(stats.log_K, delta, factor=3.0)
    zero = np.stack([p.zero_cells for p in proofs], axis=1).astype(np.float64)  # (C, J): M_k = 0
    charged = occ[:, None] * (1.0 - zero)  # (C, J): occupied cells with M_k = 1
    per_cell_n1 = n_k / n + np.sqrt(2.0 * n_k * L) / n + 2.0 * L / n
    per_cell_n2 = np.sqrt(2.0 * n_k * L) / n + 2.0 * L / (3.0 * n)
    main = n_k @ charged / n
    n1 = per_cell_n1 @ charged + _k_minus(stats, T) * 2.0 * L / n
    n2 = main + per_cell_n2 @ zero
    n3 = main + 0.5 * math.sqrt((2.0 * _k_float(stats) * LN2 + 2.0 * math.log(3.0 / delta)) / n)
    proven_cells = zero.sum(axis=0)
    proven_mass = n_k @ zero / n
    out = []
    for j in range(len(proofs)):
        value = min(float(n1[j]), float(n2[j]), float(n3[j]))
        out.append((value, {
            "train_error": R, "main": float(main[j]), "robustness": float(main[j]) - R,
            "concentration": value - float(main[j]), "N1": float(n1[j]), "N2": float(n2[j]), "N3": float(n3[j]),
            "proven_cells": int(proven_cells[j]), "proven_fraction": float(proven_mass[j]), "|T|": T, "n": n,
            "delta_split": "delta/3 to each of N1, N2, N3",
        }))
    return out


def theorem_h(stats: SampleStats, counts: CellCounts, delta: float) -> tuple[float, dict]:
    """Held-out hybrid (``background-bounds.md`` §7.3, Theorem H; spec §3).

    ``sum_{k in T} (n_k/n) A_k + U_M(a = A, a_o = 1)`` with U_M at delta/2 (``L = ln(4K/delta)``)
    and ``A_k`` the Clopper–Pearson upper limit at 1 - delta/(2K) of the held-out errors of cell k
    (1 without held-out samples or when every one is wrong).
    """
    n = stats.n
    occ = counts.occupied
    n_k = counts.n_k[occ].astype(np.float64)
    e_k, m_k = counts.herr_k[occ], counts.m_k[occ]
    alpha = math.exp(math.log(delta) - math.log(2.0) - stats.log_K)
    A = _cp_by_pairs(e_k, m_k, alpha)
    main = float(np.sum(n_k * A)) / n
    U = u_m(n_k, A, 1.0, stats.log_K, n, delta / 2.0)
    return main + U, {
        "train_error": _train_error(stats, counts), "main": main, "concentration": U, "|T|": int(n_k.size),
        "n": n, "m": stats.m, "delta_split": "delta/2 training counts (Lemma M), delta/2 held-out cells (delta/(2K) each)",
    }


def _cp_by_pairs(e: np.ndarray, m: np.ndarray, alpha: float) -> np.ndarray:
    """Clopper–Pearson limits, evaluated once per distinct (errors, trials) pair."""
    if e.size == 0:
        return np.zeros(0)
    base = int(m.max()) + 1
    keys, inv = np.unique(e.astype(np.int64) * base + m, return_inverse=True)
    return clopper_pearson_upper(keys // base, keys % base, alpha)[inv]


def _train_error(stats: SampleStats, counts: CellCounts) -> float:
    return float(counts.err_k.sum()) / stats.n


def _k_float(stats: SampleStats) -> float:
    if stats.K is not None and stats.K < 2**1000:
        return float(stats.K)
    return math.exp(stats.log_K) if stats.log_K < 709.0 else math.inf


def _k_minus(stats: SampleStats, T: int) -> float:
    """``K - |T|`` (exact for integer K)."""
    if stats.K is not None and stats.K < 2**1000:
        return float(stats.K - T)
    return _k_float(stats) - T
