"""``genbound study <name>``: end-to-end studies. Subcommands: ``robust-overfitting``.

Minimal host for the study subcommands (each study module exposes ``add_<study>(subparsers)``).
"""

from __future__ import annotations

import argparse

NAME = "study"
HELP = "end-to-end studies: robust-overfitting"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from genbound.commands.study_robust_overfitting import add_robust_overfitting

    sub = parser.add_subparsers(dest="study", metavar="STUDY")
    add_robust_overfitting(sub)


def run(args: argparse.Namespace) -> int:
    from genbound.errors import UserInputError

    fn = getattr(args, "_run", None)
    if fn is None or fn is run:
        raise UserInputError("name a study: genbound study robust-overfitting --out DIR [--quick]")
    return int(fn(args) or 0)
