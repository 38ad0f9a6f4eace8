"""Reading a finished run folder: the files ``demo``/``evaluate`` write, checked once here.

A run folder holds ``result.json`` (schema ``genbound.result/1``), and normally ``samples.npz``,
``config.toml`` and ``versions.json``. Only ``result.json`` is needed to draw the page; the others
are shown in the provenance section when present.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

from genbound.errors import UserInputError

RUN_FILES = ("result.json", "samples.npz", "config.toml", "versions.json")
SCHEMA_PREFIX = "genbound.result/"


@dataclass
class Run:
    """One run folder: its result document and the records around it."""

    folder: str
    label: str
    doc: dict[str, Any]
    config_text: str | None = None
    versions: dict[str, Any] | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    samples_models: list[str] | None = None

    @property
    def records(self) -> dict[str, Any]:
        return self.doc.get("run") or {}


def _not_a_run(folder: str, why: str) -> UserInputError:
    return UserInputError(f"{folder} is not a genbound run folder ({why}); give a folder written by "
                          "genbound demo or genbound evaluate")


def load_run(folder: str | os.PathLike, label: str | None = None) -> Run:
    """Read ``folder``; raises :class:`UserInputError` (one line) if it is not a run folder."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise UserInputError(f"{folder} is not a folder; give a run folder written by genbound demo or genbound evaluate")
    path = os.path.join(folder, "result.json")
    if not os.path.isfile(path):
        raise _not_a_run(folder, "it has no result.json")
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _not_a_run(folder, f"result.json is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith(SCHEMA_PREFIX):
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise _not_a_run(folder, f"result.json has schema {got!r}, not {SCHEMA_PREFIX}1")
    if not isinstance(doc.get("results"), list) or not isinstance(doc.get("models"), list) or not doc["models"]:
        raise _not_a_run(folder, "result.json lists no models or no results")
    run = Run(folder=folder, label=label or os.path.basename(os.path.normpath(os.path.abspath(folder))), doc=doc)
    cfg = os.path.join(folder, "config.toml")
    if os.path.isfile(cfg):
        with open(cfg, encoding="utf-8", errors="replace") as fh:
            run.config_text = fh.read()
    ver = os.path.join(folder, "versions.json")
    if os.path.isfile(ver):
        try:
            with open(ver, encoding="utf-8") as fh:
                run.versions = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError):
            run.versions = None
    for name in RUN_FILES:
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            run.files.append({"name": name, "bytes": os.path.getsize(p), "sha256": _sha256(p)})
        else:
            run.files.append({"name": name, "bytes": None, "sha256": None})
    run.samples_models = _npz_models(os.path.join(folder, "samples.npz"))
    return run


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _npz_models(path: str) -> list[str] | None:
    """The model tags in a statistics file (``<model>@K=<K>/`` prefixes), read from the zip index only."""
    if not os.path.isfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            names = [n[:-4] if n.endswith(".npy") else n for n in z.namelist()]
    except (zipfile.BadZipFile, OSError):
        return None
    tags = list(dict.fromkeys(n.rpartition("/")[0] for n in names))
    return [t for t in tags if t] or [""]
