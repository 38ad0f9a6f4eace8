"""k-means fit: genbound (torch, float64, k-means++ + Lloyd) against scikit-learn's ``KMeans``.

Fits K clusters on n real images (mnist5k, 784 pixels, float64), greedy k-means++ seeding and at
most ``--iters`` Lloyd passes, on CPU with one torch thread (scikit-learn's OpenMP threads are
limited to one too, when threadpoolctl is there). Every repetition runs the methods one after the
other in this process, alternating their order; the table gives the minimum wall time of each,
its ratio to scikit-learn's (``KMeans(n_clusters=K, n_init=1, max_iter=iters, tol=0,
algorithm="lloyd")``, the baseline) and the final objective (sum of squared distances to the
nearest centre) relative to scikit-learn's. Also genbound streamed (fit features re-read from the
data on every pass) and genbound with the faiss backend when faiss is installed.

    python bench/bench_kmeans.py [--n 5000] [--K 100] [--iters 20] [--reps 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._common import table, write_section  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--K", type=int, default=100)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from sklearn.cluster import KMeans

    from genbound.data import load_dataset
    from genbound.partition import KMeansSpec, build_kmeans
    try:
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(1)
    except ImportError:
        limit = contextlib.nullcontext()
    src = load_dataset("mnist5k")
    src = src.subset(np.arange(min(args.n, len(src))))
    n = len(src)
    X = src.tensors()[0].reshape(n, -1).to(torch.float64).numpy()

    def objective(centres: np.ndarray) -> float:
        d = (X ** 2).sum(1)[:, None] + (centres ** 2).sum(1)[None] - 2 * X @ centres.T
        return float(np.maximum(d.min(1), 0).sum())

    methods = {
        "scikit-learn (baseline)": lambda: KMeans(args.K, n_init=1, max_iter=args.iters, tol=0, algorithm="lloyd",
                                                  random_state=0).fit(X).cluster_centers_,
        "genbound torch": lambda: build_kmeans(KMeansSpec(regions=args.K, fit="train", iterations=args.iters),
                                               train=src).centroids.numpy(),
        "genbound torch, streamed": lambda: build_kmeans(
            KMeansSpec(regions=args.K, fit="train", iterations=args.iters), train=src,
            cache_bytes=0).centroids.numpy(),
    }
    try:
        import faiss  # noqa: F401
        methods["genbound faiss backend"] = lambda: build_kmeans(
            KMeansSpec(regions=args.K, fit="train", iterations=args.iters, backend="faiss"),
            train=src).centroids.numpy()
    except ImportError:
        pass
    times: dict[str, list[float]] = {m: [] for m in methods}
    objs: dict[str, float] = {}
    names = list(methods)
    with limit:
        for r in range(args.reps):
            for m in (names if r % 2 == 0 else names[::-1]):
                t0 = time.perf_counter()
                c = methods[m]()
                times[m].append(time.perf_counter() - t0)
                objs[m] = objective(c)
                print(f"rep {r} {m}: {times[m][-1]:.2f} s, objective {objs[m]:.1f}", flush=True)
    base = "scikit-learn (baseline)"
    rows = [[m, f"{min(times[m]):.2f}", f"{min(times[m]) / min(times[base]):.2f}x",
             f"{objs[m]:.0f}", f"{objs[m] / objs[base]:.3f}"] for m in names]
    body = (f"mnist5k, n = {n} x 784 pixels, float64, K = {args.K}, at most {args.iters} Lloyd passes, "
            f"{args.reps} alternating repetitions, minimum wall time.\n\n"
            + table(rows, ["method", "wall s", "vs scikit-learn", "objective", "objective / scikit-learn's"]))
    print(body)
    if not args.no_write:
        write_section("bench_kmeans", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
