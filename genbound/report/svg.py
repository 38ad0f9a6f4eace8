"""A small SVG chart: linear or log axes, ticks, lines, markers, a legend; no dependencies.

Charts are written as SVG text so the page stays small and self-contained (no images to encode,
no network) and every point carries its exact value in a tooltip (``<title>``).
"""

from __future__ import annotations

import math
from html import escape
from typing import Iterable, Sequence

Tick = tuple[float, str, str]  # value, label, second line ("" for none)


def fmt(v: float) -> str:
    """A tick label: 3 significant digits, no trailing zeros (0.05, 1, 2.5, 1e-05)."""
    if v == 0:
        return "0"
    return f"{v:.3g}"


def linear_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round values (1, 2, 5 x 10^k steps) covering [lo, hi] with about ``n`` ticks."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + 1e-9 * step:
        out.append(round(v, 12))
        v += step
    return out


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten in [lo, hi]; with fewer than three of them, also 2x and 5x."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    decades = [10.0 ** e for e in range(a, b + 1)]
    inside = [d for d in decades if lo * (1 - 1e-9) <= d <= hi * (1 + 1e-9)]
    if len(inside) >= 3:
        return inside
    more = sorted({round(m * d, 12) for d in decades for m in (1, 2, 5)})
    return [v for v in more if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]


def wants_log(values: Iterable[float], ratio: float = 20.0) -> bool:
    """Log scale when every value is positive and they span more than ``ratio`` (about 1.3 decades)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > ratio


def padded(values: Iterable[float], log: bool, floor: float | None = None) -> tuple[float, float]:
    """Axis limits around ``values`` with a margin (multiplicative on a log axis)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if log:
        return lo / 1.25, hi * 1.25
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    lo2 = lo - 0.06 * span
    if floor is not None and lo >= floor:
        lo2 = max(lo2, floor)
    return lo2, hi + 0.06 * span


class Chart:
    """One plot area in pixel coordinates; call the drawing methods, then :meth:`svg`."""

    def __init__(self, width: int, height: int, xlim: tuple[float, float], ylim: tuple[float, float], *,
                 xlog: bool = False, ylog: bool = False, left: int = 62, right: int = 14, top: int = 28,
                 bottom: int = 58, label: str = "") -> None:
        self.w, self.h = width, height
        self.xlim, self.ylim, self.xlog, self.ylog = xlim, ylim, xlog, ylog
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top
        self.label = label
        self.parts: list[str] = []

    def _t(self, v: float, lim: tuple[float, float], log: bool) -> float:
        if log:
            return (math.log10(v) - math.log10(lim[0])) / (math.log10(lim[1]) - math.log10(lim[0]))
        return (v - lim[0]) / (lim[1] - lim[0])

    def px(self, x: float) -> float:
        return self.x0 + self._t(x, self.xlim, self.xlog) * (self.x1 - self.x0)

    def py(self, y: float) -> float:
        return self.y0 + self._t(y, self.ylim, self.ylog) * (self.y1 - self.y0)

    def inside_y(self, y: float | None) -> bool:
        return y is not None and math.isfinite(y) and (not self.ylog or y > 0)

    def axes(self, xlabel: str, ylabel: str, xticks: Sequence[Tick], yticks: Sequence[Tick], title: str = "") -> None:
        """Frame, grid, tick labels (two lines for x where given) and axis titles."""
        p = self.parts
        p.append(f'<rect x="{self.x0}" y="{self.y1}" width="{self.x1 - self.x0}" height="{self.y0 - self.y1}" '
                 'fill="#fff" stroke="#999"/>')
        for v, lab, sub in xticks:
            x = self.px(v)
            p.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.y1}" y2="{self.y0}" class="grid"/>')
            p.append(f'<text x="{x:.1f}" y="{self.y0 + 14}" text-anchor="middle">{escape(lab)}</text>')
            if sub:
                p.append(f'<text x="{x:.1f}" y="{self.y0 + 26}" text-anchor="middle" class="sub">{escape(sub)}</text>')
        for v, lab, _ in yticks:
            y = self.py(v)
            p.append(f'<line x1="{self.x0}" x2="{self.x1}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
            p.append(f'<text x="{self.x0 - 5}" y="{y + 4:.1f}" text-anchor="end">{escape(lab)}</text>')
        cx = (self.x0 + self.x1) / 2
        p.append(f'<text x="{cx:.1f}" y="{self.h - 8}" text-anchor="middle" class="axis">{escape(xlabel)}</text>')
        cy = (self.y0 + self.y1) / 2
        p.append(f'<text transform="translate(13,{cy:.1f}) rotate(-90)" text-anchor="middle" class="axis">'
                 f'{escape(ylabel)}</text>')
        if title:
            p.append(f'<text x="{self.x0}" y="{self.y1 - 9}" class="title">{escape(title)}</text>')

    def hline(self, y: float, color: str, *, dash: str = "", width: float = 1.5, tip: str = "",
              x_from: float | None = None, x_to: float | None = None) -> None:
        """A horizontal line at data value ``y`` (across the plot, or between two pixel x positions)."""
        if not self.inside_y(y):
            return
        yy = self.py(y)
        a = self.x0 if x_from is None else x_from
        b = self.x1 if x_to is None else x_to
        d = f' stroke-dasharray="{dash}"' if dash else ""
        t = f"<title>{escape(tip)}</title>" if tip else ""
        self.parts.append(f'<line x1="{a:.1f}" x2="{b:.1f}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{color}" '
                          f'stroke-width="{width}"{d}>{t}</line>')

    def line(self, pts: Sequence[tuple[float, float]], color: str, *, dash: str = "", width: float = 1.6,
             marker: str = "circle", filled: bool = True, tips: Sequence[str] = ()) -> None:
        """A polyline with a marker at each point; ``tips`` (one per point) become tooltips."""
        keep = [(i, x, y) for i, (x, y) in enumerate(pts) if self.inside_y(y)]
        if len(keep) > 1:
            d = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for _, x, y in keep)
            ds = f' stroke-dasharray="{dash}"' if dash else ""
            self.parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="{width}"{ds}/>')
        self.open_markers(color, filled)
        for i, x, y in keep:
            self.marker(self.px(x), self.py(y), marker=marker, tip=tips[i] if i < len(tips) else "")
        self.parts.append("</g>")

    def open_markers(self, color: str, filled: bool = True) -> None:
        """Start a group of markers in one colour (close it with ``</g>``); keeps the SVG small."""
        self.parts.append(f'<g fill="{color if filled else "#fff"}" stroke="{color}" stroke-width="1.4">')

    def marker(self, x: float, y: float, *, marker: str = "circle", tip: str = "", size: float = 3.6) -> None:
        """One marker inside a group opened by :meth:`open_markers`."""
        t = f"<title>{escape(tip)}</title>" if tip else ""
        if marker == "diamond":
            s = size * 1.25
            self.parts.append(f'<path d="M{x:.1f},{y - s:.1f}l{s:.1f},{s:.1f}l{-s:.1f},{s:.1f}l{-s:.1f},{-s:.1f}z">{t}</path>')
        else:
            self.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size}">{t}</circle>')

    def text(self, x: float, y: float, s: str, *, anchor: str = "start", cls: str = "") -> None:
        c = f' class="{cls}"' if cls else ""
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{c}>{escape(s)}</text>')

    def legend(self, items: Sequence[tuple[str, str, str, str, bool]], x: float, y: float, dy: int = 15) -> None:
        """Entries (label, colour, dash, marker, filled) stacked from pixel (x, y)."""
        for i, (lab, col, dash, mk, filled) in enumerate(items):
            yy = y + i * dy
            ds = f' stroke-dasharray="{dash}"' if dash else ""
            self.parts.append(f'<line x1="{x}" x2="{x + 22}" y1="{yy}" y2="{yy}" stroke="{col}" stroke-width="1.8"{ds}/>')
            if mk:
                self.open_markers(col, filled)
                self.marker(x + 11, yy, marker=mk, size=3.2)
                self.parts.append("</g>")
            self.text(x + 27, yy + 4, lab)

    def svg(self) -> str:
        """The ``<svg>`` element, for inline use in HTML (no namespace attribute needed there)."""
        label = f' aria-label="{escape(self.label)}"' if self.label else ""
        return (f'<svg width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" role="img"{label}><style>text{{font:11px sans-serif;fill:#222}}'
                '.sub{fill:#777;font-size:10px}.axis{font-size:12px}.title{font-weight:bold;font-size:12px}'
                '.grid{stroke:#e6e6e6}</style>' + "".join(self.parts) + "</svg>")
