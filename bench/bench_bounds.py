"""Time of the whole bound suite vs one numpy pass over the arrays, in the same process.

    python bench/bench_bounds.py [--n 1000000] [--K 10000] [--m 50000] [--J 8] [--repeats 15]

Baseline: ``np.bincount(train_cell, minlength=K)``, a single pass over the training cell ids.
The suite: :func:`genbound.bounds.compute_bounds` on validated statistics (validation included),
every certified and diagnostic result for every kappa. Reports medians and their ratio; target
(issue "Bounds engine"): under 20x the pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._common import machine, write_section  # noqa: E402
from genbound.bounds import SampleStats, compute_bounds  # noqa: E402


def paired_times(a, b, repeats: int) -> tuple[list[float], list[float]]:
    """Run ``a`` and ``b`` alternately (after one warm-up each) so drift hits both alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t)
    return ta, tb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10**6)
    ap.add_argument("--K", type=int, default=10**4)
    ap.add_argument("--m", type=int, default=5 * 10**4)
    ap.add_argument("--J", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    tc = rng.integers(0, a.K, a.n)
    tl = (rng.random(a.n) < 0.08).astype(np.uint8)
    level = rng.integers(0, a.J + 1, a.n)
    stable = np.arange(a.J)[None, :] < level[:, None]
    arrays = dict(train_cell=tc, train_loss=tl, train_stable=stable, kappas=np.arange(1, a.J + 1) / 255,
                  heldout_cell=rng.integers(0, a.K, a.m), heldout_loss=(rng.random(a.m) < 0.1).astype(np.uint8), K=a.K)
    tb, ts = paired_times(lambda: np.bincount(tc, minlength=a.K),
                          lambda: compute_bounds(SampleStats(**arrays), 0.05), a.repeats)
    base, suite = float(np.median(tb)), float(np.median(ts))
    ratios = np.array(ts) / np.array(tb)
    rep = compute_bounds(SampleStats(**arrays), 0.05)
    lines = [
        f"n={a.n} K={a.K} m={a.m} kappas={a.J}; {len(rep.results)} results; {a.repeats} alternating pairs, "
        f"validation of the inputs included; 1-minute load average {os.getloadavg()[0]:.1f}",
        "",
        "| what | median ms |",
        "|---|---|",
        f"| one pass: `np.bincount(train_cell)` | {base * 1e3:.2f} |",
        f"| whole bound suite: `compute_bounds(SampleStats(...))` | {suite * 1e3:.2f} |",
        "",
        f"Ratio of medians **{suite / base:.1f}** (target < 20); pairwise ratios min {ratios.min():.1f}, "
        f"median {np.median(ratios):.1f}, max {ratios.max():.1f}.",
    ]
    print(f"machine: {machine()}")
    print("\n".join(lines))
    if not a.no_write:
        write_section("bench_bounds", "\n".join(lines))


if __name__ == "__main__":
    main()
