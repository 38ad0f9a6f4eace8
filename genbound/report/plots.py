"""PNG plots of a run: bounds vs held-out error per model, and stability vs kappa."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from genbound.fileio import atomic_path, make_output_folder

CERT_ORDER = ("holdout_cp", "theorem_h", "theorem_n", "kawaguchi", "xu_mannor")
DIAG_ORDER = ("than_localavg", "than_localsen", "than_localrob", "than_rob", "stability_a", "stability_b", "stability_c")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str) -> None:
    """``fig`` as a PNG at ``path``, written atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def _best(results: list, name: str) -> float | None:
    vals = [r.value for r in results if r.name == name and r.value is not None]
    return min(vals) if vals else None


def write_plots(ev: Any, folder: str) -> dict[str, str]:
    """Write ``bounds_vs_heldout.png``, ``stability_vs_kappa.png`` and ``estimates_vs_kappa.png``."""
    plt = _plt()
    make_output_folder(folder)
    report = ev.report
    K0 = report.models[0]["log_K"]
    metas = [m for m in report.models if m["log_K"] == K0]
    models = [m["model"] for m in metas]
    paths = {}

    # 1. every result (best over the kappa grid, first partition) beside the held-out error
    fig, ax = plt.subplots(figsize=(max(9, 1.4 * len(models) + 6), 5.2))
    names = [n for n in CERT_ORDER + DIAG_ORDER if any(r.name == n for r in report.results)]
    width = 0.8 / max(len(names), 1)
    cmap = plt.get_cmap("tab20")
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, meta in enumerate(metas):
            v = _best([r for r in report.results if r.model == meta["model"] and r.log_K == K0], name)
            if v is not None:
                xs.append(i - 0.4 + (j + 0.5) * width)
                ys.append(v)
        cert = name in CERT_ORDER
        ax.bar(xs, ys, width=width, color=cmap(j), label=f"{name} ({'certified' if cert else 'diagnostic'})",
               hatch=None if cert else "//", edgecolor="black" if cert else "grey", linewidth=0.4)
    for i, meta in enumerate(metas):
        if meta["heldout_error"] is not None:
            ax.hlines(meta["heldout_error"], i - 0.45, i + 0.45, colors="black", linewidth=2,
                      label="held-out error" if i == 0 else None)
        ax.hlines(meta["train_error"], i - 0.45, i + 0.45, colors="red", linestyles=":", linewidth=1.5,
                  label="train error" if i == 0 else None)
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xticks(range(len(models)), models, rotation=20)
    ax.set_ylabel("0-1 test error bound / estimate (best over kappa)")
    ax.set_title(f"Bounds vs held-out error (K = {metas[0]['K'] or 'e^%.3g' % K0}, delta = {report.delta:g})\n"
                 "solid = certified, hatched = diagnostic", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    paths["plot_bounds"] = os.path.join(folder, "bounds_vs_heldout.png")
    _save(fig, paths["plot_bounds"])
    plt.close(fig)

    # 2. unstable fraction and robust training error vs kappa
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for meta in metas:
        k = meta["kappas"]
        if not k:
            continue
        axes[0].plot(k, meta["unstable_fraction"], marker="o", label=meta["model"])
        axes[1].plot(k, meta["robust_train_error"], marker="o", label=meta["model"])
    for ax, title in zip(axes, ("unstable fraction of training samples", "robust training error")):
        ax.set_xscale("log")
        ax.set_xlabel("kappa ([0,1] pixel units)")
        ax.set_title(title)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths["plot_stability"] = os.path.join(folder, "stability_vs_kappa.png")
    _save(fig, paths["plot_stability"])
    plt.close(fig)

    # 3. kappa-dependent results per model
    cols = min(3, len(metas))
    rows = int(np.ceil(len(metas) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, meta in zip(axes.flat, metas):
        rs = [r for r in report.results if r.model == meta["model"] and r.log_K == K0 and r.kappa is not None]
        for name in ("theorem_n", "stability_b", "stability_a", "stability_c"):
            pts = sorted((r.kappa, r.value) for r in rs if r.name == name and r.value is not None)
            if pts:
                ax.plot(*zip(*pts), marker=".", label=name, linestyle="-" if name == "theorem_n" else "--")
        if meta["heldout_error"] is not None:
            ax.axhline(meta["heldout_error"], color="black", linewidth=1.5, label="held-out error")
        ax.set_xscale("log")
        ax.set_title(meta["model"], fontsize=9)
        ax.set_xlabel("kappa")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metas):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    paths["plot_estimates"] = os.path.join(folder, "estimates_vs_kappa.png")
    _save(fig, paths["plot_estimates"])
    plt.close(fig)
    return paths
