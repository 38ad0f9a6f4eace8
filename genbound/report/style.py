"""Names, order and colours of the results: one colour per result name on every plot and table."""

from __future__ import annotations

# Certified results first, tightest-in-practice first; then the diagnostics (spec/bounds.md §3-4).
CERTIFIED = ("holdout_cp", "theorem_h", "theorem_n", "kawaguchi", "xu_mannor")
DIAGNOSTIC = ("than_localavg", "than_localsen", "than_localrob", "than_rob", "stability_a", "stability_b",
              "stability_c")
ORDER = CERTIFIED + DIAGNOSTIC

# Okabe-Ito and Tableau hues, distinct under the common colour-vision deficiencies for the certified
# results (the ones a reader must tell apart); diagnostics are drawn dashed/hollow as well.
_COLORS = {
    "holdout_cp": "#332288",
    "theorem_h": "#0072b2",
    "theorem_n": "#d55e00",
    "kawaguchi": "#009e73",
    "xu_mannor": "#cc79a7",
    "than_localavg": "#56b4e9",
    "than_localsen": "#8c564b",
    "than_localrob": "#bcbd22",
    "than_rob": "#7f7f7f",
    "stability_a": "#e69f00",
    "stability_b": "#9467bd",
    "stability_c": "#17becf",
}
_SPARE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#e377c2", "#393b79", "#637939", "#8c6d31")

HELDOUT_COLOR = "#000000"
TRAIN_COLOR = "#c00000"


def color(name: str) -> str:
    """The colour of result ``name``; names unknown to this version get a stable spare colour."""
    if name in _COLORS:
        return _COLORS[name]
    return _SPARE[sum(map(ord, name)) % len(_SPARE)]


def sort_key(name: str) -> tuple[int, str]:
    """Order of result names on the page: certified, then diagnostic, then unknown names."""
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def kappa_text(kappa: float | None) -> str:
    """``kappa`` in [0, 1] units with its value in pixel levels, e.g. ``0.0078 (2/255)``."""
    if kappa is None:
        return "–"
    return f"{kappa:.4g} ({kappa_255(kappa)}/255)"


def kappa_255(kappa: float) -> str:
    """``kappa * 255`` rounded for display (2 for 2/255, 2.55 for 0.01)."""
    v = kappa * 255.0
    return f"{v:.0f}" if abs(v - round(v)) < 1e-6 else f"{v:.3g}"
