"""Finished batches on disk, so that a killed run (or a killed ``torchrun`` rank) resumes where it stopped.

A :class:`BatchStore` is a folder holding one ``.npz`` per finished :class:`BatchResult`, named by
the batch's first source index, its size and a hash of its indices; the caller keys the folder by
everything the flags depend on (model, data, kappas, engine parameters), so a file found there is
the result the engine would compute again (engines depend on the batch only, and seed by source
index). Writes are atomic (:mod:`genbound.fileio`): a file is complete or absent. A file that
cannot be read back (another version's format, a foreign file) counts as not done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

import numpy as np

from genbound.errors import UserInputError
from genbound.fileio import atomic_write, make_output_folder, read_npz
from genbound.stability.engine import BatchResult

__all__ = ["BatchStore"]

_ARRAY = "array__"
_TEXT = "text__"  # object arrays of strings (e.g. the verifier's status) stored as unicode, read back as object


def _jsonable(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else str(v)


class BatchStore:
    """One folder of finished batches (module docstring)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = os.fspath(folder)

    def path(self, index: np.ndarray) -> str:
        ix = np.ascontiguousarray(np.asarray(index, np.int64))
        h = hashlib.sha256(ix.tobytes()).hexdigest()[:12]
        first = int(ix[0]) if ix.size else 0
        return os.path.join(self.folder, f"batch-{first:012d}-{ix.size}-{h}.npz")

    def save(self, b: BatchResult) -> None:
        """Write ``b`` atomically (the folder is created on first use)."""
        make_output_folder(self.folder)
        arrays: dict[str, np.ndarray] = {"index": np.asarray(b.index, np.int64), "stable": np.asarray(b.stable, bool),
                                          "pred": np.asarray(b.pred, np.int64),
                                          "counts": np.str_(json.dumps(b.counts, default=_jsonable))}
        for k, a in b.arrays.items():
            a = np.asarray(a)
            arrays[(_TEXT if a.dtype == object else _ARRAY) + k] = a.astype(str) if a.dtype == object else a
        with atomic_write(self.path(b.index), "wb") as fh:
            np.savez(fh, **arrays)

    def load(self, index: np.ndarray) -> BatchResult | None:
        """The stored result of the batch at ``index``, or None (not done, or not readable)."""
        path = self.path(index)
        if not os.path.isfile(path):
            return None
        try:
            z = read_npz(path, what="batch file")
            ix = z["index"]
            if not np.array_equal(ix, np.asarray(index, np.int64)) or z["stable"].shape[0] != ix.size:
                return None
            arrays = {k[len(_ARRAY):]: v for k, v in z.items() if k.startswith(_ARRAY)}
            arrays.update({k[len(_TEXT):]: v.astype(object) for k, v in z.items() if k.startswith(_TEXT)})
            return BatchResult(index=ix, stable=z["stable"].astype(bool), pred=z["pred"].astype(np.int64),
                               counts=json.loads(str(z["counts"])), arrays=arrays)
        except (UserInputError, KeyError, ValueError):
            return None

    def clear(self) -> None:
        """Remove the folder (once the merged result is saved)."""
        shutil.rmtree(self.folder, ignore_errors=True)
