"""The kappa -> 0 sanity check of the stability diagnostics (background §7.4, checklist §8 item 4).

As kappa -> 0 every training sample is "stable", the robustness term of ``stability_a/b/c``
vanishes and the estimate collapses to ``R_S + U``: training error plus a concentration term.
For a model that memorizes (R_S ~ 0, large true error) that is wrong, so a regime where the
estimate is ``R_S + small`` is a red flag, never a result. :func:`kappa_zero_check` reads a
report and says, per (model, stability diagnostic), what the estimate is at the smallest kappa of
the grid, whether it has collapsed, and whether it still covers the held-out error.

Pure function of :class:`~genbound.bounds.result.BoundReport` (no torch).
"""

from __future__ import annotations

from typing import Any

from genbound.bounds.result import BoundReport

__all__ = ["STABILITY_DIAGNOSTICS", "kappa_zero_check"]

STABILITY_DIAGNOSTICS = ("stability_b", "stability_a", "stability_c")


def kappa_zero_check(report: BoundReport, collapse_tol: float = 0.01) -> list[dict[str, Any]]:
    """Per (model, stability diagnostic): the estimate at the smallest kappa and what it means.

    ``collapsed`` = the robustness term at the smallest kappa is ``<= collapse_tol`` (the value
    is then ``R_S + U`` up to ``collapse_tol``). ``flag`` is one of

    * ``"RED FLAG"``  collapsed **and** below the held-out error: the estimate reduces to training
      error + U and misses the error of this (memorizing) model;
    * ``"collapses"`` collapsed but still above the held-out error (here U or R_S is large enough;
      for a memorizing model it would not be);
    * ``"ok"``        the robustness term has not vanished at the smallest kappa of the grid (try a
      smaller kappa to see the collapse).

    Each entry also holds the trend ``[(kappa, robustness, value), ...]`` over the grid.
    """
    out: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((r.model, r.name) for r in report.results if r.name in STABILITY_DIAGNOSTICS))
    for model, name in keys:
        rs = sorted((r for r in report.results if r.model == model and r.name == name and r.kappa is not None
                     and r.value is not None), key=lambda r: r.kappa)
        if not rs:
            continue
        r0 = rs[0]
        rob = float(r0.terms.get("robustness", 0.0))
        he = r0.heldout_error
        collapsed = rob <= collapse_tol
        below = he is not None and r0.value < he
        flag = "RED FLAG" if collapsed and below else ("collapses" if collapsed else "ok")
        msg = {
            "RED FLAG": (f"as kappa -> 0 ({r0.kappa:g}) the estimate collapses to R_S + U = {r0.value:.4f} and falls "
                         f"below the held-out error {he:.4f}: training error + a concentration term says nothing "
                         "about a memorizing model; not evidence of generalization"),
            "collapses": (f"at kappa = {r0.kappa:g} the robustness term is {rob:.4f}: the estimate is R_S + U "
                          f"({r0.value:.4g}); it covers the held-out error here only through R_S + U, which carries "
                          "no information about the model and misses a memorizer once U is small (background §7.4)"),
            "ok": (f"the robustness term is still {rob:.4f} at the smallest kappa of the grid ({r0.kappa:g}); "
                   "the collapse to R_S + U appears only at smaller kappa"),
        }[flag]
        out.append({
            "model": model, "name": name, "kappa_min": r0.kappa, "value": r0.value,
            "train_error": r0.terms.get("train_error"), "robustness": rob,
            "concentration": r0.terms.get("concentration"), "unstable_fraction": r0.terms.get("unstable_fraction"),
            "heldout_error": he, "covers": None if he is None else not below, "collapsed": collapsed,
            "flag": flag, "message": msg,
            "trend": [(r.kappa, float(r.terms.get("robustness", 0.0)), r.value) for r in rs],
        })
    return out
