"""Grids of partitions and delta accounting (``spec/bounds.md`` §5; background §7.6).

Two ways of combining results computed on several partitions, each with the confidence it has:

* :func:`best_over_grid` -- the smallest certified value per (model, result name) over a grid G
  of partitions (different K, seeds, or kappa-fine grids rebuilt per kappa) **declared before the
  bounds were computed**, every partition's results computed at ``delta_j = delta / |G|``. By the
  union bound over the |G| partitions every value of the grid holds simultaneously with
  probability >= 1 - delta, hence so does the minimum. On one partition the kappa grid is free
  (the events concern the counts only), so the minimum also runs over kappa.
* :func:`median_over_partitions` -- the median per (model, result name, kappa) over R random
  partitions, each computed at delta. Given the sample S, the number of failing draws F is a sum
  of R indicators with E[F] <= R delta; the median of the values falls below the true error only
  if at least R/2 of them do, so by Markov P(median fails) <= P(F >= R/2) <= 2 delta: the median
  is certified at **1 - 2 delta** (never the mean: that is only guaranteed at 1 - R delta).

Both are pure functions of :class:`~genbound.bounds.result.BoundReport` objects; no torch.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from genbound.bounds.result import BoundReport
from genbound.errors import UserInputError

__all__ = ["split_delta", "best_over_grid", "median_over_partitions"]

_REL = 1e-9  # relative slack when comparing a report's delta with delta / |G|


def split_delta(delta: float, grid_size: int) -> float:
    """``delta_j = delta / |G|``: the confidence each of ``grid_size`` partitions is computed at.

    With every partition's certified results at ``delta_j``, all of them hold at once with
    probability >= 1 - delta (union bound), so any choice among them (the minimum) does too.
    """
    if not (isinstance(grid_size, (int, np.integer)) and grid_size >= 1):
        raise UserInputError(f"the grid must hold at least one partition (an integer >= 1), got {grid_size!r}")
    d = float(delta)
    if not 0.0 < d < 1.0:
        raise UserInputError(f"delta must be in (0, 1), got {delta!r}")
    return d / int(grid_size)


def best_over_grid(reports: Iterable[BoundReport], delta: float, grid_size: int,
                   what: str = "partitions") -> list[dict[str, Any]]:
    """Smallest certified value per (model, result name) over a declared grid of partitions.

    Parameters
    ----------
    reports:
        One report per (model, partition) of the grid, each computed with
        ``compute_bounds(stats, split_delta(delta, grid_size))``.
    delta:
        The total failure probability the returned values are certified at.
    grid_size:
        |G|, the number of partitions declared **before** any bound was computed (every value
        tried counts, including partitions whose results are not the best).
    what:
        How the grid is described in the note (e.g. ``"K values"``, ``"kappa-fine grids"``).

    Returns
    -------
    list of dict
        Per (model, certified result name except ``holdout_cp``): ``value``, the partition's
        ``K``/``log_K`` and ``kappa`` where it was attained, ``delta`` (total, the confidence of
        the value), ``delta_per_partition`` (= delta / |G|), ``grid_size`` and a ``note``.

    Raises ``ValueError`` if a report was computed at a delta larger than ``delta / grid_size``
    (its values would not be certified at the total delta).
    """
    dj = split_delta(delta, grid_size)
    best: dict[tuple[str, str], Any] = {}
    for rep in reports:
        if rep.delta > dj * (1.0 + _REL):
            raise ValueError(f"a report was computed at delta={rep.delta:g} but the grid of {grid_size} {what} at total "
                             f"delta={delta:g} needs delta/|G| = {dj:g} per partition (spec §5)")
        for r in rep.results:
            if r.kind != "certified" or r.value is None or r.name == "holdout_cp":
                continue
            key = (r.model, r.name)
            if key not in best or r.value < best[key].value:
                best[key] = r
    return [{"model": m, "name": nm, "kind": "certified", "value": r.value, "K": r.K, "log_K": r.log_K,
             "kappa": r.kappa, "terms": r.to_dict()["terms"], "delta": float(delta), "delta_per_partition": dj,
             "grid_size": int(grid_size),
             "note": (f"minimum over {grid_size} {what} (delta split evenly: {delta:g}/{grid_size} = {dj:.4g} each, "
                      f"union bound) and the kappa grid on each; certified at 1 - {delta:g}")}
            for (m, nm), r in best.items()]


def median_over_partitions(reports: Sequence[BoundReport]) -> list[dict[str, Any]]:
    """Median per (model, result name, kappa) over R random partitions (spec §5).

    Parameters
    ----------
    reports:
        One report per random partition (same models, same delta), e.g. ``compute_bounds`` on
        the cells of R partitions drawn with R seeds.

    Returns
    -------
    list of dict
        Per (model, name, kappa): ``median`` (``numpy.median`` of the R values; a null value, i.e.
        not finite, counts as +inf, so it can only raise the median), ``R``, ``values``, ``kind``,
        ``delta_each`` (the delta of each partition's value) and ``confidence``: ``1 - 2 delta``
        for certified results (``delta`` = 2 delta_each), ``None`` for diagnostics (a median of
        estimates is still an estimate). ``heldout_error`` and ``covers`` as in the results. The
        mean is deliberately not returned.
    """
    reports = list(reports)
    if not reports:
        raise UserInputError("median over random partitions: give at least one report (one per partition)")
    deltas = {rep.delta for rep in reports}
    if len(deltas) != 1:
        raise UserInputError(f"every partition's results must be computed at the same delta, got {sorted(deltas)}")
    d = deltas.pop()
    groups: dict[tuple[str, str, float | None], list] = {}
    for rep in reports:
        for r in rep.results:
            groups.setdefault((r.model, r.name, r.kappa), []).append(r)
    out = []
    for (model, name, kappa), rs in groups.items():
        vals = np.array([math.inf if r.value is None else float(r.value) for r in rs])
        med = float(np.median(vals))
        kind = rs[0].kind if all(r.kind == rs[0].kind for r in rs) else "diagnostic"
        he = rs[0].heldout_error
        cert = kind == "certified"
        value = med if math.isfinite(med) else None
        out.append({
            "model": model, "name": name, "kind": kind, "kappa": kappa, "median": value, "R": len(rs),
            "values": [None if not math.isfinite(v) else float(v) for v in vals],
            "K": sorted({r.K for r in rs if r.K is not None}) or None,
            "delta_each": d, "delta": 2.0 * d if cert else None, "confidence": 1.0 - 2.0 * d if cert else None,
            "heldout_error": he, "covers": None if he is None or value is None else bool(value >= he),
            "note": (f"median of {len(rs)} random partitions, each at delta={d:g}: certified at 1 - 2*{d:g} "
                     "(Markov on the number of failing partitions); the mean is never a bound" if cert else
                     f"median of {len(rs)} estimates: a diagnostic, not a bound"),
        })
    return out
