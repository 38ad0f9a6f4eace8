"""``genbound bounds STATS.npz [--delta D] [--json OUT]``: every bound from per-sample statistics."""

from __future__ import annotations

import argparse

from genbound.commands._args import delta

from genbound.fileio import check_output_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Compute every certified and diagnostic result of the spec from per-sample statistics "
        "(train_cell, train_loss, train_stable, heldout_cell, heldout_loss, kappas, K or log_K, ...). "
        "Prints a table; --json writes the genbound.result/1 document."
    )
    p.add_argument("stats", metavar="STATS.npz", help="per-sample statistics (see docs/statistics.md)")
    p.add_argument("--delta", type=delta, default=0.05, help="failure probability in (0, 1) (default 0.05)")
    p.add_argument("--json", metavar="OUT", help="write the result document (schema genbound.result/1) here")
    p.add_argument("--quiet", action="store_true", help="do not print the table")


def run(args: argparse.Namespace) -> int:
    from genbound.bounds import BoundReport, compute_bounds, load_stats_npz

    if args.json is not None:
        check_output_file(args.json, "--json")
    report = BoundReport.merge(compute_bounds(s, args.delta) for s in load_stats_npz(args.stats))
    if args.json is not None:
        report.to_json(args.json)
    if not args.quiet:
        print(report.table())
        if args.json is not None:
            print(f"wrote {args.json}")
    return 0
