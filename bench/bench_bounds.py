"""Time of the whole bound suite vs one numpy pass over the arrays, in the same process.

    python bench/bench_bounds.py [--n 1000000] [--K 10000] [--m 50000] [--J 8] [--repeats 15]

Baseline: ``np.bincount(train_cell, minlength=K)``, a single pass over the training cell ids.
The suite: :func:`genbound.bounds.compute_bounds` on validated statistics (validation included),
every certified and diagnostic result for every kappa. Reports medians and their ratio; target
(issue "Bounds engine"): under 20x the pass.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from genbound.bounds import SampleStats, compute_bounds


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import os
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"


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
    print(f"machine: {machine()}")
    print(f"n={a.n} K={a.K} m={a.m} kappas={a.J}; {len(rep.results)} results; median of {a.repeats}")
    print(f"one bincount pass : {base * 1e3:8.2f} ms")
    print(f"whole bound suite : {suite * 1e3:8.2f} ms")
    print(f"ratio of medians  : {suite / base:8.2f}  (target < 20)")
    print(f"pairwise ratios   : min {ratios.min():.2f}  median {np.median(ratios):.2f}  max {ratios.max():.2f}")


if __name__ == "__main__":
    main()
