"""The whole bound suite for one model: every result of ``spec/bounds.md`` §3 and §4."""

from __future__ import annotations

import math

import numpy as np

from genbound.bounds import certified, diagnostic
from genbound.bounds.counts import count_cells
from genbound.bounds.result import BoundReport, BoundResult
from genbound.bounds.stats import SampleStats
from genbound.errors import UserInputError

CERTIFIED = ("holdout_cp", "xu_mannor", "kawaguchi", "theorem_n", "theorem_h")
DIAGNOSTIC = ("than_rob", "than_localrob", "than_localsen", "than_localavg", "stability_b", "stability_a", "stability_c")
RESULT_NAMES = CERTIFIED + DIAGNOSTIC

IID = "training samples are i.i.d. draws from the distribution the error is measured on"
HELDOUT_IID = ("held-out samples are i.i.d. from that distribution and independent of the training sample, "
               "the model and every choice made with them (model selection, early stopping, the partition)")
PARTITION_FIXED = ("the partition was fixed before the training sample was drawn (data-independent, or built "
                   "from data disjoint from it); genbound cannot verify this: the user guarantees it")
PARTITION_VIOLATION = ("VIOLATION: the partition depends on the training sample (spec §2), which voids every "
                       "concentration term; reported as a diagnostic, not a bound")
LOSS = "0-1 loss (top-1) in [0, 1]; zeta = 1"


def validate_delta(delta: float) -> float:
    try:
        d = float(delta)
    except (TypeError, ValueError):
        raise UserInputError(f"delta must be a number in (0, 1), got {delta!r}") from None
    if not (0.0 < d < 1.0):
        raise UserInputError(f"delta must be in (0, 1) (failure probability, e.g. 0.05), got {delta!r}")
    return d


def compute_bounds(stats: SampleStats, delta: float = 0.05) -> BoundReport:
    """Every certified and diagnostic result of ``spec/bounds.md`` for one model.

    Parameters
    ----------
    stats:
        Validated per-sample statistics (:class:`SampleStats`).
    delta:
        Failure probability in (0, 1); each certified value holds with probability >= 1 - delta
        (over the draw of the training and held-out samples), for every kappa of the grid at once.

    Returns
    -------
    BoundReport
        One :class:`BoundResult` per (result name, kappa), model metadata, and notes on results
        left out (held-out results when m = 0, stability diagnostics without stability flags).
    """
    delta = validate_delta(delta)
    counts = count_cells(stats)
    occupied_any = int(np.count_nonzero((counts.n_k > 0) | (counts.m_k > 0)))
    if stats.K is not None and occupied_any > stats.K:
        raise UserInputError(
            f"K={stats.K} but the samples occupy {occupied_any} distinct cells; K is the total number of "
            f"cells of the partition (empty ones included; regions x classes when label-pure)"
        )
    if stats.K is None and math.log(occupied_any) > stats.log_K + 1e-9:
        raise UserInputError(f"log_K={stats.log_K:g} but the samples occupy {occupied_any} distinct cells (ln = {math.log(occupied_any):g})")

    n, m = stats.n, stats.m
    R = float(counts.err_k.sum()) / n
    he = float(counts.herr_k.sum()) / m if m else None
    K_out = stats.K if stats.K is not None and stats.K < 2**63 else None
    notes: list[str] = []
    results: list[BoundResult] = []
    partition_kind = "diagnostic" if stats.partition_depends_on_train else "certified"
    why = stats.partition.get("depends_on_training_set_why")
    violation = PARTITION_VIOLATION + (f" (the partition was {why})" if isinstance(why, str) and why else "")
    base = [LOSS, IID, violation if stats.partition_depends_on_train else PARTITION_FIXED]

    def add(name: str, kind: str, value: float | None, terms: dict, kappa: float | None, assumptions: list[str]) -> None:
        assumptions = list(assumptions)
        if value is not None and not math.isfinite(value):
            assumptions.append("value is not finite (e.g. K astronomically large in a term linear in K): reported as null")
            value = None
        covers = None if he is None or value is None else bool(value >= he)
        results.append(BoundResult(stats.model, name, kind, value, delta, kappa, K_out, stats.log_K, he, covers, terms, assumptions))

    if m:
        v, t = certified.holdout_cp(stats, delta)
        add("holdout_cp", "certified", v, t, None, [LOSS, HELDOUT_IID])
    else:
        notes.append(f"{stats.model}: no held-out data (m = 0): holdout_cp, theorem_h, than_*, stability_a, stability_c omitted")

    grid = list(range(stats.J)) or [None]
    proofs = [certified.proof_at(stats, counts, j) for j in grid]
    per_name = {
        "xu_mannor": [certified.xu_mannor(stats, counts, p, delta) for p in proofs],
        "kawaguchi": [certified.kawaguchi(stats, counts, p, delta) for p in proofs],
        "theorem_n": certified.theorem_n(stats, counts, proofs, delta),
    }
    for name, values in per_name.items():
        for j, p, (v, t) in zip(grid, proofs, values):
            kappa = None if j is None else float(stats.kappas[j])
            what = ("every occupied cell holds a training sample proven stable: eps_cert = 0" if p.eps_cert == 0 else
                    "eps_cert = 1") if name != "theorem_n" else (
                    f"{t['proven_cells']} cells proven (M_k = 0)" if p.provable else "no cell proven (M_k = 1)")
            extra = [f"{what}; " + (p.reason or f"label-pure cells of diameter <= kappa, sound stability ({stats.stability_method})")]
            if name == "theorem_n":
                extra.append("N1, N2, N3 each at delta/3; value = min, valid at 1 - delta")
            if stats.selection == "cells" and stats.s < n and p.provable:
                extra.append(f"stability verified on {stats.s} of {n} samples, cell by cell (any data-dependent choice "
                             "is valid: the events concern the counts only); cells without a proof keep M_k = 1")
            add(name, partition_kind, v, t, kappa, base + extra)

    if m:
        v, t = certified.theorem_h(stats, counts, delta)
        kind, extra = partition_kind, [HELDOUT_IID]
        if stats.partition_uses_heldout:
            kind = "diagnostic"
            extra.append("VIOLATION: the held-out set helped build the partition (held-out centroids or a k-means fit "
                         "split), which voids "
                         "the held-out cell limits; reported as a diagnostic")
        add("theorem_h", kind, v, t, None, base + extra)

        than_note = ("estimate, not a bound: suprema over cells and cell risks are replaced by labelled held-out "
                     "samples (Than, Phan & Vu recipe); uses held-out labels")
        for name, (v, t) in diagnostic.than_family(stats, counts, delta).items():
            a = [LOSS, than_note]
            if v is None:
                a.append("no cell holds both a training and a held-out sample: value undefined")
            add(name, "diagnostic", v, t, None, a)

    if stats.J:
        stab_note = ("estimate, not a bound: stable training samples are given zero robustness although stability "
                     f"was decided by {stats.stability_method!r} on finitely many samples; see theorem_n for the certified form")
        per_kappa = diagnostic.stability_family(stats, counts, delta)
        for name in ("stability_b", "stability_a", "stability_c"):
            for j, fam in zip(grid, per_kappa):
                if name not in fam:
                    continue
                v, t = fam[name]
                a = [LOSS, stab_note] + (["uses held-out labels (e_k)"] if name != "stability_b" else [])
                a.extend(_selection_notes(stats, name))
                add(name, "diagnostic", v, t, float(stats.kappas[j]), a)
    else:
        notes.append(f"{stats.model}: no stability flags: stability_a/b/c omitted")
    if stats.J and not counts.monotone:
        notes.append(f"{stats.model}: stability flags are not monotone in kappa for some samples; each column is used as given")

    meta = stats.metadata()
    fc = diagnostic.flag_counts(stats, counts, stats.delta_s)
    E = int(counts.err_k.sum())
    meta.update({"|T|": int(np.count_nonzero(counts.occupied)), "train_error": R, "heldout_error": he,
                 "unstable_fraction": (fc.limit["u"] / n).tolist(),
                 "robust_train_error": ((E + fc.limit["b"]) / n).tolist(), "delta": delta})
    if fc.delta is not None:
        meta.update({"unstable_fraction_estimate": (fc.estimate["u"] / n).tolist(),
                     "robust_train_error_estimate": ((E + fc.estimate["b"]) / n).tolist(),
                     "best_over_kappa_diagnostic": diagnostic.best_over_kappa_subsampled(stats, counts, delta)})
        notes.append(f"{stats.model}: stability checked on a uniform subsample of {stats.s} of {n} training samples "
                     f"(seed {stats.selection_seed}): unstable_fraction, robust_train_error, stability_a/b are exact "
                     f"hypergeometric upper limits at 1 - delta_s = {1 - stats.delta_s:g} per kappa (point estimates "
                     "beside them); the certified results do not read these flags")
    elif stats.selection == "cells" and stats.s < n:
        notes.append(f"{stats.model}: stability verified on {stats.s} of {n} training samples, cell by cell (sound "
                     "verifier budget): cells without a proof keep M_k = 1, unverified samples count as not stable")
    return BoundReport(results, [meta], delta, notes)


def _selection_notes(stats: SampleStats, name: str) -> list[str]:
    """What a partial stability check (spec §8) means for one stability diagnostic."""
    if stats.subsampled and name != "stability_c":
        return [f"stability checked on a uniform subsample of s = {stats.s} of n = {stats.n} (seed "
                f"{stats.selection_seed}, drawn before any flag): the count of samples with the flag-dependent property "
                f"is its exact one-sided hypergeometric upper limit at 1 - delta_s = {1 - stats.delta_s:g}; point "
                "estimate in terms"]
    if stats.subsampled:
        return ["does not depend on the flags (correct-unstable plus correct-stable is correct): no sampling term"]
    if stats.selection == "cells" and stats.s < stats.n and name != "stability_c":
        return [f"stability verified on {stats.s} of {stats.n} samples, cell by cell: unverified samples count as "
                "not stable (the upper side)"]
    return []
