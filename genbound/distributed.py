"""Several processes, one result: sharding the per-sample steps over the ranks of a process group.

Under ``torchrun --nproc-per-node N -m genbound evaluate CONFIG`` (or inside a
``torch.distributed`` process group the caller initialized) every per-sample step is split into
disjoint shards, one per rank, and the per-sample arrays are gathered on every rank, so each rank
ends with the same arrays as a one-process run and computes the same bounds; only rank 0 writes
files (``Ranks.main``).

Shards are made of *whole batches* of the one-process run: the index list of a step is cut into
consecutive batches of ``batch_size`` (the last one shorter), and rank ``r`` of ``W`` takes the
batches ``r, r + W, r + 2W, ...`` (:func:`shard_batches`). A sample is therefore processed in the
same batch, with the same batch neighbours, whatever the number of ranks: a float kernel whose
rounding depends on the batch's composition (BLAS blocking) sees the same batch, and randomness
is seeded by the global source index anyway (:mod:`genbound.stability.engine`).

Errors: a step runs under :func:`collective`, which exchanges every rank's outcome after the
local work; if any rank failed, every rank raises (the failing rank its own exception, the others
a copy of it naming the rank), so no rank waits for a peer that will never arrive. A rank that
dies outright (killed, out of memory) closes its connections; the peers' next collective fails,
and ``torchrun`` stops the remaining workers. Collectives time out after
:data:`DEFAULT_TIMEOUT_S` (a rank stuck in a deadlock cannot hold the others forever).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from genbound.errors import OutputError, PeerError, UserInputError, first_line

__all__ = ["Ranks", "collective", "current", "from_main", "place_rows", "process_group",
           "shard_batches", "sharded_rows", "split_batches"]

T = TypeVar("T")

# Generous: a rank waits at a gather while its peers finish their shards, which are balanced but
# not equal (a resumed run, a slower device).
DEFAULT_TIMEOUT_S = 6 * 3600


@dataclass(frozen=True)
class Ranks:
    """This process's place in the process group: ``rank`` of ``world`` (``world == 1``: no group)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world > 1


def _dist() -> Any:
    import torch.distributed as dist
    return dist


def current() -> Ranks:
    """The initialized default process group's rank and size, else ``Ranks(0, 1)``."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def _launched_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserInputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def rank_device(device: str | torch.device | None) -> str | torch.device | None:
    """The device of this rank: under ``torchrun`` on CUDA, ``cuda:LOCAL_RANK`` for ``None`` / ``"cuda"``
    (one GPU per rank); anything else as given."""
    if _launched_world() <= 1 or "LOCAL_RANK" not in os.environ:
        return device
    cuda = (device is None and torch.cuda.is_available()) or str(device) == "cuda"
    return f"cuda:{int(os.environ['LOCAL_RANK'])}" if cuda else device


@contextlib.contextmanager
def process_group(device: str | torch.device | None = None, *,
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Ranks]:
    """Initialize the default process group when launched by ``torchrun`` (``WORLD_SIZE > 1`` in the
    environment) and none is initialized yet: NCCL when this rank computes on CUDA (the device set
    by ``LOCAL_RANK``), gloo on CPU; destroy it on exit. Yields this process's :class:`Ranks`
    (``Ranks(0, 1)`` outside ``torchrun``; an existing group is used as it is, and left alone)."""
    dist = _dist()
    if _launched_world() <= 1 or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise UserInputError("launched with WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    dev = torch.device(rank_device(device) or "cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    except (ValueError, RuntimeError) as exc:  # e.g. WORLD_SIZE set by hand, without torchrun's rendezvous
        raise UserInputError(f"cannot join the {backend} process group of WORLD_SIZE={_launched_world()} "
                             f"({first_line(exc)}); launch with torchrun --nproc-per-node N") from None
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def split_batches(indices: int | np.ndarray, batch_size: int) -> list[np.ndarray]:
    """The batches of a one-process run: ``indices`` (or ``arange(n)``) cut into consecutive chunks
    of ``batch_size`` (the last one shorter)."""
    if int(batch_size) < 1:
        raise UserInputError(f"batch_size must be >= 1, got {batch_size}")
    idx = np.arange(indices, dtype=np.int64) if np.isscalar(indices) else np.asarray(indices, np.int64).reshape(-1)
    return [idx[s:s + batch_size] for s in range(0, idx.size, int(batch_size))]


def shard_batches(batches: Sequence[T], ranks: Ranks | None = None) -> list[T]:
    """The batches rank ``r`` of ``W`` processes: ``batches[r::W]`` (strided, so the ranks' work stays
    balanced when batch costs drift along the data, e.g. a sorted dataset)."""
    r = ranks or current()
    return list(batches[r.rank::r.world])


def _all_gather(obj: Any) -> list[Any]:
    dist = _dist()
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def collective(fn: Callable[[], T], ranks: Ranks | None = None) -> list[T]:
    """Run ``fn`` on this rank, then exchange the outcomes: the list of every rank's return value, in
    rank order (``[fn()]`` without a group). If any rank raised, every rank raises: the failing rank
    its own exception, the others the lowest failing rank's error as a :class:`UserInputError`
    (a user error) or :class:`PeerError` (anything else), its message naming the rank."""
    r = ranks or current()
    if not r.sharded:
        return [fn()]
    value: Any = None
    err: BaseException | None = None
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001  (reported to the peers, then re-raised below)
        err = exc
    status = (None if err is None else (type(err).__name__, isinstance(err, UserInputError),
                                        isinstance(err, OutputError), first_line(err, 500)))
    outcomes = _all_gather((status, value if err is None else None))
    if err is not None:
        raise err
    for rank, (st, _) in enumerate(outcomes):
        if st is not None:
            name, user, output, msg = st
            text = f"rank {rank}: {msg}"
            if user:
                raise UserInputError(text)
            if output:
                raise OutputError(text)
            raise PeerError(f"rank {rank} failed with {name}: {msg}")
    return [v for _, v in outcomes]


def from_main(fn: Callable[[], T], ranks: Ranks | None = None) -> T:
    """``fn()`` computed on rank 0 alone, its value on every rank (e.g. a cache file read or a fit:
    every rank must take the same branch, or their collectives no longer match). An error on rank 0
    ends every rank, as in :func:`collective`."""
    r = ranks or current()
    return collective(lambda: fn() if r.main else None, r)[0]


def place_rows(parts: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]], n: int) -> dict[str, np.ndarray]:
    """Full arrays of ``n`` rows from every rank's ``(index, {name: rows})`` (first axis = rows; any
    dtype, any trailing shape); the ranks' ``index`` must cover ``0..n-1`` exactly once."""
    allidx = np.concatenate([np.asarray(p[0], np.int64) for p in parts]) if parts else np.zeros(0, np.int64)
    if allidx.size != n or not np.array_equal(np.sort(allidx), np.arange(n)):
        raise RuntimeError(f"the ranks' shards do not cover the {n} samples exactly once")
    out: dict[str, np.ndarray] = {}
    for name in parts[0][1] if parts else ():
        rows = [np.asarray(p[1][name]) for p in parts]
        full = np.empty((n,) + rows[0].shape[1:], dtype=np.result_type(*rows))
        for (idx, _), a in zip(parts, rows):
            full[np.asarray(idx, np.int64)] = a
        out[name] = full
    return out


def sharded_rows(fn: Callable[[np.ndarray], dict[str, np.ndarray]], batches: Sequence[np.ndarray], n: int,
                 ranks: Ranks | None = None) -> dict[str, np.ndarray]:
    """Per-sample arrays of a step, computed in shards: this rank calls ``fn(idx)`` once on the
    positions of its batches (:func:`shard_batches`, concatenated in order; ``fn`` returns
    ``{name: rows}`` for them, and should stream them in ``batch_size`` chunks so the batches are
    those of a one-process run), the outcomes are exchanged (:func:`collective`) and every rank gets
    the full arrays of ``n`` rows (:func:`place_rows`)."""
    mine = shard_batches(batches, ranks)
    idx = np.concatenate(mine) if mine else np.zeros(0, np.int64)
    return place_rows(collective(lambda: (idx, fn(idx)), ranks), n)
