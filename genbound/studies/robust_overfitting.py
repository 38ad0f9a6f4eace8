"""The robust-overfitting study (``genbound study robust-overfitting``; spec wci.md §3-§5).

Three runs on the same data, model initialization and attack:

- ``pgd_piecewise``: PGD-AT, piecewise decay (x0.1 at the milestones); with a validation split,
  so "piecewise + early stopping" is read off the same run (the epoch of best validation robust
  accuracy);
- ``awp``: AWP (Wu et al. 2020) on the same schedule;
- ``pgd_wci_guarded``: PGD-AT with the WCI-guarded schedule (genbound's own design, spec §4), in
  ``raise`` mode (tau 0.1, patience 2, x2 up to the base rate): ``freeze`` only cancels later decays,
  so it cannot act on overfitting that sets in between the first and the second decay;

plus, in the full configuration, ``pgd_cosine``. Every epoch's record (spec §1) goes to
``runs/<name>/epochs.jsonl``; ``study.json`` gathers the runs, WCI-gap correlations (overall and per
learning-rate phase), the robust-overfitting verdict of every run (computed by
:func:`genbound.studies.stats.robust_overfitting`), the comparison table and the learning dynamics
around the first decay of the PGD-AT run (:mod:`genbound.studies.dynamics`).

Setting (full): 1,000 training images of ``mnist5k``, an MLP 784-1024-1024-10 on raw [0, 1]
pixels, l_inf PGD-5 training at eps 0.2 (step 2.5 eps / 5), SGD (momentum 0.9, weight decay 5e-4,
batch 32), lr 0.05 decayed x0.1 at epochs 30 and 55, 80 epochs; evaluation with PGD-10 (step eps/4) on
500 training and 3,000 test images (disjoint from the 500 validation images). ``label_noise``
(``--label-noise``) replaces that fraction of the *training* labels by random other classes
(:func:`genbound.data.randomize_labels`; validation and test labels stay clean); the robust train
accuracy is then measured against the labels trained on. ``--quick`` is a toy version of the same
protocol (few epochs, small subsets) that checks the machinery, not the phenomenon.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from genbound.errors import UserInputError
from genbound.fileio import write_text
from genbound.studies.stats import robust_overfitting, wci_gap_correlations
from genbound.torch_utils import derive_seed
from genbound.train import TrackConfig, TrainConfig, train_adversarial

SCHEMA = "genbound.study.robust_overfitting/1"


@dataclass
class StudyConfig:
    """Data, model, base training configuration, runs and dynamics settings of the study."""

    dataset: str = "mnist5k"
    label_noise: float = 0.0
    n_train: int = 1000
    n_val: int = 500
    n_test: int = 3000
    hidden: tuple[int, ...] = (1024, 1024)
    split_seed: int = 0
    base: TrainConfig = field(default_factory=lambda: TrainConfig(
        method="pgd", eps=0.2, attack_steps=5, epochs=80, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4,
        schedule={"name": "piecewise", "milestones": [30, 55], "factor": 0.1},
        track=TrackConfig(eval_train_size=500, eval_test_size=3000, eval_steps=10, wci_subset=256, wci_probes=4,
                          expensive_every=5, dense_after_decay=3, top_eig_iters=20, trace_c_subset=128)))
    runs: tuple[str, ...] = ("pgd_piecewise", "awp", "pgd_wci_guarded", "pgd_cosine")
    guard: dict[str, Any] = field(default_factory=lambda: {"tau": 0.1, "patience": 2, "mode": "raise", "gamma_up": 2.0})
    awp_gamma: float = 5e-3
    dynamics: dict[str, Any] | None = field(default_factory=lambda: {"k": 3, "subset": 256, "replicas": 4,
                                                                      "steps1": 80, "steps2": 80})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["base"] = self.base.to_dict()
        return d


SETTINGS = ("mnist5k-noisy", "mnist5k")


def full_config(setting: str = "mnist5k-noisy") -> StudyConfig:
    """The full study's configuration for a named setting.

    - ``"mnist5k"``: the plain setting (the :class:`StudyConfig` defaults): clean labels, eps 0.2,
      decays at epochs 30 and 55 of 80.
    - ``"mnist5k-noisy"``: 20 % of the 1,000 training labels replaced by random other classes
      (validation and test labels clean), eps 0.1, one decay at epoch 12 of 60; the other settings
      as in ``"mnist5k"``. Label noise is the known amplifier of robust overfitting (Dong et al.
      2022, "Label noise in adversarial training"); at this scale on CPU the plain setting shows the
      rise of the robust *loss* gap but not a fall of robust test accuracy.
    """
    if setting == "mnist5k":
        return StudyConfig()
    if setting == "mnist5k-noisy":
        s = StudyConfig(label_noise=0.2)
        s.base.eps = 0.1
        s.base.epochs = 60
        s.base.schedule = {"name": "piecewise", "milestones": [12], "factor": 0.1}
        return s
    raise UserInputError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}")


def quick_config() -> StudyConfig:
    """A toy version of the full protocol (about a minute on a CPU core): checks that every field is
    produced; too short to show the phenomenon."""
    base = TrainConfig(method="pgd", eps=0.2, attack_steps=3, epochs=6, batch_size=32, lr=0.05, momentum=0.9,
                       weight_decay=5e-4, schedule={"name": "piecewise", "milestones": [3], "factor": 0.1},
                       track=TrackConfig(eval_train_size=256, eval_test_size=512, eval_steps=5, wci_subset=128,
                                         wci_probes=2, expensive_every=3, dense_after_decay=1, top_eig_iters=10,
                                         trace_c_subset=64))
    return StudyConfig(n_train=512, n_val=128, n_test=512, hidden=(256, 256), base=base,
                       runs=("pgd_piecewise", "awp", "pgd_wci_guarded"),
                       guard={"tau": 0.0, "patience": 1, "mode": "raise", "gamma_up": 2.0},
                       dynamics={"k": 2, "subset": 128, "replicas": 2, "steps1": 16, "steps2": 16})


def run_config(study: StudyConfig, name: str) -> TrainConfig:
    """The training configuration of run ``name`` (derived from ``study.base``)."""
    cfg = copy.deepcopy(study.base)
    sched = dict(cfg.schedule)
    if name == "pgd_piecewise":
        pass
    elif name == "awp":
        cfg.method = "awp"
        cfg.awp_gamma = study.awp_gamma
    elif name == "pgd_wci_guarded":
        sched = {**sched, "name": "wci_guarded", **study.guard}
    elif name == "pgd_cosine":
        sched = {"name": "cosine", "epochs": cfg.epochs}
    elif name == "trades":
        cfg.method = "trades"
    else:
        raise UserInputError(f"unknown run {name!r}; use pgd_piecewise, awp, pgd_wci_guarded, pgd_cosine, trades")
    cfg.schedule = sched
    return cfg


def load_data(study: StudyConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Disjoint train / validation / test tensors drawn by a seeded permutation of the dataset."""
    from genbound.data import load_dataset

    src = load_dataset(study.dataset)
    x, y = src.tensors()
    need = study.n_train + study.n_val + study.n_test
    if need > x.shape[0]:
        raise UserInputError(f"{study.dataset} has {x.shape[0]} images, the study asks for {need}")
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(derive_seed(study.split_seed, 31)))
    a, b = study.n_train, study.n_train + study.n_val
    parts = {"train": perm[:a], "val": perm[a:b], "test": perm[b:need]}
    out = {k: (x[v].float(), y[v].long()) for k, v in parts.items()}
    if study.label_noise > 0:
        from genbound.data import TensorSource, randomize_labels

        noisy, _ = randomize_labels(TensorSource(out["train"][0], out["train"][1], num_classes=int(y.max()) + 1),
                                    study.label_noise, seed=derive_seed(study.split_seed, 32) % 2**32)
        out["train"] = (out["train"][0], torch.as_tensor(noisy.labels, dtype=torch.long))
    return out


def make_model(study: StudyConfig, shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    from genbound.models import mlp

    return mlp(shape, num_classes, hidden=study.hidden, seed=study.base.seed)


def run_study(study: StudyConfig, out_dir: str | Path, *, show_progress: bool = False,
              log: Any = None) -> dict[str, Any]:
    """Train every run (resuming any that were interrupted), then write ``study.json``, the plots
    and ``report.md`` into ``out_dir``; returns the study dict."""
    from genbound.studies.dynamics import learning_dynamics
    from genbound.studies.plots import plot_curves, plot_dynamics

    out = Path(out_dir)
    t_start = time.perf_counter()
    data = load_data(study)
    shape = tuple(data["train"][0].shape[1:])
    num_classes = int(max(int(t[1].max()) for t in data.values()) + 1)
    runs: dict[str, Any] = {}
    correlations: list[dict[str, Any]] = []
    for name in study.runs:
        cfg = run_config(study, name)
        model = make_model(study, shape, num_classes)
        first = cfg.schedule.get("milestones", [None])[0] if cfg.schedule.get("milestones") else None
        snaps = [first - 1] if (name == "pgd_piecewise" and first) else []
        if log:
            log(f"run {name}: {cfg.method}, schedule {cfg.schedule}")
        res = train_adversarial(model, data["train"], data["test"], cfg, out_dir=out / "runs" / name, val=data["val"],
                                snapshot_epochs=snaps, show_progress=show_progress)
        m_test = res.protocol["eval_test_size"]
        verdict = robust_overfitting(res.epochs, res.schedule["decay_epochs"], m_test)
        runs[name] = {**res.to_dict(), "robust_overfitting": verdict}
        correlations += wci_gap_correlations(name, res.epochs)
        if log:
            log(f"  {name}: best {res.best['test_rob_acc']:.4f} (epoch {res.best['epoch']}), last "
                f"{res.last['test_rob_acc']:.4f}; robust overfitting observed: {verdict['observed']} ({res.seconds:.0f} s)")
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "provenance": "reconstructed (spec wci.md); WCI-guarded schedule is genbound's own design",
        "config": study.to_dict(),
        "data": {"dataset": study.dataset, "label_noise_train": study.label_noise, "n_train": study.n_train, "n_val": study.n_val, "n_test": study.n_test,
                 "split": f"torch.randperm(N, generator=manual_seed(derive_seed({study.split_seed}, 31)))"},
        "runs": runs,
        "correlations": correlations,
        "comparison": comparison(runs),
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads()},
    }
    if study.dynamics and "pgd_piecewise" in runs:
        cfg = run_config(study, "pgd_piecewise")
        first = cfg.schedule["milestones"][0]
        snap_path = out / "runs" / "pgd_piecewise" / f"snapshot_{first - 1}.pt"
        if snap_path.exists():
            if log:
                log("learning dynamics around the first decay ...")
            snap = torch.load(snap_path, map_location="cpu", weights_only=True)
            eta1 = cfg.lr * cfg.schedule.get("factor", 0.1) ** 0
            eta2 = cfg.lr * cfg.schedule.get("factor", 0.1)
            dyn = learning_dynamics(make_model(study, shape, num_classes), snap, data["train"], cfg, eta1=eta1, eta2=eta2,
                                    seed=cfg.seed, **study.dynamics)
            result["dynamics"] = dyn
    plots = {"curves": plot_curves(runs, str(out / "plots" / "curves.png"))}
    if "dynamics" in result:
        plots["dynamics"] = plot_dynamics(result["dynamics"], str(out / "plots" / "dynamics.png"))
    result["plots"] = {k: str(Path(v).relative_to(out)) for k, v in plots.items()}
    result["seconds"] = time.perf_counter() - t_start
    write_text(out / "study.json", json.dumps(result, indent=1, allow_nan=False) + "\n")
    write_text(out / "report.md", report_text(result) + "\n")
    return result


def comparison(runs: dict[str, Any]) -> list[dict[str, Any]]:
    """Best and last robust test accuracy of every run, best - last, and the early-stopped value."""
    rows = []
    for name, r in runs.items():
        rows.append({
            "run": name, "best_test_rob_acc": r["best"]["test_rob_acc"], "best_epoch": r["best"]["epoch"],
            "last_test_rob_acc": r["last"]["test_rob_acc"],
            "best_minus_last": r["best"]["test_rob_acc"] - r["last"]["test_rob_acc"],
            "early_stopped_test_rob_acc": r["best_val"]["test_rob_acc"] if r.get("best_val") else None,
            "early_stopped_epoch": r["best_val"]["epoch"] if r.get("best_val") else None,
            "last_clean_test_acc": r["last"]["clean_test_acc"],
            "robust_overfitting_observed": r["robust_overfitting"]["observed"],
        })
    return rows


def _f(v: Any, nd: int = 4) -> str:
    return "null" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def report_text(result: dict[str, Any]) -> str:
    """A short Markdown report: verdicts, the comparison table, correlations, dynamics."""
    lines = ["# Robust-overfitting study", "",
             f"Data: {result['data']}", "", "## Robust overfitting (computed, definition in study.json)", ""]
    for name, r in result["runs"].items():
        v = r["robust_overfitting"]
        lines.append(f"- **{name}**: observed = **{v['observed']}**; peak test robust acc {_f(v['peak_test_rob_acc'])} at "
                     f"epoch {v['peak_epoch']} (first decay {v['first_decay']}), last {_f(v['last_test_rob_acc'])}, "
                     f"drop {_f(v['drop'])} vs half-width {_f(v['half_width'])} (m_test={v['m_test']}); train robust acc "
                     f"{_f(v['train_rob_acc_at_peak'])} at peak -> {_f(v['train_rob_acc_last'])} last "
                     f"(Spearman vs epoch after peak {_f(v['train_trend_spearman_after_peak'], 3)})")
    lines += ["", "## Best and last robust test accuracy", "",
              "| run | best (epoch) | last | best - last | early-stopped (epoch) | last clean |", "|---|---|---|---|---|---|"]
    for c in result["comparison"]:
        lines.append(f"| {c['run']} | {_f(c['best_test_rob_acc'])} ({c['best_epoch']}) | {_f(c['last_test_rob_acc'])} | "
                     f"{_f(c['best_minus_last'])} | {_f(c['early_stopped_test_rob_acc'])} ({c['early_stopped_epoch']}) | "
                     f"{_f(c['last_clean_test_acc'])} |")
    lines += ["", "## Correlation of WCI with gap_acc", "", "| run | phase | n | Pearson | Spearman | Kendall |",
              "|---|---|---|---|---|---|"]
    for c in result["correlations"]:
        lines.append(f"| {c['run']} | {c['phase']} | {c['n']} | {_f(c['pearson'], 3)} | {_f(c['spearman'], 3)} | "
                     f"{_f(c['kendall'], 3)} |")
    d = result.get("dynamics")
    if d:
        title = (f"## Learning dynamics ({d['layer']}, snapshot after epoch {d['snapshot_epoch']}, "
                 f"eta {d['eta1']:g} -> {d['eta2']:g}, {d['replicas']} replicas)")
        header = ("| direction | h_i | c_i | predicted var (eta1) | measured var, replicas | measured var, window | "
                  "predicted var (eta2) | measured var, end of eta2 |")
        lines += ["", title, "", header, "|---|---|---|---|---|---|---|---|"]
        for i in range(d["k"]):
            lines.append(f"| u{i + 1} | {d['h'][i]:.4g} | {d['c'][i]:.3g} | {_f(d['predicted_var_eta1'][i], 6)} | "
                         f"{_f(d['measured_var_ensemble_eta1'][i], 6)} | {_f(d['measured_var_window_eta1'][i], 6)} | "
                         f"{_f(d['predicted_var_eta2'][i], 6)} | {_f(d['measured_var_ensemble_end_eta2'][i], 6)} |")
        lines.append(f"\nPredicted 1/2 Tr(H Sigma) at eta1 (whole layer, eta Tr C / (4 B (1 - beta))): "
                     f"{d['predicted_half_tr_h_sigma_eta1']:.4g}. Over the top {d['k']} directions, 1/2 sum_i h_i var_i: "
                     f"predicted {d['predicted_half_h_var_topk_eta1']:.4g}, measured (replicas) "
                     f"{d['measured_half_h_var_ensemble_eta1']:.4g}.")
    lines.append(f"\nTotal time {result['seconds']:.0f} s with {result['environment']['threads']} torch thread(s).")
    return "\n".join(lines)
