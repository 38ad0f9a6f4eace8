"""Checkpoints that let a killed adversarial-training run resume bit-for-bit.

A checkpoint holds the model and optimizer state, the schedule's state, the last completed epoch,
the best-so-far bookkeeping, the byte length of the tracking log at that epoch (the log is
truncated back to it on resume) and every RNG state: torch's global CPU generator (and CUDA's when
present), numpy's legacy global state, Python's ``random`` state. The trainer itself draws from
generators seeded by :func:`genbound.torch_utils.derive_seed` ``(seed, purpose, epoch, step)``, so
its randomness does not depend on those global states; they are saved and restored so that any
user code (a model with dropout, a callback) also continues identically.

Files are written atomically (:mod:`genbound.fileio`: temporary file + ``os.replace``) and read with
``torch.load(weights_only=True)``: only tensors and plain Python values are stored.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbound.errors import UserInputError
from genbound.torch_utils import save_torch


def rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": py[0], "state": list(py[1]), "gauss": py[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the RNG states) atomically to ``path``."""
    save_torch({**state, "rng": rng_state()}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (safe loading: ``weights_only=True``)."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the user's file
        raise UserInputError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
