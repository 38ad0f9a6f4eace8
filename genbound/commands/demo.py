"""``genbound demo [--quick] [--out DIR]``: the whole pipeline on shipped data and reference models."""

from __future__ import annotations

import argparse
import os
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train (and cache) a family of reference models on real shipped data (mnist5k; digits with "
                     "--quick), compute every bound per model, kappa and K, print the table and write result.json, "
                     "samples.npz, config.toml, versions.json and report.html.")
    p.add_argument("--quick", action="store_true", help="digits and a small grid: about a minute on 2 CPU cores")
    p.add_argument("--out", help="output folder (default runs/demo-<timestamp>); rerun with the same folder to resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from genbound.fileio import check_output_folder

    out = check_output_folder(args.out or os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S")), "--out")
    from genbound.demo import run_demo  # torch: after the cheap checks
    t0 = time.time()
    ev = run_demo(args.quick, out, progress=not args.no_progress)
    paths = ev.save(out)
    print(ev.table())
    print(f"\nwrote {out}/: result.json, samples.npz, config.toml, versions.json, report.html "
          f"({time.time() - t0:.0f} s)")
    return 0 if paths else 1
