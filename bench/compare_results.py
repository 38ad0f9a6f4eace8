"""Compare two runs' result files value by value (behaviour-unchanged checks of a refactor).

    python bench/compare_results.py BEFORE_DIR AFTER_DIR [--rtol 1e-12]

Walks ``result.json`` of both folders in parallel and compares every number at the same path
(relative tolerance ``rtol``; booleans, strings and nulls exactly), then every array of
``samples.npz`` (numbers to ``rtol``; JSON strings parsed and walked the same way). Timing fields
(``wall_s``, the environment's ``versions``/``platform``) are skipped. Prints each difference and
each path present on one side only; exit status 1 when a value differs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

import numpy as np

SKIP_KEYS = {"wall_s", "versions", "platform", "python", "torch", "numpy", "scipy", "genbound_version"}


def walk(a: Any, b: Any, path: str, rtol: float, out: dict[str, list]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k in SKIP_KEYS:
                continue
            p = f"{path}.{k}"
            if k not in b:
                out["only_before"].append(p)
            elif k not in a:
                out["only_after"].append(p)
            else:
                walk(a[k], b[k], p, rtol, out)
        return
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            out["differ"].append((path, f"length {len(a)} vs {len(b)}"))
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, f"{path}[{i}]", rtol, out)
        return
    out["compared"].append(path)
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        if a != b:
            out["differ"].append((path, f"{a!r} vs {b!r}"))
        return
    if math.isnan(a) and math.isnan(b):
        return
    if a != b and not (abs(a - b) <= rtol * max(abs(a), abs(b))):
        out["differ"].append((path, f"{a!r} vs {b!r} (rel {abs(a - b) / max(abs(a), abs(b)):.3g})"))


def compare_npz(pa: str, pb: str, rtol: float, out: dict[str, list]) -> None:
    za, zb = np.load(pa, allow_pickle=False), np.load(pb, allow_pickle=False)
    for k in sorted(set(za.files) | set(zb.files)):
        if k not in zb.files:
            out["only_before"].append(f"npz:{k}")
            continue
        if k not in za.files:
            out["only_after"].append(f"npz:{k}")
            continue
        a, b = za[k], zb[k]
        if a.dtype.kind in "US":
            try:
                walk(json.loads(str(a)), json.loads(str(b)), f"npz:{k}", rtol, out)
            except ValueError:
                out["compared"].append(f"npz:{k}")
                if not np.array_equal(a, b):
                    out["differ"].append((f"npz:{k}", "strings differ"))
            continue
        out["compared"].append(f"npz:{k}")
        if a.shape != b.shape:
            out["differ"].append((f"npz:{k}", f"shape {a.shape} vs {b.shape}"))
        elif a.dtype.kind in "fc":
            if not np.allclose(a, b, rtol=rtol, atol=0.0, equal_nan=True):
                out["differ"].append((f"npz:{k}", f"max abs diff {np.nanmax(np.abs(a - b)):.3g}"))
        elif not np.array_equal(a, b):
            out["differ"].append((f"npz:{k}", f"{int(np.sum(a != b))} entries differ"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rtol", type=float, default=1e-12)
    args = ap.parse_args(argv)
    out: dict[str, list] = {"compared": [], "differ": [], "only_before": [], "only_after": []}
    with open(os.path.join(args.before, "result.json")) as fa, open(os.path.join(args.after, "result.json")) as fb:
        walk(json.load(fa), json.load(fb), "result", args.rtol, out)
    na, nb = os.path.join(args.before, "samples.npz"), os.path.join(args.after, "samples.npz")
    if os.path.exists(na) and os.path.exists(nb):
        compare_npz(na, nb, args.rtol, out)
    print(f"compared {len(out['compared'])} values; {len(out['differ'])} differ (rtol {args.rtol:g}); "
          f"{len(out['only_before'])} paths only before, {len(out['only_after'])} only after")
    for p, why in out["differ"]:
        print(f"DIFFER  {p}: {why}")
    for p in out["only_before"]:
        print(f"BEFORE  {p}")
    for p in out["only_after"]:
        print(f"AFTER   {p}")
    return 1 if out["differ"] else 0


if __name__ == "__main__":
    sys.exit(main())
