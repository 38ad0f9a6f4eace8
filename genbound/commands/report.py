"""``genbound report RUN_DIR [RUN_DIR ...] [--out FILE]``: the report page of finished runs."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Re-render the self-contained HTML page of a finished run from its files (result.json, "
                     "config.toml, versions.json, samples.npz), or put several runs side by side on one page. "
                     "Nothing is recomputed.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folder(s) written by genbound demo or evaluate")
    p.add_argument("--out", metavar="FILE",
                   help="where the page goes (default: RUN_DIR/report.html for one run; required for several)")


def run(args: argparse.Namespace) -> int:
    from genbound.report import write_report

    path = write_report(args.runs, args.out)
    print(f"wrote {path}")
    return 0
