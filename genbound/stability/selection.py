"""Which training samples' stability is checked when checking all of them costs too much (spec §8).

Two selections, never mixed:

* :func:`uniform_subsample` -- empirical methods (``[stability] sample = N`` or a fraction): ``s``
  of the ``n`` samples drawn without replacement from a seed, fixed before any flag is seen. The
  bounds layer turns each flag-dependent count into its exact hypergeometric upper limit.
* :func:`run_budget` -- sound methods (``[stability] budget = N``): at most N verifier calls spent
  cell by cell. Cells are tried largest first (ties: smaller cell id first), the samples of a cell
  in a seeded order, in rounds: round r tries the r-th sample of every cell still open, in the cell
  order, until the budget is spent. A cell closes at its first sample proven stable at the kappa
  ``close_at`` (sound flags are monotone: then at every smaller kappa too) or when its samples run
  out. Any data-dependent choice of which samples to verify is valid for the certified results
  (their events concern the counts only), so no confidence is spent; unverified samples prove
  nothing. :class:`BudgetPlan` is the order (pure numpy), :func:`run_budget` spends it on an engine.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from genbound.data.source import DataSource
from genbound.stability.engine import StabilityEngine, StabilityResult, merge_batches
from genbound.torch_utils import model_mode, refuse_train_mode, resolve_device

__all__ = ["uniform_subsample", "subsample_size", "BudgetPlan", "spend_budget", "run_budget"]

_TAG_UNIFORM = 0x5AB5  # separates the selection's random stream from the engines' (same user seed)
_TAG_BUDGET = 0xB0D6


def subsample_size(n: int, sample: int | float) -> int:
    """``s`` for ``sample = N`` (an int: min(N, n)) or a fraction in (0, 1] (a float: ceil(f n))."""
    if isinstance(sample, float):
        return max(1, min(n, math.ceil(sample * n)))
    return max(1, min(n, int(sample)))


def uniform_subsample(n: int, sample: int | float, seed: int) -> np.ndarray:
    """Sorted positions of ``s = subsample_size(n, sample)`` of ``n`` samples, uniform without
    replacement, from ``seed`` alone (never from any flag)."""
    s = subsample_size(n, sample)
    rng = np.random.default_rng([int(seed), _TAG_UNIFORM])
    return np.sort(rng.choice(n, size=s, replace=False)).astype(np.int64)


class BudgetPlan:
    """The order in which a sound verifier's budget is spent (module docstring).

    ``cells``: int64[n] cell ids of the partition that orders the budget. ``close_at``: index of
    the kappa whose proof closes a cell. Call :meth:`next_round` for the positions to verify next,
    then :meth:`record` with their flags.
    """

    def __init__(self, cells: np.ndarray, seed: int, budget: int, close_at: int = 0) -> None:
        cells = np.asarray(cells, dtype=np.int64).reshape(-1)
        n = cells.size
        self.n, self.budget, self.close_at, self.spent = n, int(budget), int(close_at), 0
        uniq, inv, sizes = np.unique(cells, return_inverse=True, return_counts=True)
        by_rank = np.lexsort((uniq, -sizes))  # largest cell first, then smaller id
        rank_of = np.empty(uniq.size, dtype=np.int64)
        rank_of[by_rank] = np.arange(uniq.size)
        rank = rank_of[inv]
        perm = np.random.default_rng([int(seed), _TAG_BUDGET]).permutation(n)
        grouped = perm[np.argsort(rank[perm], kind="stable")]  # by cell rank, seeded order within a cell
        sizes_by_rank = sizes[by_rank]
        starts = np.concatenate([[0], np.cumsum(sizes_by_rank)[:-1]])
        pos = np.arange(n) - np.repeat(starts, sizes_by_rank)  # position of each sample within its cell
        order = np.lexsort((rank[grouped], pos))  # round-robin: position in the cell, then cell rank
        self._seq = grouped[order]
        self._seq_rank = rank[self._seq]
        self._round_ends = np.flatnonzero(np.diff(pos[order]) != 0) + 1
        self._round_ends = np.append(self._round_ends, n)
        self._rank_by_pos = np.empty(n, dtype=np.int64)
        self._rank_by_pos[self._seq] = self._seq_rank
        self._round = 0
        self.open = np.ones(uniq.size, dtype=bool)  # by cell rank
        self.cell_ids = uniq[by_rank]  # the cell id of each rank

    @property
    def done(self) -> bool:
        return self.spent >= self.budget or self._round >= self._round_ends.size or not self.open.any()

    def next_round(self) -> np.ndarray:
        """Positions to verify next: one sample of each open cell, in cell order, within the budget."""
        while not self.done:
            lo = 0 if self._round == 0 else self._round_ends[self._round - 1]
            hi = self._round_ends[self._round]
            self._round += 1
            idx = self._seq[lo:hi][self.open[self._seq_rank[lo:hi]]]
            idx = idx[: self.budget - self.spent]
            if idx.size:
                self.spent += idx.size
                return idx
        return np.zeros(0, dtype=np.int64)

    def record(self, index: np.ndarray, stable: np.ndarray) -> None:
        """Close the cells of ``index`` whose sample is proven stable at ``kappas[close_at]``; a cell
        whose samples are all tried stays open but has nothing left (its rounds are empty)."""
        proven = np.asarray(stable, dtype=bool)[:, self.close_at]
        self.open[self._rank_by_pos[np.asarray(index, dtype=np.int64)[proven]]] = False


def spend_budget(plan: BudgetPlan, verify: Callable[[np.ndarray], np.ndarray],
                 J: int) -> tuple[np.ndarray, np.ndarray]:
    """Run ``plan`` with ``verify(positions) -> bool[b, J]``; returns ``(checked bool[n], stable bool[n, J])``
    (stable is False wherever unchecked)."""
    checked = np.zeros(plan.n, dtype=bool)
    stable = np.zeros((plan.n, J), dtype=bool)
    while True:
        idx = plan.next_round()
        if idx.size == 0:
            break
        flags = np.asarray(verify(idx), dtype=bool).reshape(idx.size, J)
        checked[idx] = True
        stable[idx] = flags
        plan.record(idx, flags)
    return checked, stable


def run_budget(engine: StabilityEngine, model: nn.Module, source: DataSource, kappas: np.ndarray, *,
               cells: np.ndarray, budget: int, seed: int, close_at: int = 0, batch_size: int = 256,
               device: str | torch.device | None = None, progress_bar: bool = True) -> StabilityResult:
    """Spend at most ``budget`` calls of a (sound) engine cell by cell (module docstring).

    The engine is started once; each round's positions are verified in batches of ``batch_size``.
    Returns the flags of the verified positions (``index``), merged as :func:`run_engine` does, with
    the plan in ``evidence["selection"]``.
    """
    dev = resolve_device(device, model)  # the model runs where it is (the one device policy)
    k = np.asarray(kappas, dtype=np.float64)
    t0 = time.perf_counter()
    if engine.sound:
        refuse_train_mode(model, "certifying stability")
    plan = BudgetPlan(cells, seed, budget, close_at)
    out = []
    with model_mode(model, grad=False, what=f"the {engine.name} stability check"):
        engine.start(model, k, dev)
        with tqdm(total=min(plan.budget, plan.n), disable=not progress_bar, unit="sample",
                  desc=f"{engine.name} stability {source.name} (budget, cell by cell)", leave=False,
                  dynamic_ncols=True) as pbar:
            def verify(idx: np.ndarray) -> np.ndarray:
                rows = []
                for s in range(0, idx.size, batch_size):
                    c = idx[s:s + batch_size]
                    x, _ = source.get(c)
                    r = engine.update(x.to(dev), c)
                    out.append(r)
                    rows.append(r.stable)
                    pbar.update(c.size)
                return np.concatenate(rows)
            spend_budget(plan, verify, k.size)
    index, stable, pred, counts, arrays = merge_batches(out, k.size)
    evidence = engine.evidence(counts, int(index.size))
    evidence["wall_s"] = round(time.perf_counter() - t0, 3)
    evidence["device"] = str(dev)
    evidence["selection"] = plan_record(plan, seed)
    return StabilityResult(stable=stable, kappas=k, pred=pred, evidence=evidence, index=index, arrays=arrays)


def plan_record(plan: BudgetPlan, seed: int) -> dict[str, Any]:
    """What the budget did: spent, cells tried and closed (for the run record)."""
    return {"kind": "cells", "budget": plan.budget, "spent": plan.spent, "seed": int(seed),
            "close_at_kappa_index": plan.close_at, "occupied_cells": int(plan.open.size),
            "cells_closed_by_a_proof": int((~plan.open).sum()),
            "order": "largest occupied cell first (ties: smaller id); round r tries the r-th sample (seeded order) of "
                     "every open cell; a cell closes at its first proof at kappas[close_at]"}
