"""Seeded stratified train / held-out splits, recorded (seed, fraction, hash of the indices)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from genbound.data.source import DataSource
from genbound.errors import UserInputError
from genbound.torch_utils import array_hash


@dataclass(frozen=True)
class Split:
    """Indices of a stratified split and what is recorded about it."""

    train_indices: np.ndarray
    heldout_indices: np.ndarray
    seed: int
    heldout_fraction: float

    def record(self) -> dict[str, Any]:
        return {"seed": self.seed, "heldout_fraction": self.heldout_fraction,
                "n_train": int(self.train_indices.size), "n_heldout": int(self.heldout_indices.size),
                "train_indices_hash": array_hash(self.train_indices),
                "heldout_indices_hash": array_hash(self.heldout_indices)}


def stratified_split(labels: np.ndarray, heldout_fraction: float, *, seed: int = 0) -> Split:
    """Split indices so every class keeps (about) ``heldout_fraction`` of its samples held out.

    Per class c with n_c samples, ``round(heldout_fraction * n_c)`` seeded-random samples go to the
    held-out part. Both index arrays are returned sorted. Deterministic given (labels, fraction, seed).
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise UserInputError("labels must be a 1-D integer array")
    if not 0.0 < heldout_fraction < 1.0:
        raise UserInputError(f"heldout_fraction must be strictly between 0 and 1; got {heldout_fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(heldout_fraction * idx.size))
        held.append(rng.permutation(idx)[:k])
    heldout = np.sort(np.concatenate(held)).astype(np.int64) if held else np.zeros(0, np.int64)
    mask = np.ones(y.size, dtype=bool)
    mask[heldout] = False
    return Split(np.flatnonzero(mask).astype(np.int64), heldout, int(seed), float(heldout_fraction))


def split_source(source: DataSource, heldout_fraction: float = 0.2, *, seed: int = 0) -> tuple[DataSource, DataSource, Split]:
    """``(train, heldout, split)``: a stratified split of ``source`` as two sub-sources."""
    sp = stratified_split(source.labels, heldout_fraction, seed=seed)
    train = source.subset(sp.train_indices, name=f"{source.name}:train")
    held = source.subset(sp.heldout_indices, name=f"{source.name}:heldout")
    rec = sp.record()
    train.provenance["split"] = {**rec, "part": "train"}
    held.provenance["split"] = {**rec, "part": "heldout"}
    return train, held, sp
