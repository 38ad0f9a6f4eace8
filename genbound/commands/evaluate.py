"""``genbound evaluate CONFIG.toml [--out DIR]``: every bound for your models and data."""

from __future__ import annotations

import argparse
import os
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Evaluate your own models (factory + weights) on your data, as described by a TOML file "
                     "(schema: docs/config.md; examples in examples/). Writes the same files as the demo.")
    p.add_argument("config", metavar="CONFIG.toml")
    p.add_argument("--out", help="output folder (default: [run] out, else runs/evaluate-<timestamp>); rerun to resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from genbound.config import Config, load_config_file
    from genbound.data import load_dataset, split_source
    from genbound.models import load_model
    from genbound.pipeline import evaluate

    rc = load_config_file(args.config)
    cfg = rc.config if not args.no_progress else Config(**{**rc.config.to_dict(), "progress": False})
    out = args.out or rc.out or os.path.join("runs", time.strftime("evaluate-%Y%m%d-%H%M%S"))
    source = load_dataset(rc.train)
    split_record = None
    if rc.heldout is None:
        train, heldout, split = split_source(source, rc.heldout_fraction, seed=rc.split_seed)
        split_record = split.record()
    else:
        train, heldout = source, load_dataset(rc.heldout)
    models = {}
    for m in rc.models:
        norm = source.normalization if m.input_normalization == "data" else None
        models[m.name] = load_model(m.factory, m.weights, device=cfg.device, normalization=norm, **m.kwargs)
    t0 = time.time()
    ev = evaluate(models, train, heldout, cfg, cache_dir=os.path.join(out, "cache"))
    ev.records["data"] = {"train": train.describe(), "heldout": heldout.describe(), "split": split_record,
                          "config_file": os.path.abspath(args.config)}
    ev.save(out)
    print(ev.table())
    print(f"\nwrote {out}/: result.json, samples.npz, config.toml, versions.json, report.html "
          f"({time.time() - t0:.0f} s)")
    return 0
