"""``genbound study certified-lowdim``: where certified robustness bounds become non-vacuous.

Corollary N1 (background §7.3) needs a kappa-fine label-pure partition, so K grows like
``|Y| (1/kappa)^d``: the certified partition bounds can only be small for low-dimensional inputs
and many samples. This study shows both sides with the same code path:

* **synthetic** tasks with a known law (:mod:`genbound.data.lowdim`): a disc boundary in 2-D and a
  sine boundary in 4-D (two nuisance coordinates), 5 % label noise, ``n >= 10^5`` training
  samples, a small ReLU network, true error from ``10^6`` fresh inputs;
* the **real tabular** sets of scikit-learn (iris, wine, breast cancer), features mapped into
  [0, 1] by a range taken from a scaling split disjoint from the training sample
  (:mod:`genbound.data.tabular`);
* ``mnist5k`` (d = 784): vacuous; the table shows |T|, ln K and U that explain why.

Per task: train, then run the pipeline (:func:`genbound.pipeline.evaluate` with
``stability="crown"`` and ``partition="grid"``): prove stability with ``crown`` (sound; includes
IBP) at every kappa of a grid declared in advance, build one kappa-fine grid per kappa, compute
every result of the spec at ``delta / J`` (:mod:`genbound.kappa_fine`), report the best certified
value over the grid at ``delta``, and run the kappa -> 0 sanity check of the stability diagnostics.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from genbound import __version__
from genbound.bounds import SCHEMA, save_stats_npz
from genbound.config import Config
from genbound.data import TensorSource, load_dataset, split_source
from genbound.data.lowdim import sample_lowdim, true_error
from genbound.data.tabular import apply_range, fit_range, load_tabular, three_way_split
from genbound.fileio import make_output_folder, write_text
from genbound.kappa_fine import KappaFineResult
from genbound.models import mlp, train_classifier, with_normalization
from genbound.pipeline import evaluate
from genbound.torch_utils import progress as progress_iter

__all__ = ["TaskSpec", "TaskResult", "StudyResult", "study_tasks", "run_task", "run_certified_lowdim"]

LABEL_NOISE = 0.05
CHECK_LIMIT = 0.5  # a synthetic task must have certified theorem_n below this
SOUND_BATCH = 2048  # samples per batch of the pipeline (collect, crown)


@dataclass(frozen=True)
class TaskSpec:
    """One task of the study: where its data come from, the network, the kappa grid."""

    name: str
    source: str  # "synthetic" | "tabular" | "image"
    kappas: tuple[float, ...]
    hidden: tuple[int, ...] = (32, 32)
    epochs: int = 5
    batch_size: int = 256
    lr: float = 3e-3
    d: int = 2
    rule: str = ""  # synthetic: circle | sine; tabular: data set name; image: dataset name
    n: int = 0
    m: int = 0
    fresh: int = 1_000_000


def study_tasks(quick: bool) -> list[TaskSpec]:
    """The tasks and grids of the study (``quick``: smaller samples and grids, about a minute)."""
    if quick:
        synth = [
            TaskSpec("circle-2d", "synthetic", (0.02, 0.05, 0.1), d=2, rule="circle", n=100_000, m=20_000,
                     epochs=4, fresh=200_000),
            TaskSpec("sine-4d", "synthetic", (0.125, 0.25), d=4, rule="sine", n=100_000, m=20_000, epochs=4,
                     fresh=200_000),
        ]
        tab_epochs, mnist_epochs = 100, 2
    else:
        synth = [
            TaskSpec("circle-2d", "synthetic", (0.01, 0.02, 0.05, 0.1), d=2, rule="circle", n=200_000, m=50_000),
            TaskSpec("sine-4d", "synthetic", (0.1, 0.125, 0.2, 0.25), d=4, rule="sine", n=400_000, m=50_000),
        ]
        tab_epochs, mnist_epochs = 300, 10
    tab = [TaskSpec(name, "tabular", (0.1, 0.25, 0.5), hidden=(32,), epochs=tab_epochs, batch_size=32, lr=1e-2,
                    rule=name) for name in ("iris", "wine", "breast_cancer")]
    img = [TaskSpec("mnist5k", "image", (0.005, 0.01, 0.02), hidden=(64,), epochs=mnist_epochs, batch_size=64,
                    lr=1e-3, rule="mnist5k")]
    return synth + tab + img


@dataclass
class TaskResult:
    """Everything one task produced."""

    spec: TaskSpec
    bounds: KappaFineResult
    train_error: float
    heldout_error: float | None
    true_error: dict | None
    data: dict
    stability: dict
    wall_s: float

    def row(self, kappa: float) -> dict[str, Any]:
        """The decomposition at one kappa (one partition): K, ln K, |T|, proven fraction and every value."""
        rep = self.bounds.at(kappa)
        part = next(p for p in self.bounds.partitions if p["side"] == kappa)
        # results without kappa (holdout_cp, theorem_h, than_*) of this kappa's partition are on the same row
        by = {r.name: r for r in rep.results}
        tn = by["theorem_n"]
        return {"kappa": kappa, "K": part["K"], "log_K": part["log_K"], "|T|": tn.terms["|T|"],
                "proven_fraction": tn.terms["proven_fraction"], "train_error": tn.terms["train_error"],
                "U_theorem_n": tn.terms["concentration"], "U_kawaguchi": by["kawaguchi"].terms["concentration"],
                **{name: (r.value, r.kind) for name, r in by.items()},
                "N": (tn.terms["N1"], tn.terms["N2"], tn.terms["N3"])}


@dataclass
class StudyResult:
    """The study: per task its result, and the checks the study must pass."""

    tasks: list[TaskResult]
    delta: float
    quick: bool
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def check(self) -> dict[str, Any]:
        """A synthetic task has certified theorem_n < 0.5 (with holdout_cp, xu_mannor, kawaguchi beside it)."""
        best = None
        for t in self.tasks:
            if t.spec.source != "synthetic":
                continue
            for r in t.bounds.report.results:
                if r.name == "theorem_n" and r.kind == "certified" and r.value is not None:
                    if best is None or r.value < best[1].value:
                        best = (t, r)
        if best is None:
            return {"passed": False, "reason": "no certified theorem_n on a synthetic task"}
        t, r = best
        row = t.row(r.kappa)
        return {"passed": bool(r.value < CHECK_LIMIT), "limit": CHECK_LIMIT, "task": t.spec.name, "kappa": r.kappa,
                "K": row["K"], "theorem_n": r.value, "delta": r.delta, "holdout_cp": row["holdout_cp"][0],
                "xu_mannor": row["xu_mannor"][0], "kawaguchi": row["kawaguchi"][0],
                "true_error": None if t.true_error is None else t.true_error["value"], "n": t.data["n"]}

    def table(self) -> str:
        lines = []
        for t in self.tasks:
            lines.extend(_task_table(t))
            lines.append("")
        c = self.check()
        lines.append(("CHECK passed" if c["passed"] else "CHECK FAILED") + f": a synthetic task has certified theorem_n < {CHECK_LIMIT}"
                     + (f" -- {c['task']} kappa={c['kappa']:g} K={c['K']}: theorem_n {c['theorem_n']:.4f} (delta {c['delta']:g})"
                        f" vs holdout_cp {c['holdout_cp']:.4f}, xu_mannor {c['xu_mannor']:.4f}, kawaguchi "
                        f"{c['kawaguchi']:.4f}; true error {c['true_error']:.4f}" if "task" in c else ""))
        lines.append("certified = a high-probability upper bound (a theorem under its listed assumptions); "
                     "* = diagnostic (an estimate, not a bound).")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        models, results, best, acct, sanity, tasks = [], [], [], {}, [], []
        for t in self.tasks:
            d = t.bounds.report.to_dict()
            models.extend(d["models"])
            results.extend(d["results"])
            best.extend(t.bounds.best)
            acct[t.spec.name] = t.bounds.delta_accounting
            sanity.extend(t.bounds.sanity)
            tasks.append({"model": t.spec.name, "source": t.spec.source, "spec": _jsonable(t.spec.__dict__),
                          "train_error": t.train_error, "heldout_error": t.heldout_error, "true_error": t.true_error,
                          "data": t.data, "stability": t.stability, "partitions": t.bounds.partitions,
                          "wall_s": round(t.wall_s, 2)})
        return {"schema": SCHEMA, "genbound_version": __version__, "study": "certified-lowdim", "quick": self.quick,
                "delta": self.delta, "loss": "0-1 (top-1), in [0, 1]", "models": models, "results": results,
                "best_over_grid": best, "delta_accounting": acct, "sanity_kappa_to_zero": sanity, "tasks": tasks,
                "check": self.check(), "notes": self.notes, "wall_s": round(self.wall_s, 2)}

    def save(self, out: str) -> dict[str, str]:
        """``result.json`` (atomic), ``samples.npz`` (every partition's statistics), ``table.txt`` and the
        page ``report.html``."""
        make_output_folder(out)
        paths = {"result": os.path.join(out, "result.json"), "samples": os.path.join(out, "samples.npz"),
                 "table": os.path.join(out, "table.txt")}
        write_text(paths["result"], json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        save_stats_npz(paths["samples"], [s for t in self.tasks for s in t.bounds.stats])
        write_text(paths["table"], self.table() + "\n")
        from genbound.report import write_report
        paths["html"] = write_report([out])
        return paths


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def _fmt(v: float | None, w: int = 8) -> str:
    if v is None:
        return "null".rjust(w)
    return (f"{v:.4f}" if abs(v) < 1e4 else f"{v:.3g}").rjust(w)


def _task_table(t: TaskResult) -> list[str]:
    s, kf = t.spec, t.bounds
    te = t.true_error
    head = (f"== {s.name} ({t.data['description']}): n={t.data['n']} m={t.data['m']} d={t.data['d']}  "
            f"train error {t.train_error:.4f}  held-out error "
            f"{'n/a' if t.heldout_error is None else f'{t.heldout_error:.4f}'}")
    if te is not None:
        head += f"  true error {te['value']:.4f} [{te['low']:.4f}, {te['high']:.4f}] ({te['draws']} fresh inputs)"
    lines = [head,
             f"   stability: crown (sound), linf, proven per kappa {t.stability.get('proven_stable_per_kappa')}; "
             f"partition: one label-pure l_inf grid of side kappa per kappa over [0,1]^d; delta {kf.delta:g} split "
             f"over {len(kf.partitions)} grids -> {kf.delta_per_partition:.4g} each"]
    cols = ["kappa", "K", "ln K", "|T|", "proven", "R_S", "U_N", "theorem_n", "N1", "N2", "N3", "xu_mannor",
            "kawaguchi", "U_kaw", "theorem_h", "holdout_cp", "stab_b*", "than_lavg*"]
    lines.append("   " + " ".join(c.rjust(9) for c in cols))
    for kap in s.kappas:
        r = t.row(kap)
        K = r["K"] if r["K"] is not None and r["K"] < 10**8 else f"e^{r['log_K']:.1f}"
        v = lambda name: r[name][0] if name in r else None  # noqa: E731
        cells = [f"{kap:g}", str(K), f"{r['log_K']:.1f}", str(r["|T|"]), f"{r['proven_fraction']:.3f}",
                 f"{r['train_error']:.4f}"] + [_fmt(x, 0) for x in (
                     r["U_theorem_n"], v("theorem_n"), *r["N"], v("xu_mannor"), v("kawaguchi"), r["U_kawaguchi"],
                     v("theorem_h"), v("holdout_cp"), v("stability_b"), v("than_localavg"))]
        lines.append("   " + " ".join(c.rjust(9) for c in cells))
    for b in kf.best:
        if b["name"] == "theorem_n":
            lines.append(f"   best certified theorem_n over the grid: {b['value']:.4f} at kappa={b['kappa']:g} "
                         f"(K={b['K'] if b['K'] is not None else 'e^%.0f' % b['log_K']}), certified at 1 - {b['delta']:g}")
    vac = [b for b in kf.best if b["name"] == "theorem_n" and b["value"] >= 1]
    if vac:
        r = t.row(vac[0]["kappa"])
        n = t.data["n"]
        lines.append(f"   vacuous, and why (kappa={vac[0]['kappa']:g}): theorem_n = (training mass in unproven cells "
                     f"{r['theorem_n'][0] - r['U_theorem_n']:.3f}) + U {r['U_theorem_n']:.3g}; |T| = {r['|T|']} occupied "
                     f"cells for n = {n} samples, ln K = {r['log_K']:.1f}: a small U needs |T| ln K << n, here "
                     f"|T| ln K / n = {r['|T|'] * r['log_K'] / n:.3g}; proven fraction {r['proven_fraction']:.3f}")
    for sc in kf.sanity:
        if sc["name"] == "stability_b":
            lines.append(f"   kappa->0 check (stability_b*): {sc['flag']}: {sc['message']}")
    return lines


def _predict(model: torch.nn.Module, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            out.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + chunk]))).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _load(spec: TaskSpec, seed: int) -> tuple[np.ndarray, ...]:
    """(train_x, train_y, heldout_x, heldout_y, num_classes, data record, normalization or None)."""
    if spec.source == "synthetic":
        x, y, _ = sample_lowdim(spec.n, spec.d, spec.rule, LABEL_NOISE, seed)
        hx, hy, _ = sample_lowdim(spec.m, spec.d, spec.rule, LABEL_NOISE, seed + 1)
        rec = {"description": f"synthetic, {spec.rule} boundary, label noise {LABEL_NOISE:g}",
               "law": f"x ~ U[0,1]^{spec.d}; genbound.data.lowdim rule {spec.rule!r}", "seeds": [seed, seed + 1]}
        return x, y, hx, hy, 2, rec, None
    if spec.source == "tabular":
        X, Y, C = load_tabular(spec.rule)
        sc, tr, ho = three_way_split(Y, (0.2, 0.6, 0.2), seed)
        lo, hi = fit_range(X[sc])
        rec = {"description": f"scikit-learn {spec.rule}, range from a disjoint scaling split",
               "scaling": {"split": "stratified (scaling, train, held-out) = (0.2, 0.6, 0.2)", "seed": seed,
                           "scaling_samples": int(sc.size), "rule": "per feature [min - 0.1 span, max + 0.1 span] "
                           "of the scaling split, then clip((x - lo)/(hi - lo), 0, 1)",
                           "fitted_on_training_sample": False}}
        return apply_range(X[tr], lo, hi), Y[tr], apply_range(X[ho], lo, hi), Y[ho], C, rec, None
    src = load_dataset(spec.rule)
    train, held, split = split_source(src, 0.2, seed=seed)
    x, y = train.get(np.arange(len(train)))
    hx, hy = held.get(np.arange(len(held)))
    rec = {"description": f"{spec.rule}, real images in [0,1] (pixels / 255), 80/20 stratified split",
           "split": split.record()}
    return (x.reshape(len(train), -1).numpy(), y.numpy(), hx.reshape(len(held), -1).numpy(), hy.numpy(),
            src.num_classes, rec, src.normalization)


def run_task(spec: TaskSpec, delta: float = 0.05, seed: int = 0, progress: bool = True) -> TaskResult:
    """Train, then the pipeline: prove stability (crown), bound on one kappa-fine grid per kappa."""
    t0 = time.perf_counter()
    x, y, hx, hy, C, rec, norm = _load(spec, seed)
    d = x.shape[1]
    shape = [1, 28, 28] if spec.source == "image" else [d]
    net = mlp(input_shape=shape, num_classes=C, hidden=spec.hidden, seed=seed)
    model = with_normalization(net, norm).eval()
    xs = x.reshape(-1, *shape)
    train_src = TensorSource(xs, y, name=spec.name, num_classes=C)
    train_classifier(model, train_src, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=seed,
                     progress_bar=False)
    model.eval()
    held_src = TensorSource(hx.reshape(-1, *shape), hy, name=f"{spec.name}-heldout", num_classes=C)
    cfg = Config(kappas=spec.kappas, partition="grid", stability="crown", norm="linf", delta=delta,
                 batch_size=SOUND_BATCH, progress=progress)
    ev = evaluate({spec.name: model}, train_src, held_src, cfg)
    res_ev = ev.records["stability"][spec.name]
    if res_ev["status"] != "verified":
        raise RuntimeError(f"{spec.name}: the sound verifier could not walk the model: {res_ev['unsupported_reason']}")
    kf = ev.grids[spec.name]
    errs = ev.records["models"][0]
    te = None
    if spec.source == "synthetic":
        te = true_error(lambda a: _predict(model, a), d, spec.rule, LABEL_NOISE, draws=spec.fresh, seed=seed + 99)
    ev_rec = {k: v for k, v in res_ev.items() if k in ("method", "sound", "norm", "kappas", "status", "tolerance",
                                                      "proven_stable_per_kappa", "intermediate_bounds")}
    rec.update(n=int(x.shape[0]), m=int(hx.shape[0]), d=int(d), num_classes=int(C),
               model={"factory": "mlp", "hidden": list(spec.hidden), "epochs": spec.epochs, "lr": spec.lr,
                      "batch_size": spec.batch_size, "seed": seed, "input_normalization": None if norm is None else norm.as_dict()})
    return TaskResult(spec, kf, float(errs["train_error"]), float(errs["heldout_error"]), te, rec, _jsonable(ev_rec),
                      time.perf_counter() - t0)


def run_certified_lowdim(quick: bool = False, delta: float = 0.05, progress: bool = True,
                         tasks: list[TaskSpec] | None = None,
                         on_task: Callable[[TaskResult], None] | None = None) -> StudyResult:
    """Run every task of :func:`study_tasks` (or ``tasks``); ``on_task`` is called after each one."""
    t0 = time.perf_counter()
    specs = tasks if tasks is not None else study_tasks(quick)
    out = []
    for spec in progress_iter(specs, enabled=progress, desc="certified-lowdim", unit="task"):
        tr = run_task(spec, delta=delta, progress=progress)
        out.append(tr)
        if on_task is not None:
            on_task(tr)
    notes = ["each kappa has its own kappa-fine grid (its own K): delta is split evenly over the kappa grid (spec §5); "
             "every value carries the delta it is certified at",
             "tabular features: range from a scaling split disjoint from the training sample, never fitted on it"]
    return StudyResult(out, float(delta), bool(quick), time.perf_counter() - t0, notes)
