"""``genbound study certified-lowdim [--quick] --out DIR``: studies that run the whole flow."""

from __future__ import annotations

import argparse
import os
import time

from genbound.errors import UserInputError

STUDIES = {"certified-lowdim": "certified bounds on low-dimensional inputs (synthetic 2-D/4-D, sklearn tabular) "
                               "and why they are vacuous on mnist5k"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Run a study and write result.json (schema genbound.result/1), samples.npz and table.txt. "
                     "Studies: " + "; ".join(f"{k}: {v}" for k, v in STUDIES.items()))
    p.add_argument("study", metavar="STUDY", help=f"one of: {', '.join(STUDIES)}")
    p.add_argument("--quick", action="store_true", help="smaller samples and grids: about 1-2 minutes on 2 CPU cores")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--delta", default="0.05", help="total failure probability in (0, 1) (default 0.05)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from genbound.bounds.suite import validate_delta

    if args.study not in STUDIES:
        raise UserInputError(f"unknown study {args.study!r}; choose one of: {', '.join(STUDIES)}")
    delta = validate_delta(args.delta)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserInputError(f"--out {args.out} exists and is not a folder")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        raise UserInputError(f"cannot create --out {args.out}: folder {parent} does not exist")
    from genbound.studies.certified_lowdim import run_certified_lowdim

    t0 = time.time()
    res = run_certified_lowdim(quick=args.quick, delta=delta, progress=not args.no_progress)
    res.save(args.out)
    print(res.table())
    print(f"\nwrote {args.out}/: result.json, samples.npz, table.txt ({time.time() - t0:.0f} s)")
    return 0 if res.check()["passed"] else 1
