"""Per-cell counts: one pass over the per-sample arrays, everything else works on cells.

The whole bound suite is O(n) with a small constant: one ``bincount`` over a combined key
(cell, loss, stability level) when the stability flags are monotone in kappa (the usual case),
a few more otherwise. No sort over the samples unless cell ids are sparse labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genbound.bounds.stats import SampleStats

# Cell ids up to this many above the sample count are counted directly; sparser ids are relabelled.
_DIRECT_SLACK = 1 << 16


@dataclass(frozen=True)
class CellCounts:
    """Counts per cell; arrays are indexed by a compact cell index 0..C-1 (train and held-out alike).

    ``stable_ok[k, j]`` / ``stable_err[k, j]``: correctly / wrongly classified training samples of
    cell k proven (or found) stable at ``kappas[j]``.
    """

    n_k: np.ndarray  # int64[C] training samples per cell
    err_k: np.ndarray  # int64[C] misclassified training samples per cell
    stable_ok: np.ndarray  # int64[C, J]
    stable_err: np.ndarray  # int64[C, J]
    m_k: np.ndarray  # int64[C] held-out samples per cell
    herr_k: np.ndarray  # int64[C] misclassified held-out samples per cell
    monotone: bool  # stability flags non-increasing in kappa for every sample
    #: uniform subsample (spec §8 b) only: checked training samples per cell, and the misclassified
    #: ones among them; ``None`` when the flags' population is the whole training set
    checked_k: np.ndarray | None = None
    checked_err_k: np.ndarray | None = None

    @property
    def occupied(self) -> np.ndarray:
        """Boolean mask of T = {k : n_k >= 1}."""
        return self.n_k > 0

    def stability_rates(self) -> tuple[np.ndarray, np.ndarray]:
        """Per kappa: the unstable fraction of training samples, and the robust training error
        (misclassified or correctly classified but unstable, over n)."""
        n = int(self.n_k.sum())
        ok = self.stable_ok.sum(axis=0)
        unstable = (n - ok - self.stable_err.sum(axis=0)) / n
        robust_error = (n - ok) / n
        return unstable, robust_error


def _compact_ids(train: np.ndarray, heldout: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    both = (train, heldout) if heldout.size else (train,)
    lo = min(int(a.min()) for a in both)
    hi = max(int(a.max()) for a in both)
    if lo >= 0 and hi < train.size + heldout.size + _DIRECT_SLACK:
        return train, heldout, hi + 1
    uniq, inv = np.unique(np.concatenate(both), return_inverse=True)
    return inv[: train.size], inv[train.size :], int(uniq.size)


def _stability_levels(stable: np.ndarray) -> tuple[np.ndarray, bool]:
    """Number of leading stable kappas per sample, and whether every row is monotone.

    A monotone row is ``[1, .., 1, 0, .., 0]`` over ascending kappas; it is then stable at
    ``kappas[j]`` iff its level exceeds j. For J <= 8 each row is read as one little-endian
    integer of 0x01 bytes (one word per sample instead of J strided column reads).
    """
    n, J = stable.shape
    if J == 0:
        return np.zeros(n, dtype=np.uint8), True
    if J > 8:
        level = stable.sum(axis=1, dtype=np.int64)
        return level, not bool(np.any(stable[:, 1:] > stable[:, :-1]))
    width = next(w for w in (1, 2, 4, 8) if w >= J)
    if width == J and stable.flags.c_contiguous:
        buf = stable.view(np.uint8)
    else:
        buf = np.zeros((n, width), dtype=np.uint8)
        buf[:, :J] = stable
    words = buf.view(f"<u{width}").reshape(n)
    level = np.bitwise_count(words)
    # Byte i holds kappa_i's flag (0/1). A row is monotone iff no byte is 0 while the next is 1.
    monotone = not np.any((words >> np.array(8, dtype=words.dtype)) & ~words)
    return level, monotone


def count_cells(stats: SampleStats) -> CellCounts:
    """Aggregate ``stats`` into per-cell counts (one pass over the samples in the monotone case)."""
    tc, hc, C = _compact_ids(stats.train_cell, stats.heldout_cell)
    loss = stats.train_loss
    J = stats.J
    stable = stats.train_stable
    level, monotone = _stability_levels(stable)
    if monotone:
        width = J + 1
        small = loss * np.uint8(width) if width * 2 < 256 else loss.astype(np.int64) * width
        small += level.astype(small.dtype, copy=False)
        key = tc * (2 * width)
        key += small
        hist = np.bincount(key, minlength=C * 2 * width).reshape(C, 2, width)
        # stable at kappa_j  <=>  level > j: count = (all levels) - (levels <= j).
        cs = np.cumsum(hist, axis=2)
        n_loss = cs[:, :, J]
        n_k, err_k = n_loss[:, 0] + n_loss[:, 1], n_loss[:, 1]
        stable_ok = n_loss[:, 0, None] - cs[:, 0, :J]
        stable_err = n_loss[:, 1, None] - cs[:, 1, :J]
    else:
        key = tc * 2 + loss
        base = np.bincount(key, minlength=2 * C).reshape(C, 2)
        n_k, err_k = base.sum(axis=1), base[:, 1]
        stable_ok = np.empty((C, J), dtype=np.int64)
        stable_err = np.empty((C, J), dtype=np.int64)
        for j in range(J):
            h = np.bincount(key[stable[:, j]], minlength=2 * C).reshape(C, 2)
            stable_ok[:, j], stable_err[:, j] = h[:, 0], h[:, 1]
    if stats.m:
        hb = np.bincount(hc * 2 + stats.heldout_loss, minlength=2 * C).reshape(C, 2)
        m_k, herr_k = hb.sum(axis=1), hb[:, 1]
    else:
        m_k = herr_k = np.zeros(C, dtype=np.int64)
    checked_k = checked_err_k = None
    if stats.subsampled:
        ch = stats.train_checked
        cb = np.bincount(tc[ch] * 2 + loss[ch], minlength=2 * C).reshape(C, 2)
        checked_k, checked_err_k = cb.sum(axis=1), cb[:, 1]
    return CellCounts(n_k=n_k, err_k=err_k, stable_ok=stable_ok, stable_err=stable_err, m_k=m_k, herr_k=herr_k,
                      monotone=monotone, checked_k=checked_k, checked_err_k=checked_err_k)
