"""``genbound study robust-overfitting``: PGD-AT (piecewise), AWP and PGD-AT with the WCI-guarded
schedule, tracked every epoch (spec wci.md §1-§5).

    genbound study robust-overfitting --out runs/ro            # full study (about an hour on 2 CPU cores)
    genbound study robust-overfitting --quick --out runs/roq   # toy version (under 3 minutes)

Writes ``study.json``, ``report.md``, ``plots/*.png`` and ``runs/<name>/epochs.jsonl`` (+ checkpoints:
an interrupted study resumes where it stopped when run again with the same ``--out``).

To hook into a ``genbound study`` command: ``add_robust_overfitting(subparsers)`` adds the
``robust-overfitting`` subparser (with ``_run=run_robust_overfitting`` as its default).
"""

from __future__ import annotations

import argparse
import os
import sys

from genbound.commands._args import integer, real

NAME = "robust-overfitting"
HELP = "robust overfitting under PGD-AT, AWP and the WCI-guarded schedule, with WCI and learning dynamics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``genbound study robust-overfitting``."""
    parser.add_argument("--out", required=True, help="output folder (created; an existing study there is resumed)")
    parser.add_argument("--quick", action="store_true", help="toy version: a few epochs on small subsets (< 3 minutes)")
    parser.add_argument("--setting", choices=("mnist5k-noisy", "mnist5k"), default="mnist5k-noisy",
                        help="full-study setting: mnist5k-noisy (20%% training label noise, eps 0.1; shows robust "
                             "overfitting, default) or mnist5k (clean labels, eps 0.2)")
    parser.add_argument("--epochs", type=integer(low=2), default=None, help="override the number of epochs (default: 90, quick: 3)")
    parser.add_argument("--runs", default=None,
                        help="comma-separated runs (default: pgd_piecewise,awp,pgd_wci_guarded[,pgd_cosine in the full study]); "
                             "also available: trades")
    parser.add_argument("--label-noise", type=real(low=0, high=1, high_open=True), default=None,
                        help="fraction of training labels replaced by random other classes (default 0; test labels stay clean)")
    parser.add_argument("--seed", type=integer(), default=0, help="seed of initialization, data order and attacks (default 0)")
    parser.add_argument("--no-dynamics", action="store_true", help="skip the learning-dynamics experiment")
    parser.add_argument("--fresh", action="store_true", help="start over even if --out holds checkpoints")
    parser.add_argument("--threads", type=integer(low=1), default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def add_robust_overfitting(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``robust-overfitting`` under a ``study`` command's subparsers."""
    p = subparsers.add_parser(NAME, help=HELP, description=HELP)
    add_arguments(p)
    p.set_defaults(_run=run_robust_overfitting)
    return p


def run_robust_overfitting(args: argparse.Namespace) -> int:
    import shutil

    import torch

    from genbound.fileio import make_output_folder
    from genbound.studies.robust_overfitting import full_config, quick_config, run_study

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    study = quick_config() if args.quick else full_config(args.setting)
    study.base.seed = int(args.seed)
    if args.label_noise is not None:
        study.label_noise = float(args.label_noise)
    if args.epochs is not None:
        study.base.epochs = int(args.epochs)
        ms = [m for m in study.base.schedule.get("milestones", []) if m < args.epochs]
        if not ms:
            ms = [max(1, args.epochs // 3)]
        study.base.schedule = {**study.base.schedule, "milestones": ms}
    if args.runs:
        study.runs = tuple(r.strip() for r in args.runs.split(",") if r.strip())
        from genbound.studies.robust_overfitting import run_config
        for r in study.runs:
            run_config(study, r)  # validates the name
    if args.no_dynamics:
        study.dynamics = None
    out = make_output_folder(args.out, "--out")  # after every option is checked: a refused run writes nothing
    if args.fresh and os.path.isdir(os.path.join(out, "runs")):
        shutil.rmtree(os.path.join(out, "runs"))
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    result = run_study(study, out, show_progress=not args.quiet, log=log)
    if not args.quiet:
        with open(os.path.join(out, "report.md")) as f:
            print(f.read())
    print(f"wrote {os.path.join(out, 'study.json')} ({result['seconds']:.0f} s)")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_robust_overfitting(args)
