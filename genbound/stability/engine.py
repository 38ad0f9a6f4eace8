"""The stability engine protocol: batches in, per-batch results out, merged into one result.

Every stability method (``noise``, ``pgd``, ``ibp``, ``crown``, ``exact``; the registry is
:mod:`genbound.stability.registry`) is a :class:`StabilityEngine`:

- ``start(model, kappas, device)`` prepares a run (compiles a verifier, builds a pre-screen);
- ``update(x, index)`` processes one batch ``x`` whose samples sit at positions ``index`` of the
  data source and returns a :class:`BatchResult` (flags per kappa, clean predictions, additive
  counters, optional per-sample arrays) that depends on that batch only;
- ``evidence(counts, n)`` describes the run (method, ``sound``, every parameter) with the merged
  counters.

Like a torchmetrics metric, state merges: :func:`merge_batches` concatenates batch results in
source order and sums their counters, so a shard of the batches, a subsample of the indices or a
resumed run simply contributes its batches (:func:`run_engine` takes ``indices``). Engines seed
their randomness by source index (``derive_seed(seed, i, ...)``), never by batch, so the flags of
a sample do not depend on which batch or shard it was processed in.

Counters merge by summation (numbers, and lists element by element); a string counter (e.g.
``unverified_reason``) keeps the first one reported. A batch that reports an
``unverified_reason`` voids every flag of the run: the model is not the one the verifier compiled.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from genbound.data.loader import decode
from genbound.data.source import DEFAULT_BATCH_SIZE, DataSource
from genbound.distributed import Ranks, collective, current, from_main, shard_batches, split_batches
from genbound.torch_utils import model_mode, progress_counter, refuse_train_mode, resolve_device

if TYPE_CHECKING:
    from genbound.stability.batch_store import BatchStore

__all__ = ["BatchResult", "StabilityEngine", "StabilityResult", "merge_batches", "merge_counts", "run_engine"]

UNITS = "[0,1] pixel units, before normalization"


@dataclass
class StabilityResult:
    """Output of a stability engine over a whole source (or a shard of it).

    ``stable``: bool[n, J], sample i showed no flip (empirical engines) or was proven stable
    (sound engines) at kappa_j (spec §1 ``train_stable``); ``kappas``: float64[J], ascending;
    ``pred``: int64[n] clean predictions; ``index``: int64[n] positions in the source;
    ``evidence``: method, ``sound``, every parameter, seeds and counts; ``arrays``: extra
    per-sample arrays of the engine (e.g. ``margin_lb`` of the verifier).
    """

    stable: np.ndarray
    kappas: np.ndarray
    pred: np.ndarray
    evidence: dict[str, Any] = field(default_factory=dict)
    index: np.ndarray | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def sound(self) -> bool:
        return bool(self.evidence.get("sound", False))

    @property
    def unstable_fraction(self) -> np.ndarray:
        """float64[J]: fraction of samples with a flip found (or not proven stable) at each kappa."""
        return 1.0 - self.stable.mean(axis=0) if self.stable.size else np.zeros(self.kappas.size)


@dataclass
class BatchResult:
    """One batch's contribution: rows ``index`` of the flags, predictions and arrays; counters."""

    index: np.ndarray  # int64[b]
    stable: np.ndarray  # bool[b, J]
    pred: np.ndarray  # int64[b]
    counts: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class StabilityEngine(Protocol):
    """What every stability method implements (module docstring)."""

    name: str
    sound: bool

    def start(self, model: nn.Module, kappas: np.ndarray, device: torch.device) -> None: ...

    def update(self, x: torch.Tensor, index: np.ndarray) -> BatchResult: ...

    def evidence(self, counts: dict[str, Any], n: int) -> dict[str, Any]: ...


def merge_counts(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum counters (numbers; lists element by element); strings and None: the first non-None."""
    out: dict[str, Any] = {}
    for c in parts:
        for k, v in c.items():
            if k not in out or out[k] is None:
                out[k] = list(v) if isinstance(v, list) else v
            elif isinstance(v, str) or v is None:
                continue
            elif isinstance(v, list):
                out[k] = [a + b for a, b in zip(out[k], v)]
            else:
                out[k] = out[k] + v
    return out


def merge_batches(batches: Sequence[BatchResult], J: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, dict]:
    """Concatenate batch results in source order: ``(index, stable, pred, counts, arrays)``."""
    if batches:
        index = np.concatenate([b.index for b in batches]).astype(np.int64)
        order = np.argsort(index, kind="stable")
        stable = np.concatenate([b.stable for b in batches])[order]
        pred = np.concatenate([b.pred for b in batches]).astype(np.int64)[order]
        keys = batches[0].arrays.keys()
        arrays = {k: np.concatenate([b.arrays[k] for b in batches])[order] for k in keys}
        index = index[order]
    else:
        index, stable, pred, arrays = np.zeros(0, np.int64), np.zeros((0, J), bool), np.zeros(0, np.int64), {}
    counts = merge_counts(b.counts for b in batches)
    if counts.get("unverified_reason"):
        stable = np.zeros_like(stable)
    return index, stable, pred, counts, arrays


def run_engine(engine: StabilityEngine, model: nn.Module, source: DataSource, kappas: np.ndarray, *,
               batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = None,
               indices: np.ndarray | None = None, progress_bar: bool = True,
               desc: str | None = None, store: "BatchStore | None" = None,
               ranks: Ranks | None = None, workers: int | str = 0) -> StabilityResult:
    """Run ``engine`` over ``source`` (or the positions ``indices`` of it: a shard or a subsample)
    in batches of ``batch_size`` and merge the batch results (module docstring).

    ``store`` (:class:`~genbound.stability.batch_store.BatchStore`): each finished batch is saved
    there as it completes, and batches found there are not computed again (resume). ``ranks``
    (:class:`~genbound.distributed.Ranks` of an initialized process group, every rank calling):
    the batches still to do are shared out between the ranks (:func:`genbound.distributed.shard_batches`)
    and every rank returns the merged result of all of them, equal to a one-process run.
    ``workers``: processes decoding the next batches while the engine works
    (:func:`genbound.data.loader.decode`; ``"auto"``: none for in-memory data).
    """
    r = ranks or Ranks()
    dev = resolve_device(device, model)
    k = np.asarray(kappas, dtype=np.float64)
    t0 = time.perf_counter()
    if engine.sound:  # a proof about a train-mode model would be about another function: refuse, never switch
        refuse_train_mode(model, "certifying stability")
    batches = split_batches(len(source) if indices is None else indices, batch_size)
    found: list[BatchResult] = []
    if store is not None and r.main:  # rank 0 reads the finished batches; they join the merge through its outcome
        found = [b for b in (store.load(ix) for ix in batches) if b is not None]
    done = from_main(lambda: {int(b.index[0]) for b in found}, r) if store is not None else set()
    todo = [ix for ix in batches if int(ix[0]) not in done]
    mine = shard_batches(todo, r)
    show = progress_bar and r.main
    # rank 0's bar counts every rank's finished batches (the files they save) when there is a store;
    # without one, its own share (the shares are balanced: its ETA is the step's)
    watch = [store.path(ix) for ix in todo] if show and r.sharded and store is not None else None
    what = desc or f"{engine.name} stability {source.name}"
    if r.sharded:
        what += f" ({r.world} ranks)" if watch else f" (rank 0's share of {r.world})"
    if done and show:
        what += f", {len(done)} batches resumed"

    def work() -> list[BatchResult]:
        out = []
        bar = progress_counter(len(todo) if watch else len(mine), enabled=show, desc=what, unit="batch")
        seen = time.monotonic()
        with model_mode(model, grad=False, what=f"the {engine.name} stability check"):
            engine.start(model, k, dev)
            for i, (ix, x, _) in enumerate(decode(source, mine, workers=workers, pin_memory=dev.type == "cuda")):
                b = engine.update(x.to(dev, non_blocking=dev.type == "cuda"), ix)
                if store is not None:
                    store.save(b)
                _fail_after_batches_for_tests()
                out.append(b)
                if watch is None:
                    bar.update(1)
                elif time.monotonic() - seen > 1.0 or i == len(mine) - 1:  # a directory poll at most once a second
                    bar.n = sum(map(os.path.exists, watch))
                    bar.refresh()
                    seen = time.monotonic()
        bar.close()
        return out + found

    parts = collective(work, r)
    index, stable, pred, counts, arrays = merge_batches([b for p in parts for b in p], k.size)
    evidence = engine.evidence(counts, int(index.size))
    evidence["wall_s"] = round(time.perf_counter() - t0, 3)
    evidence["device"] = str(dev)
    return StabilityResult(stable=stable, kappas=k, pred=pred, evidence=evidence, index=index, arrays=arrays)


_FAIL_ENV = "GENBOUND_TEST_FAIL_AFTER_BATCHES"
_batches_done = 0


def _fail_after_batches_for_tests() -> None:
    """Tests only: ``GENBOUND_TEST_FAIL_AFTER_BATCHES=N[:RANK]`` kills this process (``os._exit(9)``, no
    clean-up, like a killed rank) after its N-th batch (on rank RANK only, when given)."""
    global _batches_done
    spec = os.environ.get(_FAIL_ENV)
    if not spec:
        return
    _batches_done += 1
    n, _, rank = spec.partition(":")
    if _batches_done >= int(n) and (not rank or int(rank) == current().rank):
        os._exit(9)
