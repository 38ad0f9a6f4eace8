"""The figures of the report page, as inline SVG (see :mod:`genbound.report.svg`).

* :func:`kappa_sweep_svg` -- every kappa-dependent result of one model against kappa, with the
  held-out and training error as lines (the seed paper's figure);
* :func:`stability_svg` -- the unstable fraction and robust training error against kappa, drawn
  beside it;
* :func:`across_models_svg` -- every result of every model (smallest over kappa) next to the
  model's held-out error.

Colours come from :func:`genbound.report.style.color`, so a result has one colour everywhere.
Certified results are solid lines and filled circles; diagnostics dashed lines and hollow diamonds.
"""

from __future__ import annotations

from html import escape
from typing import Any, Sequence

from genbound.report import style
from genbound.report.svg import Chart, Tick, fmt, linear_ticks, log_ticks, padded, wants_log
from genbound.report.verdict import ModelView, k_text

def _kappa_axis(meta: dict[str, Any], short: bool = False) -> str:
    norm = str(meta.get("norm") or "")
    radius = {"linf": "l_inf radius", "l2": "l_2 radius"}.get(norm, "radius")
    return f"kappa ({radius}): [0,1] units" + ("; /255 below" if short else " and pixel levels /255")
DIAG_DASH = "5,3"


def _kappa_ticks(kappas: Sequence[float], ch: Chart) -> list[Tick]:
    """A tick at grid kappas, labelled in [0,1] units with the /255 value below, keeping labels
    at least 46 px apart (the largest kappa always labelled)."""
    ks = sorted(set(kappas), reverse=True)
    keep: list[float] = []
    for k in ks:
        if not keep or ch.px(keep[-1]) - ch.px(k) >= 46:
            keep.append(k)
    return [(k, fmt(k), f"{style.kappa_255(k)}/255") for k in sorted(keep)]


def _kappa_lim(kappas: Sequence[float]) -> tuple[tuple[float, float], bool]:
    xlog = wants_log(kappas, ratio=5.0)
    return padded(kappas, xlog), xlog


def _value_axis(values: list[float]) -> tuple[tuple[float, float], bool, list[Tick]]:
    ylog = wants_log(values)
    lim = padded(values, ylog, floor=0.0)
    ticks = log_ticks(*lim) if ylog else linear_ticks(*lim)
    return lim, ylog, [(t, fmt(t), "") for t in ticks]


def _tip(r: dict[str, Any]) -> str:
    cov = {True: "covers", False: "BELOW held-out", None: "no held-out"}[r.get("covers")]
    k = "" if r.get("kappa") is None else f" κ={r['kappa']:.4g}"
    return f"{r['name']} {r['value']:.4f} K={k_text(r)}{k} δ={r['delta']:g} {cov}"


def _legend_items(names: Sequence[str]) -> list[tuple[str, str, str, str, bool]]:
    out = []
    for n in names:
        cert = n in style.CERTIFIED
        out.append((f"{n} ({'certified' if cert else 'diagnostic'})", style.color(n), "" if cert else DIAG_DASH,
                    "circle" if cert else "diamond", cert))
    return out


def _at_k(view: ModelView, K: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    meta = next((m for m in view.metas if k_text(m) == K), None)
    return meta, [r for r in view.results if k_text(r) == K]


def kappa_sweep_svg(view: ModelView, K: str) -> str | None:
    """Each kappa-dependent result of ``view`` at partition size ``K`` against kappa."""
    meta, at_k = _at_k(view, K)
    rs = [r for r in at_k if r.get("kappa") is not None and r.get("value") is not None]
    if meta is None or not rs:
        return None
    # certified results that do not depend on kappa, as flat reference lines
    flat = [r for r in at_k if r.get("kappa") is None and r.get("kind") == "certified" and r.get("value") is not None]
    names = sorted({r["name"] for r in rs}, key=style.sort_key)
    kappas = [r["kappa"] for r in rs]
    he, te = meta.get("heldout_error"), meta.get("train_error")
    ys = [r["value"] for r in rs + flat] + [v for v in (he, te) if v] + [1.0]
    ylim, ylog, yticks = _value_axis(ys)
    xlim, xlog = _kappa_lim(kappas)
    ch = Chart(615, 300, xlim, ylim, xlog=xlog, ylog=ylog, right=215,
               label=f"results of {view.label} against kappa at K={K}")
    ch.axes(_kappa_axis(meta), "test-error bound / estimate" + (" (log)" if ylog else ""),
            _kappa_ticks(kappas, ch), yticks, title=f"{view.label}, K = {K}")
    ch.hline(1.0, "#888", dash="2,3", width=1, tip="1: a certified value at or above this bounds nothing")
    if he is not None:
        ch.hline(he, style.HELDOUT_COLOR, width=2.2, tip=f"held-out error {he:.4f}")
    if te is not None:
        ch.hline(te, style.TRAIN_COLOR, dash="2,2", width=1.4, tip=f"training error {te:.4f}")
    for r in sorted(flat, key=lambda r: style.sort_key(r["name"])):
        ch.hline(r["value"], style.color(r["name"]), width=1.2, dash="8,2,2,2", tip=_tip(r))
    for n in names:
        pts = sorted((r["kappa"], r["value"], _tip(r)) for r in rs if r["name"] == n)
        cert = n in style.CERTIFIED
        ch.line([(k, v) for k, v, _ in pts], style.color(n), dash="" if cert else DIAG_DASH,
                marker="circle" if cert else "diamond", filled=cert, tips=[t for _, _, t in pts])
    items = _legend_items(names) + [(f"{r['name']} (certified, no kappa)", style.color(r["name"]), "8,2,2,2", "", True)
                                    for r in sorted(flat, key=lambda r: style.sort_key(r["name"]))]
    items.append(("1: vacuous at or above", "#888", "2,3", "", True))
    if ch.inside_y(he):
        items.append(("held-out error", style.HELDOUT_COLOR, "", "", True))
    if ch.inside_y(te):
        items.append(("training error", style.TRAIN_COLOR, "2,2", "", True))
    ch.legend(items, ch.x1 + 12, ch.y1 + 6)
    return ch.svg()


def stability_svg(view: ModelView, K: str) -> str | None:
    """Unstable fraction and robust training error of the training samples against kappa."""
    meta, _ = _at_k(view, K)
    if meta is None or not meta.get("kappas") or not meta.get("unstable_fraction"):
        return None
    ks = meta["kappas"]
    xlim, xlog = _kappa_lim(ks)
    ch = Chart(330, 300, xlim, (-0.02, 1.02), xlog=xlog, right=10,
               label=f"stability of {view.label} against kappa")
    method = meta.get("stability_method", "?")
    sound = "sound" if meta.get("stability_sound") else "not sound"
    ch.axes(_kappa_axis(meta, short=True), "fraction of training samples",
            _kappa_ticks(ks, ch), [(t, fmt(t), "") for t in (0, 0.25, 0.5, 0.75, 1.0)],
            title=f"stability ({method}, {sound})")
    uf = meta["unstable_fraction"]
    ch.line(list(zip(ks, uf)), "#444", tips=[f"unstable fraction at kappa={style.kappa_text(k)}: {v:.4f}"
                                             for k, v in zip(ks, uf)])
    rte = meta.get("robust_train_error") or []
    if rte:
        ch.line(list(zip(ks, rte)), style.TRAIN_COLOR, dash="4,2", marker="diamond", filled=False,
                tips=[f"robust training error at kappa={style.kappa_text(k)}: {v:.4f}" for k, v in zip(ks, rte)])
    ch.legend([("unstable fraction", "#444", "", "circle", True)]
              + ([("robust training error", style.TRAIN_COLOR, "4,2", "diamond", False)] if rte else []),
              ch.x0 + 8, ch.y1 + 12)
    return ch.svg()


def across_models_svg(views: Sequence[ModelView], K: str) -> str | None:
    """Per model, every result at ``K`` (smallest value over kappa) beside its held-out error."""
    rows = []
    for v in views:
        meta, rs = _at_k(v, K)
        if meta is None:
            continue
        best: dict[str, dict[str, Any]] = {}
        for r in rs:
            if r.get("value") is not None and (r["name"] not in best or r["value"] < best[r["name"]]["value"]):
                best[r["name"]] = r
        rows.append((v, meta, best))
    if not rows:
        return None
    names = sorted({n for _, _, b in rows for n in b}, key=style.sort_key)
    ys = [r["value"] for _, _, b in rows for r in b.values()]
    ys += [m.get(k) for _, m, _ in rows for k in ("heldout_error", "train_error") if m.get(k)] + [1.0]
    ylim, ylog, yticks = _value_axis(ys)
    slot = max(70, min(120, 620 // len(rows)))
    width = max(620, 70 + slot * len(rows) + 200)  # room for the title with one or two models
    slot = min((width - 270) // len(rows), 160)
    ch = Chart(width, 340, (-0.5, len(rows) - 0.5), ylim, ylog=ylog, right=200, bottom=78,
               label=f"every result against the held-out error, K={K}")
    ch.axes("", "test-error bound / estimate" + (" (log)" if ylog else ""), [], yticks,
            title=f"bounds vs held-out error across models (K = {K}; smallest value over kappa)")
    ch.hline(1.0, "#888", dash="2,3", width=1, tip="1: a certified value at or above this bounds nothing")
    for i, (v, meta, best) in enumerate(rows):
        x = ch.px(i)
        half = slot * 0.42
        label = v.label if len(v.label) <= slot // 6 else v.label[: slot // 6 - 1] + "…"
        ch.text(x, ch.y0 + 16, label, anchor="middle")
        if v.label != label:
            ch.parts[-1] = ch.parts[-1].replace("</text>", f"<title>{escape(v.label)}</title></text>")
        he, te = meta.get("heldout_error"), meta.get("train_error")
        if he is not None:
            ch.hline(he, style.HELDOUT_COLOR, width=2.5, x_from=x - half, x_to=x + half,
                     tip=f"{v.label}: held-out error {he:.4f}")
        if te is not None:
            ch.hline(te, style.TRAIN_COLOR, dash="2,2", width=1.5, x_from=x - half, x_to=x + half,
                     tip=f"{v.label}: training error {te:.4f}")
        present = [n for n in names if n in best]
        for j, n in enumerate(present):
            r = best[n]
            dx = -half * 0.85 + (j + 0.5) * (1.7 * half / max(len(present), 1))
            cert = n in style.CERTIFIED
            if ch.inside_y(r["value"]):
                ch.open_markers(style.color(n), cert)
                ch.marker(x + dx, ch.py(r["value"]), marker="circle" if cert else "diamond",
                          tip=f"{v.label}: {_tip(r)}", size=4)
                ch.parts.append("</g>")
    items = _legend_items(names) + [("held-out error", style.HELDOUT_COLOR, "", "", True),
                                    ("training error", style.TRAIN_COLOR, "2,2", "", True)]
    ch.legend(items, ch.x1 + 12, ch.y1 + 6)
    return ch.svg()
