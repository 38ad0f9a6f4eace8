"""``genbound evaluate CONFIG.toml [--out DIR]``: every bound for your models and data.

Under ``torchrun --nproc-per-node N -m genbound evaluate CONFIG.toml`` the ranks share the
per-sample steps (:mod:`genbound.distributed`); rank 0 alone writes and prints, the other ranks
exit 0 quietly (on an error, with the same exit code, rank 0 printing the one line).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from genbound.errors import UserInputError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Evaluate your own models (factory + weights) on your data, as described by a TOML file "
                     "(schema: docs/config.md; examples in examples/). Writes the same files as the demo.")
    p.add_argument("config", metavar="CONFIG.toml")
    p.add_argument("--out", help="output folder (default: [run] out, else runs/evaluate-<timestamp>); rerun to resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


@contextlib.contextmanager
def _importable(folder: str) -> Iterator[None]:
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)


def _normalization(spec: str | dict, source: Any) -> Any:
    """A model's ``input_normalization`` (docs/config.md) as what ``load_model`` takes."""
    from genbound.data import Normalization
    if isinstance(spec, dict):
        norm = Normalization(tuple(spec["mean"]), tuple(spec["std"]))
    elif spec in ("data", "none", "model"):
        return {"data": source.normalization, "none": None}.get(spec, spec)
    else:
        norm = Normalization.preset(spec)
    channels = max(len(norm.mean), len(norm.std))
    if channels > 1 and len(source.shape) == 3 and channels != source.shape[0]:
        raise UserInputError(f"input_normalization {spec!r} has {channels} channels but the data have "
                             f"{source.shape[0]}")
    return norm


def run(args: argparse.Namespace) -> int:
    from genbound.config import load_config_file
    from genbound.distributed import process_group

    rc = load_config_file(args.config)
    with process_group(rc.config.device) as ranks:
        return _run(args, rc, ranks)


def _run(args: argparse.Namespace, rc: Any, ranks: Any) -> int:
    from genbound.config import Config
    from genbound.data import load_dataset, split_source
    from genbound.fileio import check_output_folder
    from genbound.models import load_model
    from genbound.distributed import from_main, rank_device
    from genbound.pipeline import evaluate

    cfg = Config(**{**rc.config.to_dict(), "progress": rc.config.progress and not args.no_progress and ranks.main,
                    "device": rank_device(rc.config.device)})
    # one output folder for all ranks, even when the ranks' clocks read different seconds
    out = check_output_folder(from_main(lambda: args.out or rc.out or os.path.join(
        "runs", time.strftime("evaluate-%Y%m%d-%H%M%S")), ranks), "--out" if args.out else None)
    source = load_dataset(rc.train, preprocess=rc.preprocess, classes=rc.classes)
    split_record = None
    if rc.heldout is None:
        train, heldout, split = split_source(source, rc.heldout_fraction, seed=rc.split_seed)
        split_record = split.record()
    else:
        train, heldout = source, load_dataset(rc.heldout, preprocess=rc.preprocess, classes=rc.classes)
    models = {}
    with _importable(rc.base):  # a factory module beside the config imports like one on PYTHONPATH
        for m in rc.models:
            models[m.name] = load_model(m.factory, m.weights, device=cfg.device,
                                        normalization=_normalization(m.input_normalization, source), **m.kwargs)
    t0 = time.time()
    ev = evaluate(models, train, heldout, cfg, cache_dir=os.path.join(out, "cache"))
    ev.records["data"] = {"train": train.describe(), "heldout": heldout.describe(), "split": split_record,
                          "config_file": os.path.abspath(args.config)}
    ev.save(out)
    if not ranks.main:
        return 0
    print(ev.table())
    print(f"\nwrote {out}/: result.json, samples.npz, config.toml, versions.json, report.html "
          f"({time.time() - t0:.0f} s)")
    return 0
