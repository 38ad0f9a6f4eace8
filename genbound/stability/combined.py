"""Union of empirical stability engines: a sample is unstable if any of them finds a flip.

``pgd+autoattack`` runs genbound's PGD (:mod:`genbound.stability.pgd`) and AutoAttack's APGD-CE +
APGD-T (:mod:`genbound.stability.autoattack`) on every batch, each with its own parameters and its
own per-sample seeds, and combines the flags:

    stable[i, j] = stable_pgd[i, j] and stable_autoattack[i, j]

Neither attack finds every flip the other finds (the two differ in loss, step schedule, start
and targets), so the union is never less unstable than either alone: each part's flags are
exactly the flags it gives when run by itself with the same parameters (same seeds, same
batches), and the union only adds flips. Each part's flags are kept in the result's ``arrays``
(``stable_pgd``, ``stable_autoattack``). Both parts run on every pair so that the disagreements
are counted in both directions: ``unstable_by`` in the evidence holds, per kappa, the pairs only
PGD flipped, only AutoAttack flipped, and both flipped (the first of these counts is PGD's miss
count against AutoAttack on this data). Union flags are monotone in kappa when each part's are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from genbound.data.source import DEFAULT_BATCH_SIZE
from genbound.errors import UserInputError
from genbound.stability.autoattack import AutoAttackEngine
from genbound.stability.engine import UNITS, BatchResult, StabilityEngine
from genbound.stability.pgd import PGDEngine

__all__ = ["UnionEngine", "pgd_autoattack"]


class UnionEngine:
    """Flags of several empirical engines combined: unstable if any part flips (module docstring)."""

    sound = False

    def __init__(self, name: str, parts: dict[str, StabilityEngine]) -> None:
        if len(parts) < 2 or any(p.sound for p in parts.values()):
            raise UserInputError("a union of stability engines needs two or more empirical engines")
        self.name, self.parts = name, dict(parts)

    def start(self, model: nn.Module, kappas: np.ndarray, device: torch.device) -> None:
        self.k = kappas
        for p in self.parts.values():
            p.start(model, kappas, device)

    def update(self, x: torch.Tensor, index: np.ndarray) -> BatchResult:
        results = {key: p.update(x, index) for key, p in self.parts.items()}
        first = next(iter(results.values()))
        for key, r in results.items():
            if not np.array_equal(r.pred, first.pred):  # one model, one batch: the clean passes must agree
                raise RuntimeError(f"stability engine {key!r} saw other clean predictions than {next(iter(results))!r}")
        unstable = {key: ~r.stable for key, r in results.items()}
        stable = ~np.logical_or.reduce(list(unstable.values()))
        counts: dict[str, Any] = {f"{key}.{c}": v for key, r in results.items() for c, v in r.counts.items()}
        keys = list(self.parts)
        for key in keys:
            others = np.logical_or.reduce([unstable[o] for o in keys if o != key])
            counts[f"only_{key}"] = (unstable[key] & ~others).sum(0).tolist()
        counts["all"] = np.logical_and.reduce(list(unstable.values())).sum(0).tolist()
        counts["union"] = (~stable).sum(0).tolist()
        arrays = {f"stable_{key}": r.stable for key, r in results.items()}
        return BatchResult(index=index, stable=stable, pred=first.pred, counts=counts, arrays=arrays)

    def evidence(self, counts: dict[str, Any], n: int) -> dict[str, Any]:
        J = len(self.k)
        parts = {}
        for key, p in self.parts.items():
            pre = f"{key}."
            parts[key] = p.evidence({c[len(pre):]: v for c, v in counts.items() if c.startswith(pre)}, n)
        fwd = sum(int(e.get("model_evals", {}).get("forward", 0)) for e in parts.values())
        bwd = sum(int(e.get("model_evals", {}).get("backward", 0)) for e in parts.values())
        zero = [0] * J
        return {"method": self.name, "sound": False, "rule": f"unstable if any of {', '.join(self.parts)} flips",
                "norm": next(iter(parts.values())).get("norm"), "units": UNITS, "kappas": self.k.tolist(),
                "n": int(n), "parts": parts,
                "unstable_by": {**{f"only_{key}": list(counts.get(f"only_{key}", zero)) for key in self.parts},
                                "all": list(counts.get("all", zero)), "union": list(counts.get("union", zero))},
                "model_evals": {"forward": fwd, "backward": bwd, "total": fwd + bwd}}


def pgd_autoattack(*, norm: str = "linf", seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                   pgd: dict[str, Any] | None = None, autoattack: dict[str, Any] | None = None) -> UnionEngine:
    """``pgd+autoattack``: PGD (parameters ``pgd``, e.g. ``{"steps": 10, "restarts": 1}``) and AutoAttack
    (``autoattack``, e.g. ``{"iters": 100, "targets": 9}``) on the same ``norm``, ``seed`` and batches."""
    shared = {"norm": norm, "seed": seed, "batch_size": batch_size}
    for what, given in (("pgd", pgd), ("autoattack", autoattack)):
        if given is not None and (not isinstance(given, dict) or set(given) & set(shared)):
            raise UserInputError(f"pgd+autoattack: {what} must be a dict of that engine's own parameters "
                                 f"(norm, seed and batch_size are shared); got {given!r}")
    try:
        parts = {"pgd": PGDEngine(**shared, **(pgd or {})), "autoattack": AutoAttackEngine(**shared, **(autoattack or {}))}
    except TypeError as e:
        raise UserInputError(f"pgd+autoattack: {e}") from None
    return UnionEngine("pgd+autoattack", parts)
