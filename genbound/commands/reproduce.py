"""``genbound reproduce PROTOCOL --data DIR --model FACTORY=WEIGHTS ... [--out DIR]``: a published
protocol (``than2024``, ``nuhu2026``) on your data and models, and its paper-style table.

The protocol's choices (genbound/studies/protocols.py, docs/reproduce.md) become one ``genbound
evaluate`` config per partition seed (``seed-S.toml`` in the output folder: rerun or edit them);
each runs as ``genbound evaluate`` would, sharing the stability cache, and the table of all of
them is written as ``table.md``, ``table.csv`` and ``table.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from typing import Any

from genbound.commands._args import delta, integer, real, split_fraction
from genbound.errors import UserInputError

NAME = "reproduce"
HELP = "a published protocol (than2024, nuhu2026) on your data and models: the paper-style table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from genbound.names import STABILITY_METHODS
    from genbound.studies.protocols import PROTOCOLS

    p.description = ("Run a published experimental protocol on your own data and models and write the paper-style "
                     "table (model, train and test error, every certified bound beside the estimates) as Markdown, "
                     "CSV and JSON. Protocols: " + "; ".join(f"{k}: {v.title}" for k, v in PROTOCOLS.items())
                     + ". See docs/reproduce.md.")
    p.add_argument("protocol", metavar="PROTOCOL", help=f"one of {', '.join(PROTOCOLS)}")
    p.add_argument("--data", required=True, metavar="TRAIN",
                   help="the models' training set: an ImageFolder (ImageNet train, synset folders) or a dataset name")
    p.add_argument("--heldout", metavar="HELDOUT", help="held-out set (ImageNet val in synset folders); default: a "
                                                        "split of --data")
    p.add_argument("--heldout-fraction", type=split_fraction, help="fraction of --data held out when --heldout is "
                                                                   "not given (default 0.2)")
    p.add_argument("--model", action="append", default=[], metavar="FACTORY[=WEIGHTS]",
                   help="a model: torchvision:NAME, timm:NAME or package.module:function, and its weights file "
                        "(repeat for several)")
    p.add_argument("--models", metavar="MODELS.toml",
                   help="[[models]] tables as in docs/config.md (kwargs, input_normalization), for models --model "
                        "cannot describe; relative paths resolve against this file's folder")
    p.add_argument("--K", type=integer(low=1), nargs="+", help="partition sizes (default: the protocol's)")
    p.add_argument("--kappas", type=real(low=0, high=1, low_open=True), nargs="+",
                   help="stability radii in [0, 1] pixel units (default: the protocol's)")
    p.add_argument("--seeds", type=integer(low=1), help="number of partition seeds (default: the protocol's)")
    p.add_argument("--stability", choices=STABILITY_METHODS, help="stability engine (default: the protocol's)")
    p.add_argument("--steps", type=integer(low=1), help="PGD steps (default: the protocol's, else 10)")
    p.add_argument("--draws", type=integer(low=1), help="noise draws per sample with --stability noise (default 32)")
    p.add_argument("--delta", type=delta, help="failure probability in (0, 1) (default: the protocol's)")
    p.add_argument("--classes", help="class list of the models: imagenet, cifar10 or a labels file "
                                     "(default: the protocol's)")
    p.add_argument("--preprocess", help="preprocessing preset: imagenet, imagenet-bicubic, cifar (default: the "
                                        "protocol's)")
    p.add_argument("--batch-size", type=integer(low=1), help="batch size of every pass (default 256)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA if available)")
    p.add_argument("--out", help="output folder (default runs/reproduce-PROTOCOL-<timestamp>); rerun to resume")
    p.add_argument("--config-only", action="store_true", help="write the protocol's configs and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _model_entries(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str | None]:
    """[[models]] tables from --model and --models, paths made absolute; and the --models folder."""
    from genbound.config import check_model_name
    entries: list[dict[str, Any]] = []
    for spec in args.model:
        factory, _, weights = spec.partition("=")
        if not factory or (_ and not weights):
            raise UserInputError(f"--model {spec!r}: expected FACTORY or FACTORY=WEIGHTS, e.g. "
                                 "torchvision:resnet18=resnet18.pth")
        name = factory.rpartition(":")[2].rpartition(".")[2] or factory
        try:
            check_model_name(name)
        except UserInputError:
            raise UserInputError(f"--model {spec!r}: cannot name a model after {factory!r}; use --models FILE with "
                                 "a name") from None
        if weights and not os.path.isfile(weights):
            raise UserInputError(f"--model {spec!r}: weights file {weights!r} not found")
        entries.append({"name": name, "factory": factory, **({"weights": os.path.abspath(weights)} if weights else {})})
    folder = None
    if args.models:
        if not os.path.isfile(args.models):
            raise UserInputError(f"--models: file {args.models!r} not found")
        try:
            with open(args.models, "rb") as fh:
                doc = tomllib.load(fh)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UserInputError(f"--models {args.models}: not valid TOML: {exc}") from None
        if set(doc) != {"models"} or not isinstance(doc["models"], list) or not doc["models"] or not all(
                isinstance(m, dict) for m in doc["models"]):
            raise UserInputError(f"--models {args.models}: expected only [[models]] tables (name, factory, weights, "
                                 "kwargs, input_normalization)")
        folder = os.path.dirname(os.path.abspath(args.models))
        for m in doc["models"]:
            m = dict(m)
            if isinstance(m.get("weights"), str):
                m["weights"] = os.path.join(folder, m["weights"])
            entries.append(m)
    if not entries:
        raise UserInputError("give the models: --model FACTORY=WEIGHTS (repeat) or --models FILE.toml; "
                             f"the protocol's are {', '.join(args._protocol.models)}")
    names = [m["name"] for m in entries if "name" in m]  # unnamed ones are named by evaluate (modelN)
    if len(set(names)) != len(names):
        raise UserInputError(f"model names must be unique, got {names}; name them in a --models file")
    return entries, folder


def _protocol(args: argparse.Namespace) -> Any:
    from genbound.studies.protocols import get_protocol
    proto = get_protocol(args.protocol)
    for section, key, value in (("bounds", "K", args.K), ("bounds", "kappas", args.kappas),
                                ("bounds", "delta", args.delta), ("stability", "method", args.stability),
                                ("stability", "steps", args.steps), ("stability", "draws", args.draws),
                                ("data", "classes", args.classes), ("data", "preprocess", args.preprocess)):
        if value is not None:
            proto = proto.override(section, key, list(value) if isinstance(value, list) else value)
    return proto


def _topmost_missing(path: str) -> str | None:
    """The outermost folder of ``path`` that does not exist yet (what creating it would add), or None."""
    path, missing = os.path.abspath(path), None
    while not os.path.exists(path):
        missing, path = path, os.path.dirname(path)
    return missing


def _data_path(p: str) -> str:
    return os.path.abspath(p) if os.path.exists(p) else p  # else a registered dataset name


@contextlib.contextmanager
def _on_path(folder: str | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)


def run(args: argparse.Namespace) -> int:
    from genbound.commands import evaluate as evaluate_command
    from genbound.config import load_config_file, to_toml
    from genbound.fileio import check_output_folder, make_output_folder, write_text
    from genbound.report.paper_table import build_table, to_markdown, write_table
    from genbound.studies.protocols import adaptations, build_config

    proto = _protocol(args)
    args._protocol = proto
    models, models_folder = _model_entries(args)
    out = check_output_folder(args.out or os.path.join("runs", time.strftime(f"reproduce-{proto.name}-%Y%m%d-%H%M%S")),
                              "--out" if args.out else None)
    if not os.path.exists(args.data) and os.sep in args.data:
        raise UserInputError(f"--data {args.data!r}: no such folder or file")
    if args.heldout is not None and not os.path.exists(args.heldout):
        raise UserInputError(f"--heldout {args.heldout!r}: no such folder or file")
    data: dict[str, Any] = {"train": _data_path(args.data)}
    if args.heldout is not None:
        data["heldout"] = _data_path(args.heldout)
    elif args.heldout_fraction is not None:
        data["heldout_fraction"] = args.heldout_fraction
    run_section = {k: v for k, v in (("batch_size", args.batch_size), ("device", args.device)) if v is not None}
    seeds = args.seeds or proto.seeds
    configs = []
    for seed in range(seeds):
        sections = build_config(proto, data=data, models=models, seed=seed, run=run_section)
        configs.append((seed, to_toml(sections)))
    with tempfile.TemporaryDirectory() as tmp:  # every config checked by evaluate's loader before anything is written
        for seed, text in configs:
            path = os.path.join(tmp, f"seed-{seed}.toml")
            write_text(path, text)
            try:
                load_config_file(path)
            except UserInputError as exc:
                raise UserInputError(str(exc).replace(path, f"the {proto.name} config")) from None
    created = _topmost_missing(out)
    make_output_folder(out, "--out" if args.out else None)
    paths = []
    for seed, text in configs:
        path = os.path.join(out, f"seed-{seed}.toml")
        write_text(path, text)
        paths.append(path)
    record = {**proto.record(), "models_used": [m.get("factory", "?") for m in models], "seeds_used": seeds}
    record["notes"] = record["notes"] + adaptations(proto, models)
    write_text(os.path.join(out, "protocol.json"), json.dumps(record, indent=2) + "\n")
    if args.config_only:
        print(f"wrote {len(paths)} config(s) to {out}/ (seed-0.toml ...) and protocol.json; run each with "
              "genbound evaluate, or rerun without --config-only")
        return 0
    t0 = time.time()
    cache = make_output_folder(os.path.join(out, "cache"))
    runs = []
    for (seed, _), path in zip(configs, paths):
        run_dir = make_output_folder(os.path.join(out, f"seed-{seed}"))
        link = os.path.join(run_dir, "cache")
        if not os.path.exists(link):  # one stability cache for every seed: flags do not depend on the partition
            with contextlib.suppress(FileExistsError):  # another torchrun rank made it first
                os.symlink(os.path.relpath(cache, run_dir), link)
        print(f"== {proto.name}: partition seed {seed} ({seed + 1}/{seeds})", flush=True)
        try:
            with _on_path(models_folder):
                evaluate_command.run(argparse.Namespace(config=path, out=run_dir, no_progress=args.no_progress))
        except UserInputError:
            if created is not None and not runs:  # a mistake found by the first run (a factory, the data):
                shutil.rmtree(created, ignore_errors=True)  # leave nothing behind
            raise
        runs.append((seed, run_dir))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 writes the table
        return 0
    docs = []
    for seed, run_dir in runs:
        with open(os.path.join(run_dir, "result.json"), encoding="utf-8") as fh:
            docs.append((seed, json.load(fh)))
    table = build_table(docs)
    delta_used = docs[0][1]["config"]["delta"]
    written = write_table(out, table, record, delta_used, [r for _, r in runs])
    print()
    print(to_markdown(table, record, delta_used))
    print(f"wrote {written['md']}, {written['csv']}, {written['json']} ({time.time() - t0:.0f} s)")
    return 0
