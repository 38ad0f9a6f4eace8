"""Result objects of the bounds layer and their JSON form (``spec/bounds.md`` §6)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from genbound import __version__
from genbound.fileio import write_text

SCHEMA = "genbound.result/1"


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class BoundResult:
    """One value of one result name for one model (and one kappa, where it depends on kappa).

    ``value`` is never clipped to 1; it is ``None`` only when not finite (the reason is then in
    ``assumptions``). ``covers`` = ``value >= heldout_error`` where a held-out set exists.
    """

    model: str
    name: str
    kind: str  # "certified" | "diagnostic"
    value: float | None
    delta: float
    kappa: float | None
    K: int | None
    log_K: float
    heldout_error: float | None
    covers: bool | None
    terms: dict[str, Any] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["terms"] = {k: (_finite_or_none(v) if isinstance(v, float) else v) for k, v in self.terms.items()}
        return d


@dataclass
class BoundReport:
    """Every result for one or more models, with the metadata they were computed from."""

    results: list[BoundResult]
    models: list[dict[str, Any]]
    delta: float
    notes: list[str] = field(default_factory=list)

    def __add__(self, other: "BoundReport") -> "BoundReport":
        if other.delta != self.delta:
            raise ValueError(f"cannot merge reports at different delta ({self.delta} vs {other.delta})")
        return BoundReport(self.results + other.results, self.models + other.models, self.delta, self.notes + other.notes)

    @classmethod
    def merge(cls, reports: Iterable["BoundReport"]) -> "BoundReport":
        reports = list(reports)
        out = reports[0]
        for r in reports[1:]:
            out = out + r
        return out

    def select(self, name: str | None = None, model: str | None = None, kind: str | None = None) -> list[BoundResult]:
        """Results filtered by name, model and kind (``None`` = any)."""
        return [
            r for r in self.results
            if (name is None or r.name == name) and (model is None or r.model == model) and (kind is None or r.kind == kind)
        ]

    def best_over_kappa(self) -> list[dict[str, Any]]:
        """Per (model, certified result name), the smallest value over the kappa grid.

        On one fixed partition every certified result holds for all kappas at once (the events
        concern the counts only, ``spec/bounds.md`` §5), so the minimum is valid at the same delta.
        """
        best: dict[tuple[str, str], BoundResult] = {}
        for r in self.results:
            if r.kind != "certified" or r.kappa is None or r.value is None:
                continue
            key = (r.model, r.name)
            if key not in best or r.value < best[key].value:
                best[key] = r
        return [
            {"model": m, "name": nm, "value": r.value, "kappa": r.kappa, "delta": r.delta,
             "note": "minimum over the kappa grid on one partition; valid at the same delta (spec §5)"}
            for (m, nm), r in best.items()
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "genbound_version": __version__,
            "delta": self.delta,
            "loss": "0-1 (top-1), in [0, 1]",
            "models": self.models,
            "results": [r.to_dict() for r in self.results],
            "best_over_kappa": self.best_over_kappa(),
            "notes": self.notes,
        }

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 2) -> str:
        """The JSON document; written atomically to ``path`` when given (no partial file on failure)."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            write_text(path, text + "\n")
        return text

    def table(self) -> str:
        """A plain-text table: one row per (model, result name), one column per kappa.

        Values below the model's held-out error are marked ``!`` (the result does not cover it).
        """
        lines: list[str] = []
        for meta in self.models:
            model = meta["model"]
            rows = [r for r in self.results if r.model == model and r.log_K == meta["log_K"]]
            kappas = meta["kappas"]
            he = meta.get("heldout_error")
            lines.append(
                f"model {model}: n={meta['n']} m={meta['m']} K={meta['K'] if meta['K'] is not None else 'e^%.4g' % meta['log_K']}"
                f" |T|={meta['|T|']} train error={meta['train_error']:.4f}"
                f" held-out error={'n/a' if he is None else f'{he:.4f}'}  delta={self.delta:g}"
            )
            lines.append(
                f"  stability: {meta['stability_method']} ({'sound' if meta['stability_sound'] else 'not sound'}),"
                f" norm={meta['norm']}; partition: {meta['partition'].get('kind', 'unspecified')},"
                f" label_pure={meta['partition']['label_pure']}, max_cell_diameter={meta['partition']['max_cell_diameter']}"
            )
            heads = ["result", "kind", "no kappa"] + [f"k={k:.4g}" for k in kappas]
            table: list[list[str]] = []
            names = list(dict.fromkeys(r.name for r in rows))
            for name in names:
                rs = [r for r in rows if r.name == name]
                cells = [""] * (1 + len(kappas))
                for r in rs:
                    txt = "null" if r.value is None else f"{r.value:.4f}"
                    if r.covers is False:
                        txt += "!"
                    col = 0 if r.kappa is None else 1 + kappas.index(r.kappa)
                    cells[col] = txt
                table.append([name, rs[0].kind] + cells)
            sub = meta.get("stability_checked") or {}
            if sub.get("selection") == "uniform" and sub.get("s", 0) < sub.get("n", 0):
                lines.append(f"  stability checked on a uniform subsample: s={sub['s']} of n={sub['n']} (seed {sub['seed']});"
                             f" flag-dependent diagnostics are upper limits at 1 - delta_s = {1 - sub['delta_s']:g}")
            elif sub.get("selection") == "cells" and sub.get("s", 0) < sub.get("n", 0):
                lines.append(f"  stability verified cell by cell on {sub['s']} of n={sub['n']} samples (verifier budget)")
            for label in ("unstable_fraction", "robust_train_error", "unstable_fraction_estimate",
                          "robust_train_error_estimate"):
                if kappas and meta.get(label):
                    table.append([label, "-", ""] + [f"{v:.4f}" for v in meta[label]])
            widths = [max(len(h), *(len(row[i]) for row in table)) if table else len(h) for i, h in enumerate(heads)]
            fmt = lambda row: "  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
            lines.append(fmt(heads))
            lines.extend(fmt(row) for row in table)
            lines.append("")
        if any(r.covers is False for r in self.results):
            lines.append("! value below the held-out error: this result does not cover it")
        lines.append("certified = a high-probability upper bound on the test error (a theorem, under its listed assumptions);")
        lines.append("diagnostic = an estimate from the literature, not a bound.")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)
