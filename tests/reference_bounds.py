"""An independent, deliberately plain implementation of spec/bounds.md §2-§4 for the tests.

Written from the spec text with Python loops over cells and dictionaries, sharing no code with
``genbound.bounds``. Slow; only for small inputs.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from scipy.stats import beta


def cp_upper(e: int, m: int, alpha: float) -> float:
    if e == m:
        return 1.0
    return float(beta.ppf(1.0 - alpha, e + 1, m - e))


def reference(tc, tl, st, kappas, hc, hl, K, delta, sound=False, label_pure=False, diam=None):
    """Dict name -> list of (kappa, value); kappa None for kappa-free results."""
    n, m = len(tc), len(hc)
    R = sum(tl) / n
    cells = defaultdict(list)
    for i, c in enumerate(tc):
        cells[c].append(i)
    hcells = defaultdict(list)
    for i, c in enumerate(hc):
        hcells[c].append(i)
    T = len(cells)
    L = math.log(2 * K / delta)
    Uxm = math.sqrt((2 * K * math.log(2) + 2 * math.log(1 / delta)) / n)
    Ukaw = (math.sqrt(2) + 1) * math.sqrt(T * L / n) + 2 * T * L / n
    out = defaultdict(list)
    if m:
        e = sum(hl)
        out["holdout_cp"].append((None, cp_upper(e, m, delta)))
    grid = list(range(len(kappas))) or [None]
    for j in grid:
        kappa = None if j is None else kappas[j]
        provable = j is not None and sound and label_pure and diam is not None and diam <= kappa
        eps = 1
        Mk = {c: 1 for c in cells}
        if provable:
            if all(any(st[i][j] for i in idx) for idx in cells.values()):
                eps = 0
            for c, idx in cells.items():
                if any(st[i][j] and tl[i] == 0 for i in idx):
                    Mk[c] = 0
        out["xu_mannor"].append((kappa, R + eps + Uxm))
        out["kawaguchi"].append((kappa, R + eps + Ukaw))
        L1 = math.log(3 * K / delta)
        N1 = sum(Mk[c] * (len(idx) / n + math.sqrt(2 * len(idx) * L1) / n + 2 * L1 / n) for c, idx in cells.items())
        N1 += (K - T) * 2 * L1 / n
        main = sum(len(idx) / n * Mk[c] for c, idx in cells.items())
        N2 = main + sum(math.sqrt(2 * len(idx) * L1) / n + 2 * L1 / (3 * n) for c, idx in cells.items() if Mk[c] == 0)
        N3 = main + 0.5 * math.sqrt((2 * K * math.log(2) + 2 * math.log(3 / delta)) / n)
        out["theorem_n"].append((kappa, min(N1, N2, N3)))
    if m:
        Lh = math.log(4 * K / delta)
        total = 0.0
        A = {}
        for c, idx in cells.items():
            hidx = hcells.get(c, [])
            A[c] = cp_upper(sum(hl[i] for i in hidx), len(hidx), delta / (2 * K)) if hidx else 1.0
            total += len(idx) / n * A[c]
        UM = math.sqrt(2 * Lh) / n * sum(math.sqrt(len(idx)) * (A[c] + 1) for c, idx in cells.items())
        UM += Lh / n * (2 * sum(A.values()) + 2 / 3 * T)
        out["theorem_h"].append((None, total + UM))
        kept = [c for c in cells if c in hcells]
        if kept:
            W = sum(len(cells[c]) for c in kept)
            epsk, sigk, avgk = {}, {}, {}
            for c in kept:
                pairs = [abs(hl[a] - tl[b]) for a in hcells[c] for b in cells[c]]
                epsk[c] = max(pairs)
                sigk[c] = sum(pairs) / len(pairs)
                allv = [tl[b] for b in cells[c]] + [hl[a] for a in hcells[c]]
                avgk[c] = sum(allv) / len(allv)
            out["than_rob"].append((None, R + max(epsk.values()) + Ukaw))
            out["than_localrob"].append((None, R + sum(len(cells[c]) / W * epsk[c] for c in kept) + Ukaw))
            out["than_localsen"].append((None, R + sum(len(cells[c]) / W * sigk[c] for c in kept) + Ukaw))
            a = {c: (avgk[c] if c in hcells else sum(tl[i] for i in idx) / len(idx)) for c, idx in cells.items()}
            ao = max(a.values())
            Ug = math.sqrt(L) / n * sum(math.sqrt(len(idx)) * (ao + math.sqrt(2) * a[c]) for c, idx in cells.items())
            Ug += 2 * L / n * (ao * T + sum(a.values()))
            out["than_localavg"].append((None, sum(len(cells[c]) / W * avgk[c] for c in kept) + Ug))
    for j in range(len(kappas)):
        cu = Counter()
        cs = Counter()
        for i, c in enumerate(tc):
            if tl[i] == 0 and not st[i][j]:
                cu[c] += 1
            if tl[i] == 0 and st[i][j]:
                cs[c] += 1
        out["stability_b"].append((kappas[j], R + sum(cu.values()) / n + Ukaw))
        if m:
            def e_k(c):
                hidx = hcells.get(c, [])
                return 1 if (not hidx or any(hl[i] for i in hidx)) else 0
            a_val = R + sum(cu[c] * e_k(c) for c in cells) / n + Ukaw
            out["stability_a"].append((kappas[j], a_val))
            out["stability_c"].append((kappas[j], a_val + sum(cs[c] * e_k(c) for c in cells) / n))
    return dict(out)
