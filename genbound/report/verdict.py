"""What a reader asks first, computed from a run's results: the tightest certified bound, the
tightest diagnostic, whether each covers the held-out error, and why a vacuous bound is vacuous.

Pure functions of the JSON documents (no torch, no numpy): the page shows these, the numbers stay
the ones in ``result.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from genbound.report.run import Run

# Terms that add up to a partition-based value (spec/bounds.md §6); the largest one explains it.
_ADDENDS = ("train_error", "robustness", "main", "concentration")


@dataclass
class ModelView:
    """One model of one run: its metadata per partition size K and its results."""

    run: Run
    name: str
    metas: list[dict[str, Any]]
    results: list[dict[str, Any]]
    record: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    label: str = ""

    @property
    def train_error(self) -> float | None:
        return self.metas[0].get("train_error")

    @property
    def heldout_error(self) -> float | None:
        return self.metas[0].get("heldout_error")

    @property
    def Ks(self) -> list[str]:
        return list(dict.fromkeys(k_text(m) for m in self.metas))


def k_text(d: dict[str, Any]) -> str:
    """A partition size for display: ``100``, or ``e^2.3e+04`` when only ln K is known."""
    if d.get("K") is not None:
        return str(d["K"])
    return "e^%.4g" % d.get("log_K", float("nan"))


def model_views(runs: list[Run]) -> list[ModelView]:
    """Every (run, model), the same model of several runs next to each other."""
    views: list[ModelView] = []
    for i, run in enumerate(runs):
        names = list(dict.fromkeys(m["model"] for m in run.doc["models"]))
        recs = {m.get("name"): m for m in run.records.get("models", []) if isinstance(m, dict)}
        for j, name in enumerate(names):
            views.append(ModelView(
                run=run, name=name,
                metas=[m for m in run.doc["models"] if m["model"] == name],
                results=[r for r in run.doc["results"] if r.get("model") == name],
                record=recs.get(name, {}), key=f"m{i}-{j}",
                label=name if len(runs) == 1 else f"{name} ({run.label})"))
    order = list(dict.fromkeys(v.name for v in views))
    return sorted(views, key=lambda v: order.index(v.name))


def is_vacuous(r: dict[str, Any]) -> bool:
    """A value of 1 or more bounds a 0-1 error by nothing it could not reach anyway."""
    return r.get("value") is not None and r["value"] >= 1.0


def tightest(results: list[dict[str, Any]], kind: str, exclude: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The result of ``kind`` with the smallest value (ties: first in file order), or ``None``."""
    cands = [r for r in results if r.get("kind") == kind and r.get("value") is not None and r.get("name") not in exclude]
    return min(cands, key=lambda r: r["value"]) if cands else None


def selection_size(results: list[dict[str, Any]], kind: str, exclude: tuple[str, ...] = ()) -> int:
    """How many separately certified values a minimum over names and partitions chose among.

    On one partition the minimum over kappa of one result name is free (spec/bounds.md §5); across
    result names and partitions it is not: the picked value holds at ``1 - N delta`` by the union
    bound, N = number of (name, partition) pairs compared.
    """
    return len({(r["name"], r.get("log_K")) for r in results
                if r.get("kind") == kind and r.get("value") is not None and r.get("name") not in exclude})


def vacuous_reason(r: dict[str, Any]) -> str | None:
    """Why a certified value is >= 1: the term that reaches 1 on its own (or the largest one),
    with the assumption line that explains a robustness term of 1 (e.g. ``eps_cert = 1``)."""
    if not is_vacuous(r):
        return None
    terms = {k: v for k, v in (r.get("terms") or {}).items()
             if k in _ADDENDS and isinstance(v, (int, float)) and math.isfinite(v)}
    if not terms:
        return "no decomposition recorded"
    full = [k for k, v in terms.items() if v >= 1.0]
    key = max(full or terms, key=lambda k: terms[k])
    why = f"{key} = {terms[key]:.4g}"
    if not full:
        parts = " + ".join(f"{k} {v:.3g}" for k, v in terms.items() if k != "main" or "robustness" not in terms)
        why += f" is the largest term ({parts})"
    if key in ("robustness", "main"):
        hint = next((a for a in r.get("assumptions", []) if "eps_cert" in a or "M_k" in a or "proven" in a), None)
        if hint:
            why += f": {hint}"
    return why


def holdout_reference(view: ModelView) -> dict[str, Any] | None:
    """The Clopper-Pearson upper limit of the held-out error (``holdout_cp``), if computed."""
    rs = [r for r in view.results if r.get("name") == "holdout_cp" and r.get("value") is not None]
    return rs[0] if rs else None
