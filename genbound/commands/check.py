"""``genbound check coverage|memorization [--quick] [--json OUT]``: self-checks of validity."""

from __future__ import annotations

import argparse

from genbound.commands._args import delta, integer
import json

from genbound.errors import UserInputError
from genbound.fileio import check_output_file, write_text

CHECKS = ("coverage", "memorization")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Self-checks (docs/validity.md). coverage: simulated failure rate of every result on tasks whose "
                     "true error is known exactly; passes iff every certified row has ci_low <= delta. memorization: "
                     "every certified result must stay above a memorizing model's held-out error.")
    p.add_argument("check", metavar="CHECK", help=f"one of: {', '.join(CHECKS)}")
    p.add_argument("--quick", action="store_true", help="fewer draws / shorter training (about a minute or less)")
    p.add_argument("--draws", type=integer(low=1), help="coverage: number of draws R (default 200, 20 with --quick)")
    p.add_argument("--delta", type=delta, default=0.05, help="failure probability in (0, 1) (default 0.05)")
    p.add_argument("--seed", type=integer(), default=0, help="seed of every random choice (default 0)")
    p.add_argument("--json", metavar="OUT", help="write the check's result here (written atomically)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:

    if args.check not in CHECKS:
        raise UserInputError(f"unknown check {args.check!r}; choose one of: {', '.join(CHECKS)}")
    draws, seed = args.draws, args.seed
    if args.draws is not None and args.check != "coverage":
        raise UserInputError("--draws applies to the coverage check only")
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.check == "coverage":
        from genbound.checks.coverage import run_coverage
        res = run_coverage(quick=args.quick, draws=draws, delta=args.delta, seed=seed, progress=not args.no_progress)
    else:
        from genbound.checks.memorization import run_memorization
        res = run_memorization(quick=args.quick, delta=args.delta, seed=seed, progress=not args.no_progress)
    print(res.table())
    if args.json is not None:
        write_text(args.json, json.dumps(res.to_dict(), indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    return 0 if res.passed else 1
