"""PNG plots of the robust-overfitting study: per-epoch curves and the learning dynamics."""

from __future__ import annotations

import os
from typing import Any

from genbound.fileio import atomic_path, make_output_folder

PANELS = (
    ("rob_acc", "robust accuracy (solid: train, dashed: test)"),
    ("gap_acc", "gap_acc = train_rob_acc - test_rob_acc"),
    ("gap_loss", "gap_loss = test_rob_loss - train_rob_loss"),
    ("wci", "WCI"),
    ("weight_norm_sq", "weight_norm_sq = sum ||W_k||_F^2"),
    ("trace_h", "trace_h = sum Tr H_k"),
    ("top_eig", "top Hessian eigenvalue"),
    ("trace_c", "Tr C (per-example gradient covariance)"),
)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str) -> None:
    """``fig`` as a PNG at ``path``, written atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90, format="png")

def plot_curves(runs: dict[str, dict[str, Any]], path: str) -> str:
    """One panel per quantity of :data:`PANELS`, one colour per run, planned decays as dotted lines."""
    plt = _plt()
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (key, title), ax in zip(PANELS, axes.flat):
        for i, (name, run) in enumerate(runs.items()):
            col = colors[i % len(colors)]
            recs = run["epochs"]
            ep = [r["epoch"] for r in recs]
            if key == "rob_acc":
                ax.plot(ep, [r["train_rob_acc"] for r in recs], color=col, label=f"{name}")
                ax.plot(ep, [r["test_rob_acc"] for r in recs], color=col, ls="--")
            else:
                pts = [(r["epoch"], r[key]) for r in recs if r.get(key) is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=col, marker="." if len(pts) < len(recs) else None,
                            label=name)
            for d in run.get("schedule", {}).get("decay_epochs", []):
                ax.axvline(d, color=col, ls=":", lw=0.8)
            for ev in run.get("schedule", {}).get("events", []) or []:
                ax.axvline(ev["epoch"], color=col, ls="-.", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("robust overfitting study (dotted: planned decays; dash-dot: WCI-guard events)")
    fig.tight_layout()
    make_output_folder(os.path.dirname(path) or ".")
    _save(fig, path)
    plt.close(fig)
    return path


def plot_dynamics(dyn: dict[str, Any], path: str) -> str:
    """Left: predicted vs measured stationary variance per direction at eta1. Right: ensemble variance
    per direction over the steps, the decay, and the predicted transient."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8))
    k = dyn["k"]
    xs = list(range(k))
    w = 0.25
    for off, key, lab in ((-w, "predicted_var_eta1", "predicted"), (0, "measured_var_ensemble_eta1", "measured (replicas)"),
                          (w, "measured_var_window_eta1", "measured (time window)")):
        vals = [v if v is not None else 0.0 for v in dyn[key]]
        a1.bar([x + off for x in xs], vals, width=w, label=lab)
    a1.set_yscale("log")
    a1.set_xticks(xs, [f"u{i + 1}\nh={h:.3g}" for i, h in enumerate(dyn["h"])])
    a1.set_title(f"stationary variance along top eigenvectors, eta1={dyn['eta1']:g} ({dyn['layer']})", fontsize=10)
    a1.legend(fontsize=8)
    ens = dyn["ensemble_var_by_step"]
    s1 = dyn["steps1"]
    for i in range(k):
        line, = a2.plot(range(len(ens)), [r[i] for r in ens], label=f"u{i + 1} measured")
        tp = dyn["transient_predicted_by_step"]
        a2.plot(range(s1, s1 + len(tp)), [r[i] for r in tp], ls="--", color=line.get_color(), label=f"u{i + 1} predicted")
    a2.axvline(s1, color="k", ls=":")
    a2.set_yscale("log")
    a2.set_xlabel("SGD step from the snapshot")
    a2.set_title(f"variance across replicas; decay {dyn['eta1']:g} -> {dyn['eta2']:g} at the dotted line", fontsize=10)
    a2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
