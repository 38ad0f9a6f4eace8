"""Reading and writing per-sample statistics as ``.npz`` (the input of ``genbound bounds``).

Arrays (``spec/bounds.md`` §1): ``train_cell``, ``train_loss``, optional ``train_stable``,
``heldout_cell``, ``heldout_loss``, ``kappas``, optional ``train_checked`` (§8; absent = every
sample checked); scalars: ``K`` or ``log_K``, optional ``stability_sound``, ``stability_method``,
``norm``, ``label_pure``, ``max_cell_diameter``, ``model``, ``partition_uses_heldout``,
``partition_depends_on_train``, ``partition_json``, ``selection`` (``all`` | ``cells`` |
``uniform``), ``selection_seed``, ``delta_s``; optional identifiers ``train_index``,
``train_path``, ``heldout_index``, ``heldout_path`` (each sample's position in its source and,
for image files, its path relative to the folder).

Several models in one file: prefix each key with ``<model>/`` (e.g. ``cnn/train_loss``); keys
without a prefix are shared by every model (typically ``K``, ``kappas``, ``heldout_cell``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from genbound.bounds.stats import SampleStats
from genbound.errors import UserInputError
from genbound.fileio import atomic_write, read_npz

ARRAYS = ("train_cell", "train_loss", "train_stable", "heldout_cell", "heldout_loss", "kappas", "train_checked")
#: optional per-sample identifiers (absent in files written before they existed)
IDENTIFIERS = ("train_index", "train_path", "heldout_index", "heldout_path")
SCALARS = ("K", "log_K", "stability_sound", "stability_method", "norm", "label_pure", "max_cell_diameter",
           "model", "partition_uses_heldout", "partition_depends_on_train", "partition_json", "selection",
           "selection_seed", "delta_s")
REQUIRED = ("train_cell", "train_loss")
BOOLS = ("stability_sound", "label_pure", "partition_uses_heldout", "partition_depends_on_train")
STRINGS = ("model", "stability_method", "norm", "partition_json", "selection")
MAX_JSON_DEPTH = 64  # a partition record is a few levels deep; deeper is not one (and json's parser recurses)

_KINDS = {"U": "text", "S": "bytes", "b": "a boolean", "c": "a complex number", "M": "a date", "m": "a time span",
          "V": "a record", "f": "a float", "i": "an integer", "u": "an integer"}


def _got(a: np.ndarray) -> str:
    """What the user gave, in words: "text '2.5'", "a boolean True"."""
    v = a.reshape(()).item() if a.size == 1 else a
    return f"{_KINDS.get(a.dtype.kind, str(a.dtype))} {v!r}"


def _scalar(name: str, a: np.ndarray) -> Any:
    """One scalar field, checked by dtype: text is never taken where a number belongs, nor the reverse."""
    if a.size != 1:
        raise UserInputError(f"{name} must be a single value, got an array of shape {a.shape}")
    kind = a.dtype.kind
    if name in STRINGS:
        if kind == "S":
            try:
                return a.reshape(()).item().decode("utf-8")
            except UnicodeDecodeError:
                raise UserInputError(f"{name} is not valid UTF-8 text") from None
        if kind != "U":
            raise UserInputError(f"{name} must be text (a numpy str), got {_got(a)}")
        return str(a.reshape(()).item())
    v = a.reshape(()).item()
    if name in BOOLS:
        if kind == "b" or (kind in "iu" and v in (0, 1)):
            return bool(v)
        raise UserInputError(f"{name} must be true/false (a numpy bool), got {_got(a)}")
    if kind not in "iuf":  # bool, text, complex, dates, records: none of them is a count or a length
        what = "an integer (the total number of cells)" if name == "K" else "a real number"
        raise UserInputError(f"{name} must be {what}, got {_got(a)}")
    if name == "max_cell_diameter":
        v = float(v)
        return None if np.isnan(v) else v
    if name in ("K", "selection_seed"):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int):
            what = "the total number of cells" if name == "K" else "the seed of the subsample"
            raise UserInputError(f"{name} must be an integer ({what}), got {v!r}")
    if name in ("log_K", "delta_s"):
        v = float(v)
    return v


def _depth(v: Any) -> int:
    """Nesting depth of a parsed JSON value, counted without recursion."""
    depth, stack = 0, [(v, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, (dict, list)):
            depth = max(depth, d)
            stack.extend((y, d + 1) for y in (x.values() if isinstance(x, dict) else x))
    return depth


def _parse_partition(text: str) -> dict[str, Any]:
    def no_constant(c: str) -> Any:
        raise UserInputError(f"partition_json holds {c}, which is not JSON; write null for an unknown value")
    try:
        partition = json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"partition_json is not valid JSON: {exc}") from None
    except RecursionError:
        raise UserInputError(f"partition_json is nested too deeply (more than {MAX_JSON_DEPTH} levels)") from None
    if not isinstance(partition, dict):
        kind = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(type(partition), "a number")
        raise UserInputError(f"partition_json must be a JSON object (the partition record), got {kind}: {text[:60]!r}")
    if _depth(partition) > MAX_JSON_DEPTH:
        raise UserInputError(f"partition_json is nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return partition


def _build(fields: dict[str, Any], model: str) -> SampleStats:
    missing = [k for k in REQUIRED if k not in fields]
    if missing:
        raise UserInputError(f"model {model!r}: missing array(s) {', '.join(missing)} in the statistics file")
    if "K" not in fields and "log_K" not in fields:
        raise UserInputError("the statistics file needs K (total number of cells) or log_K")
    partition = _parse_partition(fields.pop("partition_json")) if "partition_json" in fields else {}
    fields.setdefault("model", model)
    return SampleStats(partition=partition, **fields)


def load_stats_npz(path: str | os.PathLike) -> list[SampleStats]:
    """Load one or several models' statistics from an ``.npz`` file (see module docstring).

    The archive is read by :func:`genbound.fileio.read_npz` (no pickles; declared sizes checked
    against the bytes held and the memory available before anything is allocated); every
    defect is a :class:`~genbound.errors.UserInputError`.
    """
    path = os.fspath(path)
    raw = read_npz(path, what="statistics file")
    shared: dict[str, Any] = {}
    per_model: dict[str, dict[str, Any]] = {}
    known = set(ARRAYS) | set(IDENTIFIERS) | set(SCALARS)
    for key, a in raw.items():
        model, _, name = key.rpartition("/")
        if name not in known:
            raise UserInputError(f"{path}: unknown array {key!r}; expected {', '.join(ARRAYS + IDENTIFIERS + SCALARS)}")
        try:
            value = _scalar(name, a) if name in SCALARS else a
        except UserInputError as exc:
            raise UserInputError(f"{path}: {key}: {exc}" if model else f"{path}: {exc}") from None
        (per_model.setdefault(model, {}) if model else shared)[name] = value
    if not raw:
        raise UserInputError(f"{path} holds no arrays; expected at least {', '.join(REQUIRED)} and K or log_K")
    if not per_model:
        default = str(shared.get("model", os.path.splitext(os.path.basename(path))[0]))
        return [_with_path(path, None, lambda: _build(dict(shared), default))]
    return [_with_path(path, model, lambda: _build({**shared, **fields}, model)) for model, fields in per_model.items()]


def _with_path(path: str, model: str | None, build: Any) -> SampleStats:
    """Run ``build`` and put the file (and model) in front of its error message."""
    try:
        return build()
    except UserInputError as exc:
        msg = str(exc)
        where = path if model is None or f"model {model!r}" in msg else f"{path}: model {model!r}"
        raise UserInputError(msg if msg.startswith(path) else f"{where}: {msg}") from None


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
            pre + "train_checked": s.train_checked, pre + "selection": np.str_(s.selection),
            pre + "delta_s": np.float64(s.delta_s),
        })
        if s.selection_seed is not None:
            out[pre + "selection_seed"] = np.int64(s.selection_seed)
        out.update({pre + name: getattr(s, name) for name in IDENTIFIERS if getattr(s, name) is not None})
        if s.K is not None and s.K < 2**63:
            out[pre + "K"] = np.int64(s.K)
        if s.norm is not None:
            out[pre + "norm"] = np.str_(s.norm)
    with atomic_write(path, "wb") as fh:
        np.savez_compressed(fh, **out)
