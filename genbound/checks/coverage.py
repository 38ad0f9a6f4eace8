"""``genbound check coverage``: how often does each result fall below the true error?

A certified result at delta claims ``P(value < true error) <= delta``. This check simulates it:
for synthetic tasks whose true error is known **exactly** (a binary linear teacher on the uniform
square with label noise eta; the learned rule is linear too, so its true error is an area,
:mod:`genbound.checks.geometry`), it draws the training and held-out samples R times, fits the
rule (logistic regression), proves stability exactly (:mod:`genbound.stability.linear`, sound
method ``exact``), computes every result on one kappa-fine grid per kappa
(:mod:`genbound.kappa_fine`, delta split over the grid) and counts failures.

One row per (task, result name, grid side): ``kind``, ``delta`` (what the row's values are
certified at), ``draws``, ``failures`` (value < true error; a null value is +inf, never a
failure), ``failure_rate`` and its two-sided 95 % Clopper–Pearson interval ``[ci_low, ci_high]``.
``holdout_cp`` is computed once per draw at the full delta (it bites: its failure rate is close
to delta), and ``best:<name>`` rows check the best certified value over the grid at the full
delta. Diagnostic rows are listed too.

Both kinds of partial stability runs (``spec/bounds.md`` §8) are in every draw:

* ``budget:<name>`` -- a sound verifier's budget of ``BUDGET_FRACTION * n`` calls spent cell by
  cell on the finest grid (:class:`~genbound.stability.selection.BudgetPlan`, as ``evaluate``
  spends ``[stability] budget``): the certified results on the verified flags only.
* ``subsample:<name>`` (kind ``sampling``) -- the flags of a uniform subsample of
  ``SUBSAMPLE_FRACTION * n`` samples: a failure is a subsampled upper limit (``stability_a``,
  ``stability_b``, ``unstable_fraction``, ``robust_train_error``) below the value computed from
  every sample's flags; the row's delta is ``delta_s`` (:data:`DELTA_S`).

The check passes iff every certified and every sampling row has ``ci_low <= delta``: a result
whose failure rate is significantly above its delta is a bug.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.stats import beta

from genbound.bounds.concentration import clopper_pearson_upper
from genbound.checks.geometry import linear_true_error
from genbound.errors import UserInputError
from genbound.bounds import compute_bounds
from genbound.kappa_fine import kappa_fine_bounds
from genbound.partition.grid import grid_partition
from genbound.stability.linear import linear_rule_predict, linear_rule_stability
from genbound.stability.selection import BudgetPlan, spend_budget, uniform_subsample

__all__ = ["CoverageTask", "coverage_tasks", "run_coverage", "CoverageResult", "clopper_pearson_interval"]

BUDGET_FRACTION = 0.05  # partial run (a): verifier calls, as a fraction of n
SUBSAMPLE_FRACTION = 0.1  # partial run (b): uniform subsample size, as a fraction of n
DELTA_S = 0.05  # partial run (b): the subsampled limits' confidence
CHECKED_ROWS = ("certified", "sampling")  # kinds whose failure rate must stay within their delta


@dataclass(frozen=True)
class CoverageTask:
    """A linear teacher ``1[w* . x + b* > 0]`` on [0,1]^2, label noise ``eta``, sample sizes, kappa grid."""

    name: str
    w_star: tuple[float, float]
    b_star: float
    eta: float
    n: int
    m: int
    kappas: tuple[float, ...]


def coverage_tasks(quick: bool) -> list[CoverageTask]:
    """Tasks: one where theorem_n and theorem_h are far from vacuous, one small and noisy."""
    big = 20_000 if quick else 50_000
    return [
        CoverageTask("linear-2d-eta05", (1.0, 0.5), -0.75, 0.05, big, big // 2, (0.02, 0.05, 0.1, 0.2)),
        CoverageTask("linear-2d-eta20-small", (-1.0, 1.0), 0.1, 0.20, 3_000, 3_000, (0.05, 0.1, 0.25, 0.5)),
    ]


def clopper_pearson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval for k successes in n trials at ``level``."""
    a = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1.0 - a, k + 1, n - k))
    return lo, hi


def _fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1e4, max_iter=1000).fit(x.astype(np.float64), y)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def _sample(task: CoverageTask, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.random((n, 2))
    clean = linear_rule_predict(np.asarray(task.w_star), task.b_star, x)
    flip = rng.random(n) < task.eta
    return x, np.where(flip, 1 - clean, clean).astype(np.int64)


def one_draw(task: CoverageTask, seed: int, delta: float) -> dict[str, Any]:
    """One draw of S and the held-out set: fitted rule, exact true error, every result."""
    rng = np.random.default_rng(seed)
    x, y = _sample(task, task.n, rng)
    hx, hy = _sample(task, task.m, rng)
    w, b = _fit_logistic(x, y)
    truth = linear_true_error(w, b, np.asarray(task.w_star), task.b_star, task.eta)
    loss = (linear_rule_predict(w, b, x) != y).astype(np.uint8)
    hloss = (linear_rule_predict(w, b, hx) != hy).astype(np.uint8)
    stable, _ = linear_rule_stability(w, b, x, task.kappas)
    kf = kappa_fine_bounds(model=task.name, train_x=x, train_y=y, train_loss=loss, stable=stable, kappas=task.kappas,
                           num_classes=2, delta=delta, heldout_x=hx, heldout_y=hy, heldout_loss=hloss,
                           stability_method="exact", stability_sound=True)
    values: dict[tuple[str, float | None], tuple[str, float, float | None]] = {}
    for side, rep in zip(task.kappas, kf.reports):
        for r in rep.results:
            if r.name == "holdout_cp":
                continue
            values[(r.name, side)] = (r.kind, r.delta, r.value)
    e = int(hloss.sum())
    values[("holdout_cp", None)] = ("certified", delta, float(clopper_pearson_upper(e, task.m, delta)))
    for bst in kf.best:
        values[("best:" + bst["name"], None)] = ("certified", bst["delta"], bst["value"])
    common = dict(model=task.name, train_x=x, train_y=y, train_loss=loss, kappas=task.kappas, num_classes=2,
                  delta=delta, heldout_x=hx, heldout_y=hy, heldout_loss=hloss, stability_method="exact",
                  stability_sound=True)
    values.update(_budget_run(task, x, y, stable, seed, common))
    return {"true_error": truth, "values": values, "train_error": float(loss.mean()),
            "heldout_error": float(hloss.mean()), "sanity": kf.sanity, "sampling": _subsample_run(task, kf, seed)}


def _budget_run(task: CoverageTask, x: np.ndarray, y: np.ndarray, stable: np.ndarray, seed: int,
                common: dict[str, Any]) -> dict[tuple[str, float | None], tuple[str, float, float | None]]:
    """Partial run (a): the exact verifier called on at most BUDGET_FRACTION * n samples, cell by
    cell on the finest grid (smallest kappa, closing a cell at its first proof there)."""
    j0 = int(np.argmin(task.kappas))
    finest = grid_partition(x, y, kappa=float(task.kappas[j0]), num_classes=2)
    plan = BudgetPlan(finest.train_cell, seed, max(1, int(BUDGET_FRACTION * task.n)), close_at=j0)
    checked, flags = spend_budget(plan, lambda idx: stable[idx], stable.shape[1])
    kf = kappa_fine_bounds(**{**common, "stable": flags}, train_checked=checked, selection="cells",
                           selection_seed=seed)
    out = {}
    for side, rep in zip(task.kappas, kf.reports):
        for r in rep.results:
            if r.kind == "certified" and r.name != "holdout_cp":
                out[("budget:" + r.name, side)] = (r.kind, r.delta, r.value)
    for bst in kf.best:
        out[("budget:best:" + bst["name"], None)] = ("certified", bst["delta"], bst["value"])
    return out


def _subsample_run(task: CoverageTask, kf: Any, seed: int) -> dict[tuple[str, float], tuple[float, float]]:
    """Partial run (b): per grid, the subsampled limits against the full-sample values."""
    n = task.n
    ch = np.zeros(n, dtype=bool)
    ch[uniform_subsample(n, SUBSAMPLE_FRACTION, seed)] = True
    out: dict[tuple[str, float], tuple[float, float]] = {}
    for side, full_stats, full_rep in zip(task.kappas, kf.stats, kf.reports):
        sub = replace(full_stats, train_stable=full_stats.train_stable & ch[:, None], train_checked=ch,
                      selection="uniform", selection_seed=seed, delta_s=DELTA_S)
        rep = compute_bounds(sub, full_rep.delta)
        for name in ("stability_b", "stability_a"):
            (a,), (b,) = rep.select(name), full_rep.select(name)
            out[("subsample:" + name, side)] = (a.value, b.value)
        for key in ("unstable_fraction", "robust_train_error"):
            out[("subsample:" + key, side)] = (rep.models[0][key][0], full_rep.models[0][key][0])
    return out


@dataclass
class CoverageResult:
    """Rows of the coverage check, per-task summaries, and whether it passed."""

    rows: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    draws: int
    delta: float
    quick: bool
    wall_s: float = 0.0
    sanity: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r["ci_low"] <= r["delta"] for r in self.rows if r["kind"] in CHECKED_ROWS)

    def to_dict(self) -> dict[str, Any]:
        return {"check": "coverage", "passed": self.passed, "draws": self.draws, "delta": self.delta,
                "quick": self.quick, "rule": "certified rows must have ci_low <= delta (two-sided 95% Clopper-Pearson "
                "interval of the failure rate, failure = value < exact true error); sampling rows (uniform "
                "subsample) must have ci_low <= delta_s (failure = subsampled limit < full-sample value)",
                "partial_runs": {"budget_fraction": BUDGET_FRACTION, "subsample_fraction": SUBSAMPLE_FRACTION,
                                 "delta_s": DELTA_S}, "rows": self.rows,
                "tasks": self.tasks, "sanity_kappa_to_zero": self.sanity, "wall_s": round(self.wall_s, 2)}

    def table(self) -> str:
        heads = ["task", "result", "kind", "grid", "delta", "draws", "failures", "rate", "ci_low", "ci_high",
                 "mean value", "mean true"]
        body = []
        for r in self.rows:
            body.append([r["task"], r["name"], r["kind"], "-" if r["grid_side"] is None else f"{r['grid_side']:g}",
                         f"{r['delta']:.4g}" if r["delta"] is not None else "-", str(r["draws"]), str(r["failures"]),
                         f"{r['failure_rate']:.3f}", f"{r['ci_low']:.3f}", f"{r['ci_high']:.3f}",
                         "null" if r["mean_value"] is None else f"{r['mean_value']:.4f}", f"{r['mean_true_error']:.4f}"])
        w = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]
        fmt = lambda row: "  ".join(c.ljust(w[i]) if i < 3 else c.rjust(w[i]) for i, c in enumerate(row))  # noqa: E731
        lines = [f"coverage check: {self.draws} draws per task, delta = {self.delta:g}; failure = value < exact true error",
                 fmt(heads)] + [fmt(b) for b in body]
        for t in self.tasks:
            lines.append(f"task {t['task']}: eta={t['eta']:g} n={t['n']} m={t['m']} kappas={list(t['kappas'])}; "
                         f"mean true error {t['mean_true_error']:.4f}, mean train error {t['mean_train_error']:.4f}")
        for s in self.sanity:
            lines.append(f"kappa->0 check {s['model']} {s['name']}*: {s['flag']}: {s['message']}")
        bad = [r for r in self.rows if r["kind"] in CHECKED_ROWS and r["ci_low"] > r["delta"]]
        lines.append("PASSED: every certified and sampling row has ci_low <= delta" if not bad else
                     "FAILED: rows with ci_low > delta: " + ", ".join(f"{r['task']}/{r['name']}" for r in bad))
        lines.append("grid = side of the kappa-fine grid (each kappa its own partition, delta split over the grid); "
                     "best:<name> = best certified value over the grid at the full delta")
        lines.append(f"budget:<name> = stability verified on at most {BUDGET_FRACTION:g} n samples, cell by cell; "
                     f"subsample:<name> (sampling) = limits from a uniform subsample of {SUBSAMPLE_FRACTION:g} n, "
                     f"failure = below the full-sample value, delta = delta_s = {DELTA_S:g}")
        return "\n".join(lines)


def run_coverage(quick: bool = False, draws: int | None = None, delta: float = 0.05, seed: int = 0,
                 progress: bool = True, tasks: list[CoverageTask] | None = None) -> CoverageResult:
    """Run the coverage check (``draws``: R, default 20 with ``quick`` else 200)."""
    R = int(draws if draws is not None else (20 if quick else 200))
    if R < 1:
        raise UserInputError(f"draws must be >= 1, got {draws}")
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    specs = tasks if tasks is not None else coverage_tasks(quick)
    rows, summaries, sanity = [], [], []
    for ti, task in enumerate(specs):
        fails: dict[tuple[str, Any], list] = {}
        sampling: dict[tuple[str, Any], list] = {}
        truths, trains = [], []
        for r in tqdm(range(R), desc=f"coverage {task.name}", unit="draw", disable=not progress):
            d = one_draw(task, seed * 1_000_003 + ti * 10_007 + r, delta)
            truths.append(d["true_error"])
            trains.append(d["train_error"])
            if r == 0:
                sanity.extend(d["sanity"])
            for key, (kind, dl, v) in d["values"].items():
                acc = fails.setdefault(key, [kind, dl, 0, [], 0])
                if kind != acc[0]:
                    acc[0] = "diagnostic"
                vv = math.inf if v is None else v
                acc[2] += int(vv < d["true_error"])
                acc[3].append(vv)
            for key, (sub, full) in d["sampling"].items():
                acc = sampling.setdefault(key, [0, [], []])
                acc[0] += int(sub < full)
                acc[1].append(sub)
                acc[2].append(full)
        for (name, side), (kind, dl, f, vals, _) in fails.items():
            lo, hi = clopper_pearson_interval(f, R)
            mv = float(np.mean(vals))
            rows.append({"task": task.name, "name": name, "kind": kind, "grid_side": side, "kappa": side,
                         "delta": dl if kind == "certified" else None, "draws": R, "failures": f,
                         "failure_rate": f / R, "ci_low": lo, "ci_high": hi,
                         "mean_value": mv if math.isfinite(mv) else None, "mean_true_error": float(np.mean(truths))})
        for (name, side), (f, subs, fulls) in sampling.items():
            lo, hi = clopper_pearson_interval(f, R)
            rows.append({"task": task.name, "name": name, "kind": "sampling", "grid_side": side, "kappa": side,
                         "delta": DELTA_S, "draws": R, "failures": f, "failure_rate": f / R, "ci_low": lo,
                         "ci_high": hi, "mean_value": float(np.mean(subs)), "mean_true_error": float(np.mean(truths)),
                         "mean_full_sample_value": float(np.mean(fulls))})
        summaries.append({"task": task.name, "eta": task.eta, "n": task.n, "m": task.m, "kappas": list(task.kappas),
                          "w_star": list(task.w_star), "b_star": task.b_star, "mean_true_error": float(np.mean(truths)),
                          "mean_train_error": float(np.mean(trains)),
                          "learner": "logistic regression (sklearn, C=1e4); rule 1[w.x + b > 0]",
                          "true_error": "exact: eta + (1 - 2 eta) * area of disagreement with the teacher",
                          "stability": "exact (closed form for a linear rule on the domain-clipped l_inf box)"})
    order = {"certified": 0, "sampling": 1}
    rows.sort(key=lambda r: (r["task"], order.get(r["kind"], 2), r["name"], -1 if r["grid_side"] is None else r["grid_side"]))
    return CoverageResult(rows, summaries, R, float(delta), bool(quick), time.perf_counter() - t0, sanity)
