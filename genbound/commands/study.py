"""``genbound study <name>``: studies that run the whole flow end to end.

- ``certified-lowdim [--quick] --out DIR``: certified bounds on low-dimensional inputs (synthetic
  2-D/4-D, sklearn tabular) and why they are vacuous on mnist5k.
- ``robust-overfitting [--quick] --out DIR``: adversarial training runs (PGD-AT, AWP, WCI-guarded
  schedule) with per-epoch WCI tracking, robust-overfitting verdict and learning dynamics.
"""

from __future__ import annotations

import argparse

from genbound.commands._args import delta
import time

from genbound.errors import UserInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genbound.commands.study_robust_overfitting import add_robust_overfitting

    sub = parser.add_subparsers(dest="study", metavar="STUDY")
    p = sub.add_parser("certified-lowdim", help="certified bounds on low-dimensional inputs, and why images are vacuous",
                       description="Run the study and write result.json (schema genbound.result/1), samples.npz, "
                                   "table.txt and report.html.")
    p.add_argument("--quick", action="store_true", help="smaller samples and grids: about 1-2 minutes on 2 CPU cores")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--delta", type=delta, default=0.05, help="total failure probability in (0, 1) (default 0.05)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(_run=run_certified_lowdim)
    add_robust_overfitting(sub)


def run(args: argparse.Namespace) -> int:
    fn = getattr(args, "_run", None)
    if fn is None or fn is run:
        raise UserInputError("name a study: genbound study certified-lowdim|robust-overfitting --out DIR [--quick]")
    return int(fn(args) or 0)


def run_certified_lowdim(args: argparse.Namespace) -> int:

    from genbound.fileio import check_output_folder

    check_output_folder(args.out, "--out", parents=False)  # before the study: a wrong path must not cost its minutes
    from genbound.studies.certified_lowdim import run_certified_lowdim as run_study

    t0 = time.time()
    res = run_study(quick=args.quick, delta=args.delta, progress=not args.no_progress)
    res.save(args.out)
    print(res.table())
    print(f"\nwrote {args.out}/: result.json, samples.npz, table.txt, report.html ({time.time() - t0:.0f} s)")
    return 0 if res.check()["passed"] else 1
