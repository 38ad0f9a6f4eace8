"""Exact areas for the coverage check: half-planes clipped to the unit square.

For a binary linear rule ``h(x) = 1[w . x + b > 0]`` on ``x ~ Uniform([0,1]^2)`` with clean teacher
``c(x) = 1[w* . x + b* > 0]`` and labels flipped with probability eta, the true error is exactly

    R(h) = eta + (1 - 2 eta) * area({h != c} in [0,1]^2),

and the disagreement region is the union of two convex polygons (square intersected with two
half-planes), whose areas follow from Sutherland–Hodgman clipping and the shoelace formula.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clip_halfplane", "polygon_area", "disagreement_area", "linear_true_error"]

UNIT_SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def clip_halfplane(poly: np.ndarray, a: np.ndarray, c: float) -> np.ndarray:
    """The part of convex polygon ``poly`` (vertices in order) where ``a . x + c >= 0``."""
    out = []
    k = len(poly)
    for i in range(k):
        p, q = poly[i], poly[(i + 1) % k]
        fp, fq = float(a @ p + c), float(a @ q + c)
        if fp >= 0:
            out.append(p)
        if (fp >= 0) != (fq >= 0):
            t = fp / (fp - fq)
            out.append(p + t * (q - p))
    return np.array(out) if out else np.zeros((0, 2))


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon (0 for fewer than 3 vertices)."""
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def disagreement_area(w: np.ndarray, b: float, w_star: np.ndarray, b_star: float) -> float:
    """Area of ``{x in [0,1]^2 : sign(w.x + b) != sign(w*.x + b*)}`` (boundaries have measure 0)."""
    w, ws = np.asarray(w, float), np.asarray(w_star, float)
    one = clip_halfplane(clip_halfplane(UNIT_SQUARE, w, b), -ws, -b_star)
    two = clip_halfplane(clip_halfplane(UNIT_SQUARE, -w, -b), ws, b_star)
    return polygon_area(one) + polygon_area(two)


def linear_true_error(w: np.ndarray, b: float, w_star: np.ndarray, b_star: float, eta: float) -> float:
    """``eta + (1 - 2 eta) * disagreement_area`` (exact true error of the rule; module doc)."""
    return eta + (1.0 - 2.0 * eta) * disagreement_area(w, b, w_star, b_star)
