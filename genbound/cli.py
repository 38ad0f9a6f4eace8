"""The ``genbound`` command line: a thin layer that parses arguments and calls the library.

Each subcommand lives in ``genbound/commands/<name>.py`` and exposes ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Command modules are imported lazily so that
``genbound bounds`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from genbound import __version__
from genbound.errors import EXIT_OUTPUT, OutputError, PeerError, UserInputError

# Order here is the order shown by ``genbound --help``.
COMMANDS: dict[str, str] = {
    "demo": "genbound.commands.demo",
    "evaluate": "genbound.commands.evaluate",
    "bounds": "genbound.commands.bounds",
    "train": "genbound.commands.train",
    "wci": "genbound.commands.wci",
    "study": "genbound.commands.study",
    "check": "genbound.commands.check",
    "report": "genbound.commands.report",
    "reproduce": "genbound.commands.reproduce",
}

_HELP: dict[str, str] = {
    "demo": "the whole pipeline on shipped data and reference models (--quick: about a minute)",
    "evaluate": "every bound for your own models and data, described by a TOML file",
    "bounds": "compute every bound of the spec from a per-sample statistics file (.npz)",
    "train": "train a reference model (mlp, small_cnn, small_resnet) on a named dataset and save its weights",
    "wci": "Weight-Curvature Index: per-layer ||W||_F and Hessian traces on frozen adversarial examples",
    "study": "run a study end to end: certified-lowdim (where certified bounds are non-vacuous), robust-overfitting",
    "check": "self-checks of validity: coverage (simulated failure rates) and memorization",
    "report": "re-render the HTML report page of finished run(s); several runs side by side",
    "reproduce": "a published protocol (than2024, nuhu2026) on your data and models: the paper-style table",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the rest of genbound's errors are one line too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="genbound",
        description="Generalization bounds from robustness and stability, and curvature diagnostics.",
    )
    parser.add_argument("--version", action="version", version=f"genbound {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        p = sub.add_parser(name, help=_HELP.get(name, ""))
        if name == selected:
            module = importlib.import_module(COMMANDS[name])
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if a in COMMANDS), None)
    parser = _build_parser(selected)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage errors (exit 2, message already printed) and --help (0)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    # under torchrun, rank 0 alone reports (every rank exits with the same code)
    say = (lambda line: print(line, file=sys.stderr)) if os.environ.get("RANK", "0") == "0" else (lambda line: None)
    try:
        return int(args._run(args) or 0)
    except UserInputError as exc:
        say(f"genbound {args.command}: error: {exc}")
        return 2
    except OutputError as exc:  # the system refused to write a result: one line naming the path, exit 74
        say(f"genbound {args.command}: error: {exc}")
        return EXIT_OUTPUT
    except PeerError as exc:  # another rank failed (its own traceback is above): one line, exit 1
        say(f"genbound {args.command}: error: {exc}")
        return 1
    except KeyboardInterrupt:
        say(f"genbound {args.command}: interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
