"""Reading and writing per-sample statistics as ``.npz`` (the input of ``genbound bounds``).

Arrays (``spec/bounds.md`` §1): ``train_cell``, ``train_loss``, optional ``train_stable``,
``heldout_cell``, ``heldout_loss``, ``kappas``; scalars: ``K`` or ``log_K``, optional
``stability_sound``, ``stability_method``, ``norm``, ``label_pure``, ``max_cell_diameter``,
``model``, ``partition_uses_heldout``, ``partition_depends_on_train``, ``partition_json``.

Several models in one file: prefix each key with ``<model>/`` (e.g. ``cnn/train_loss``); keys
without a prefix are shared by every model (typically ``K``, ``kappas``, ``heldout_cell``).
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

import numpy as np

from genbound.bounds.stats import SampleStats
from genbound.errors import UserInputError

ARRAYS = ("train_cell", "train_loss", "train_stable", "heldout_cell", "heldout_loss", "kappas")
SCALARS = ("K", "log_K", "stability_sound", "stability_method", "norm", "label_pure", "max_cell_diameter",
           "model", "partition_uses_heldout", "partition_depends_on_train", "partition_json")
REQUIRED = ("train_cell", "train_loss")


def _scalar(name: str, a: np.ndarray) -> Any:
    if a.size != 1:
        raise UserInputError(f"{name} must be a single value, got an array of shape {a.shape}")
    v = a.reshape(()).item()
    if name in ("stability_sound", "label_pure", "partition_uses_heldout", "partition_depends_on_train"):
        if v not in (0, 1, True, False):
            raise UserInputError(f"{name} must be true/false, got {v!r}")
        return bool(v)
    if name == "max_cell_diameter":
        v = float(v)
        return None if np.isnan(v) else v
    if name in ("model", "stability_method", "norm", "partition_json"):
        return str(v)
    if name == "K":
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int):
            raise UserInputError(f"K must be an integer (the total number of cells), got {v!r}")
    return v


def _build(fields: dict[str, Any], model: str) -> SampleStats:
    missing = [k for k in REQUIRED if k not in fields]
    if missing:
        raise UserInputError(f"model {model!r}: missing array(s) {', '.join(missing)} in the statistics file")
    if "K" not in fields and "log_K" not in fields:
        raise UserInputError("the statistics file needs K (total number of cells) or log_K")
    partition = {}
    if "partition_json" in fields:
        try:
            partition = json.loads(fields.pop("partition_json"))
        except json.JSONDecodeError as exc:
            raise UserInputError(f"partition_json is not valid JSON: {exc}") from None
    fields.setdefault("model", model)
    return SampleStats(partition=partition, **fields)


def load_stats_npz(path: str | os.PathLike) -> list[SampleStats]:
    """Load one or several models' statistics from an ``.npz`` file (see module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserInputError(f"statistics file not found: {path}")
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            raise UserInputError(f"{path} is not a readable .npz file (not a zip archive); save it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UserInputError(f"{path} is not a readable .npz file ({exc})") from None
    except ValueError as exc:
        raise UserInputError(f"{path}: cannot read arrays without pickle ({exc}); save plain numeric arrays") from None
    shared: dict[str, Any] = {}
    per_model: dict[str, dict[str, Any]] = {}
    known = set(ARRAYS) | set(SCALARS)
    for key, a in raw.items():
        model, _, name = key.rpartition("/")
        if name not in known:
            raise UserInputError(f"{path}: unknown array {key!r}; expected {', '.join(ARRAYS + SCALARS)}")
        value = _scalar(name, a) if name in SCALARS else a
        (per_model.setdefault(model, {}) if model else shared)[name] = value
    if not per_model:
        return [_build(dict(shared), str(shared.get("model", os.path.splitext(os.path.basename(path))[0])))]
    return [_build({**shared, **fields}, model) for model, fields in per_model.items()]


def save_stats_npz(path: str | os.PathLike, stats: list[SampleStats] | SampleStats) -> None:
    """Write statistics so that :func:`load_stats_npz` returns them (``<model>/`` prefixes for several)."""
    items = [stats] if isinstance(stats, SampleStats) else list(stats)
    out: dict[str, np.ndarray] = {}
    names = [s.model for s in items]
    for s in items:
        tag = s.model if names.count(s.model) == 1 else f"{s.model}@K={s.K if s.K is not None else 'e^%.6g' % s.log_K}"
        pre = f"{tag}/" if len(items) > 1 else ""
        out.update({
            pre + "train_cell": s.train_cell, pre + "train_loss": s.train_loss, pre + "train_stable": s.train_stable,
            pre + "heldout_cell": s.heldout_cell, pre + "heldout_loss": s.heldout_loss, pre + "kappas": s.kappas,
            pre + "log_K": np.float64(s.log_K), pre + "model": np.str_(s.model),
            pre + "stability_method": np.str_(s.stability_method), pre + "stability_sound": np.bool_(s.stability_sound),
            pre + "label_pure": np.bool_(s.label_pure),
            pre + "max_cell_diameter": np.float64(np.nan if s.max_cell_diameter is None else s.max_cell_diameter),
            pre + "partition_uses_heldout": np.bool_(s.partition_uses_heldout),
            pre + "partition_depends_on_train": np.bool_(s.partition_depends_on_train),
            pre + "partition_json": np.str_(json.dumps(s.partition)),
        })
        if s.K is not None and s.K < 2**63:
            out[pre + "K"] = np.int64(s.K)
        if s.norm is not None:
            out[pre + "norm"] = np.str_(s.norm)
    np.savez_compressed(path, **out)
