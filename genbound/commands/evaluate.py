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


def _normalization(spec: str | dict | None, source: Any, factory: str = "") -> Any:
    """A model's ``input_normalization`` (docs/config.md) as what ``load_model`` takes; not declared:
    the model's own for ``timm:NAME`` (its pretrained_cfg), else the data's."""
    from genbound.data import Normalization
    if spec is None:
        spec = "model" if factory.startswith("timm:") else "data"
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


def models_preprocess(rc: Any) -> Any:
    """The preprocessing of an image-folder run whose config declares none: the one the
    ``timm:NAME`` models declare in their pretrained_cfg (docs/config.md), or None. Models that
    declare different ones cannot share one data source: an error asks for ``[data] preprocess``."""
    from genbound.models import load_model
    from genbound.models.pretrained_cfg import pretrained_cfg, preprocess_from_cfg
    if not (os.path.isdir(rc.train) or (rc.heldout is not None and os.path.isdir(rc.heldout))):
        return None
    found: dict[Any, list[str]] = {}
    chosen = None
    for m in rc.models:
        if not m.factory.startswith("timm:"):
            continue
        # built without weights, on CPU: the cfg is the architecture's, whatever the weights
        cfg = pretrained_cfg(load_model(m.factory, device="cpu", **m.kwargs))
        if cfg is None:
            continue
        pre = preprocess_from_cfg(cfg, what=m.factory)
        key = (pre.resize, pre.crop, pre.interpolation, pre.mode)
        found.setdefault(key, []).append(m.name)
        chosen = chosen or pre
    if len(found) > 1:
        raise UserInputError("the timm models declare different preprocessing ("
                             + "; ".join(f"{', '.join(v)}: resize {k[0]}, crop {k[1]}, {k[2]}" for k, v in found.items())
                             + "); give [data] preprocess, or evaluate them in separate runs")
    return chosen


def rerun_inputs(rc: Any, preprocess: Any) -> dict[str, Any]:
    """The ``[data]`` and ``[[models]]`` tables of a run, resolved (absolute paths, the preprocessing
    actually used): written into the run's ``config.toml`` so that it reruns as it is."""
    def where(p: Any) -> Any:  # a file or folder (relative to where the run started): absolute; a name: as it is
        return os.path.abspath(p) if isinstance(p, str) and os.path.exists(p) else p

    data: dict[str, Any] = {"train": where(rc.train), "heldout": where(rc.heldout), "classes": where(rc.classes)}
    if rc.heldout is None:
        data.update(heldout_fraction=rc.heldout_fraction, split_seed=rc.split_seed)
    if preprocess is not None:
        data["preprocess"] = {"resize": preprocess.resize, "crop": preprocess.crop,
                              "interpolation": preprocess.interpolation, "mode": preprocess.mode}
    models = [{"name": m.name, "factory": m.factory, "weights": where(m.weights), "kwargs": dict(m.kwargs),
               "input_normalization": m.input_normalization} for m in rc.models]
    # the settings as declared, not as this rank resolved them (a torchrun rank's cuda:N, --no-progress)
    run = {"factory_path": os.path.abspath(rc.factory_path)}
    return {"data": data, "models": models, "bounds": rc.config.to_dict(), "run": run}


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
    with _importable(rc.factory_path):  # a factory module beside the config imports like one on PYTHONPATH
        preprocess = rc.preprocess if rc.preprocess is not None else models_preprocess(rc)
        source = load_dataset(rc.train, preprocess=preprocess, classes=rc.classes)
        split_record = None
        if rc.heldout is None:
            train, heldout, split = split_source(source, rc.heldout_fraction, seed=rc.split_seed)
            split_record = split.record()
        else:
            train, heldout = source, load_dataset(rc.heldout, preprocess=preprocess, classes=rc.classes)
        models = {}
        for m in rc.models:
            models[m.name] = load_model(m.factory, m.weights, device=cfg.device,
                                        normalization=_normalization(m.input_normalization, source, m.factory),
                                        **m.kwargs)
    t0 = time.time()
    ev = evaluate(models, train, heldout, cfg, cache_dir=os.path.join(out, "cache"))
    ev.records["data"] = {"train": train.describe(), "heldout": heldout.describe(), "split": split_record,
                          "config_file": os.path.abspath(args.config)}
    ev.save(out, inputs=rerun_inputs(rc, preprocess))
    if not ranks.main:
        return 0
    print(ev.table())
    print(f"\nwrote {out}/: result.json, samples.npz, config.toml, versions.json, report.html "
          f"({time.time() - t0:.0f} s)")
    return 0
