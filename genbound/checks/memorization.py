"""``genbound check memorization``: every certified result must stay above a memorizer's error.

Checklist item 4 of background §8: a bound that depends on the model only through its training
loss and counts cannot be valid for a model that interpolates random labels. Here an MLP is
trained on scikit-learn's digits with half of the training labels replaced by random other labels
(:func:`genbound.data.randomize_labels`) until it (nearly) interpolates them; it is judged on
held-out labels corrupted by the same process, i.e. on the distribution it was trained on, so
its held-out error is large (~0.5) while its training error is ~0.

Every result is computed on two kinds of partitions:

* the pipeline's uniform random-centroid partitions (K = 10, 100) with PGD stability (empirical:
  nothing can be proven, the literature's diagnostics are computed as published);
* kappa-fine label-pure grids with ``crown`` stability (sound: cells can be proven).

The check passes iff every certified value (best over the grids included) is >= the held-out
error. Diagnostics that fall below it are listed, and the kappa -> 0 check of the stability
diagnostics (:func:`genbound.bounds.sanity.kappa_zero_check`) says where they collapse to R_S + U.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genbound.bounds import BoundReport
from genbound.bounds.sanity import kappa_zero_check
from genbound.config import Config
from genbound.data import load_dataset, randomize_labels, split_source
from genbound.models import mlp, train_classifier, with_normalization
from genbound.pipeline import ModelInput, evaluate

__all__ = ["MemorizationResult", "run_memorization"]

RANDOM_LABEL_FRACTION = 0.5
MODEL = "memorizer"


@dataclass
class MemorizationResult:
    """All results on the memorizing model, with the partition each was computed on."""

    train_error: float
    heldout_error: float
    results: list[dict[str, Any]]
    best: list[dict[str, Any]]
    sanity: list[dict[str, Any]]
    model: dict[str, Any]
    delta: float
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def certified_below(self) -> list[dict[str, Any]]:
        """Certified values below the held-out error (must be empty)."""
        out = [r for r in self.results if r["kind"] == "certified" and r["value"] is not None
               and r["value"] < self.heldout_error]
        return out + [b for b in self.best if b["value"] is not None and b["value"] < self.heldout_error]

    @property
    def diagnostics_below(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["kind"] == "diagnostic" and r["value"] is not None
                and r["value"] < self.heldout_error]

    @property
    def passed(self) -> bool:
        return not self.certified_below

    def to_dict(self) -> dict[str, Any]:
        return {"check": "memorization", "passed": self.passed, "delta": self.delta, "train_error": self.train_error,
                "heldout_error": self.heldout_error, "model": self.model,
                "rule": "every certified value (and best over a grid) must be >= the memorizing model's held-out error",
                "certified_below": self.certified_below,
                "diagnostics_below": [{k: r[k] for k in ("partition", "name", "kappa", "value")} for r in self.diagnostics_below],
                "results": self.results, "best_over_grid": self.best, "sanity_kappa_to_zero": self.sanity,
                "notes": self.notes, "wall_s": round(self.wall_s, 2)}

    def table(self) -> str:
        he = self.heldout_error
        lines = [f"memorization check: MLP on digits with {RANDOM_LABEL_FRACTION:.0%} random training labels; "
                 f"train error {self.train_error:.4f} (on the labels it was trained on), held-out error {he:.4f} "
                 "(held-out labels corrupted by the same process)"]
        heads = ["partition", "result", "kind", "min value", "max value", "below held-out"]
        rows = []
        keys = list(dict.fromkeys((r["partition"], r["name"]) for r in self.results))
        for part, name in keys:
            rs = [r for r in self.results if r["partition"] == part and r["name"] == name]
            vals = [np.inf if r["value"] is None else r["value"] for r in rs]
            below = sum(v < he for v in vals)
            fmt = lambda v: "null" if not np.isfinite(v) else (f"{v:.4f}" if v < 1e4 else f"{v:.3g}")  # noqa: E731
            rows.append([part, name, rs[0]["kind"], fmt(min(vals)), fmt(max(vals)), f"{below}/{len(vals)}"])
        for b in self.best:
            v = b["value"]
            rows.append([b["partition"], "best:" + b["name"], "certified", f"{v:.4f}" if v < 1e4 else f"{v:.3g}", "", "1/1" if b["value"] < he else "0/1"])
        w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
        f = lambda row: "  " + "  ".join(c.ljust(w[i]) if i < 3 else c.rjust(w[i]) for i, c in enumerate(row))  # noqa: E731
        lines += [f(heads)] + [f(r) for r in rows]
        db = self.diagnostics_below
        if db:
            lines.append("diagnostics below the held-out error (estimates, not bounds -- expected to fail here): "
                         + ", ".join(sorted({f"{r['name']}[{r['partition']}]" for r in db})))
        for s in self.sanity:
            lines.append(f"kappa->0 check [{s['partition']}] {s['name']}*: {s['flag']}: {s['message']}")
        cb = self.certified_below
        lines.append("PASSED: every certified result is above the memorizing model's held-out error" if not cb else
                     "FAILED: certified results below the held-out error: "
                     + ", ".join(f"{r['name']}[{r.get('partition')}]" for r in cb))
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _dicts(report: BoundReport, partition_of: dict[float, str]) -> list[dict[str, Any]]:
    return [{**r.to_dict(), "partition": partition_of[r.log_K]} for r in report.results]


def run_memorization(quick: bool = False, delta: float = 0.05, seed: int = 0, progress: bool = True) -> MemorizationResult:
    """Train the memorizer, compute every result on both partition kinds, check (module doc)."""
    t0 = time.perf_counter()
    source = load_dataset("digits")
    train, heldout, split = split_source(source, 0.25, seed=seed)
    tr_lab, _ = randomize_labels(train, RANDOM_LABEL_FRACTION, seed=seed)
    ho_lab, _ = randomize_labels(heldout, RANDOM_LABEL_FRACTION, seed=seed + 1)
    hidden, epochs = (512, 512), (100 if quick else 200)
    model = with_normalization(mlp(input_shape=[1, 8, 8], num_classes=10, hidden=hidden, seed=seed),
                               source.normalization)
    train_classifier(model, tr_lab, epochs=epochs, batch_size=128, lr=1e-3, seed=seed, progress_bar=progress)
    model.eval()
    x, y = tr_lab.get(np.arange(len(tr_lab)))
    hx, hy = ho_lab.get(np.arange(len(ho_lab)))
    with torch.no_grad():
        pred, hpred = model(x).argmax(1).numpy(), model(hx).argmax(1).numpy()
    y, hy = y.numpy(), hy.numpy()
    loss, hloss = (pred != y).astype(np.uint8), (hpred != hy).astype(np.uint8)
    R, he = float(loss.mean()), float(hloss.mean())
    notes = [f"split: {split.record()}", "held-out labels corrupted by the same process (seeded, fraction "
             f"{RANDOM_LABEL_FRACTION}), so the held-out error estimates the memorizer's true error on its own distribution"]
    if R > 0.05:
        notes.append(f"the model did not fully interpolate (train error {R:.3f}); the check is weaker than intended")

    # (a) the pipeline's uniform partitions with empirical (PGD) stability: the literature's setting
    kappas_a = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1)
    cfg = Config(kappas=kappas_a, K=(10, 100), stability="pgd", pgd_steps=5, delta=delta, progress=progress)
    ev = evaluate([ModelInput(MODEL, model, tr_lab, ho_lab)], train, heldout, cfg)
    part_a = {m["log_K"]: f"uniform K={m['K']} (pgd)" for m in ev.report.models}
    results = _dicts(ev.report, part_a)
    best = [{**b, "partition": "uniform K grid (pgd)"} for b in ev.best_over_grid]
    sanity = []
    for lk, label in part_a.items():
        sub = BoundReport([r for r in ev.report.results if r.log_K == lk], [], ev.report.delta)
        sanity += [{**s, "partition": label} for s in kappa_zero_check(sub)]

    # (b) kappa-fine label-pure grids with sound (crown) stability: the same pipeline, another partition
    kappas_b = (0.001, 0.005, 0.01, 0.02)
    cfg_b = Config(kappas=kappas_b, partition="grid", stability="crown", sound_intermediate="ibp", delta=delta,
                   progress=progress)
    ev_b = evaluate([ModelInput(MODEL, model, tr_lab, ho_lab)], train, heldout, cfg_b)
    kf = ev_b.grids[MODEL]
    st_status = ev_b.records["stability"][MODEL]["status"]
    part_b = {p["log_K"]: f"grid side {p['side']:g} (crown)" for p in kf.partitions}
    results += _dicts(kf.report, {r.log_K: part_b[min(part_b, key=lambda k: abs(k - r.log_K))] for r in kf.report.results})
    best += [{**b, "partition": "kappa-fine grids (crown)"} for b in kf.best]
    sanity += [{**s, "partition": "kappa-fine grids (crown)"} for s in kf.sanity]
    info = {"factory": "mlp", "hidden": list(hidden), "epochs": epochs, "data": "digits", "n": int(len(y)),
            "m": int(len(hy)), "random_label_fraction": RANDOM_LABEL_FRACTION, "seed": seed,
            "stability": {"uniform": "pgd (empirical)", "grid": f"crown with ibp intermediates: {st_status}"},
            "kappas": {"uniform": list(kappas_a), "grid": list(kappas_b)}}
    return MemorizationResult(R, he, results, best, sanity, info, float(delta), time.perf_counter() - t0, notes)
