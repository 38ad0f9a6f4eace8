"""The per-sample statistics every bound is computed from (``spec/bounds.md`` §1).

:class:`SampleStats` is the one entry point of the bounds layer: it validates its arrays once,
here at the edge, and everything downstream trusts it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genbound.errors import UserInputError

SOUND_METHODS = frozenset({"ibp", "crown", "exact"})
#: how the samples whose stability was checked were chosen (spec §8): every one, a sound verifier's
#: budget spent cell by cell, or a seeded uniform subsample
SELECTIONS = ("all", "cells", "uniform")


def _as_cells(name: str, a: Any) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise UserInputError(f"{name} must be a 1-D array of cell ids, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise UserInputError(f"{name} must hold integer cell ids (int64), got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _as_loss(name: str, a: Any) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise UserInputError(f"{name} must be a 1-D array of 0-1 losses, got shape {a.shape}")
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise UserInputError(f"{name} must hold 0-1 losses (uint8), got dtype {a.dtype}")
    if a.size:
        lo, hi = a.min(), a.max()
        if lo < 0 or hi > 1 or (np.issubdtype(a.dtype, np.floating) and not np.all((a == 0) | (a == 1))):
            raise UserInputError(
                f"{name} must hold 0-1 losses (1 = misclassified, top-1); found values outside {{0, 1}} "
                f"(min {lo}, max {hi}). Loss in 2x units? Divide by 2; top-1 0-1 loss only."
            )
    return a.astype(np.uint8, copy=False)


def _as_kappas(a: Any) -> np.ndarray:
    a = np.asarray(a)
    if a.size == 0:
        return np.zeros(0)
    if a.ndim > 1:
        raise UserInputError(f"kappas must be a 1-D array of radii, got shape {a.shape}")
    if a.dtype.kind not in "iuf":  # text, bool, complex: refused rather than converted
        raise UserInputError(f"kappas must be real numbers (float radii), got dtype {a.dtype}")
    return a.astype(np.float64).reshape(-1)


def _as_ids(name: str, a: Any, size: int) -> np.ndarray | None:
    """An optional per-sample identifier: ``*_index`` integers >= 0, ``*_path`` text, one per sample."""
    if a is None:
        return None
    a = np.asarray(a)
    if a.ndim != 1 or a.size != size:
        raise UserInputError(f"{name} must be a 1-D array with one entry per sample ({size}), got shape {a.shape}")
    if name.endswith("_index"):
        if a.size and (not np.issubdtype(a.dtype, np.integer) or a.min() < 0):
            raise UserInputError(f"{name} must hold integer positions >= 0, got dtype {a.dtype}")
        return a.astype(np.int64, copy=False)
    if a.size and a.dtype.kind != "U":
        raise UserInputError(f"{name} must hold text (file paths), got dtype {a.dtype}")
    return a.astype(str, copy=False)


def _real(name: str, v: Any) -> float:
    """A real number given as a Python or numpy int/float (never text, bool or complex)."""
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(()).item()
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise UserInputError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    return float(v)


@dataclass(frozen=True, eq=False)
class SampleStats:
    """Per-sample statistics of one model on one partition (``spec/bounds.md`` §1).

    Parameters
    ----------
    train_cell, train_loss:
        Cell id (int64) and 0-1 loss (uint8, 1 = misclassified) of each of the ``n`` training samples.
    train_stable:
        ``bool[n, J]``: sample i's prediction is unchanged in the kappa_j-neighbourhood. May be
        omitted (J = 0): then no cell is ever proven and the stability diagnostics are left out.
    heldout_cell, heldout_loss:
        The same for ``m`` held-out labelled samples (m may be 0).
    kappas:
        ``float[J]`` radii, in pre-normalization [0, 1] pixel units and the norm of ``norm``.
    K, log_K:
        Total number of cells of the partition, empty ones included (for a label-pure partition:
        regions x classes). Give ``K`` or ``log_K = ln K`` (for astronomically large K), or both
        if they agree.
    stability_method, stability_sound:
        How stability was decided. Only ``ibp``, ``crown`` and ``exact`` are sound; a sound flag
        for any other named method is refused. A sound flag without a method is taken as the
        user's declaration and recorded as such.
    label_pure, max_cell_diameter:
        Whether each cell holds one label, and the geometric diameter of every cell region in the
        stability norm, known by construction (``None`` = unknown: no cell is ever proven).
    partition_uses_heldout:
        The held-out set helped build the partition (``heldout`` centroids, a k-means fit split):
        ``theorem_h`` is then a diagnostic.
    partition_depends_on_train:
        The partition depends on the training sample (k-means on S, the model's features,
        train-fitted rescaling): every concentration term is void and the partition-based
        results are diagnostics.
    train_checked:
        ``bool[n]``: which samples' stability flags were computed (``spec/bounds.md`` §8);
        ``train_stable`` must be False where unchecked. ``None`` = every sample was checked.
    selection:
        How the checked samples were chosen: ``"all"``; ``"cells"`` (a sound verifier's budget
        spent cell by cell: unverified samples prove nothing and count as not stable); or
        ``"uniform"`` (a uniform subsample drawn from ``selection_seed`` before any flag was seen:
        the flag-dependent diagnostics carry an exact hypergeometric limit at ``1 - delta_s``, and
        the certified results do not read the flags). ``None``: ``"all"`` when every sample was
        checked.
    selection_seed, delta_s:
        The seed of the selection (recorded), and the diagnostics' own sampling confidence (default
        0.05; not taken out of the certified results' delta).
    train_index, train_path, heldout_index, heldout_path:
        Optional identifiers of each sample, so that a flag maps back to its input: the position
        in the source the user named (int64) and, for files, the path relative to the folder
        (text). Never used by a bound.
    """

    train_cell: np.ndarray
    train_loss: np.ndarray
    kappas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    train_stable: np.ndarray | None = None
    heldout_cell: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    heldout_loss: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    K: int | None = None
    log_K: float | None = None
    model: str = "model"
    stability_method: str = "unknown"
    stability_sound: bool = False
    norm: str | None = None
    label_pure: bool = False
    max_cell_diameter: float | None = None
    partition: dict = field(default_factory=dict)
    partition_uses_heldout: bool = False
    partition_depends_on_train: bool = False
    train_checked: np.ndarray | None = None
    selection: str | None = None
    selection_seed: int | None = None
    delta_s: float = 0.05
    train_index: np.ndarray | None = None
    train_path: np.ndarray | None = None
    heldout_index: np.ndarray | None = None
    heldout_path: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        tc = _as_cells("train_cell", self.train_cell)
        tl = _as_loss("train_loss", self.train_loss)
        n = tc.size
        if n == 0:
            raise UserInputError("train_cell is empty: the bounds need at least one training sample")
        if tl.size != n:
            raise UserInputError(f"train_loss has {tl.size} entries but train_cell has {n}; one per training sample")
        hc = _as_cells("heldout_cell", self.heldout_cell)
        hl = _as_loss("heldout_loss", self.heldout_loss)
        if hl.size != hc.size:
            raise UserInputError(
                f"heldout_loss has {hl.size} entries but heldout_cell has {hc.size}; one per held-out sample"
            )
        kappas = _as_kappas(self.kappas)
        if np.any(~np.isfinite(kappas)) or np.any(kappas <= 0):
            raise UserInputError(f"kappas must be finite and > 0 (radii in [0,1] pixel units), got {kappas.tolist()}")
        if self.norm == "linf" and kappas.size and kappas.max() > 1:
            # an l_inf ball of radius > 1 holds the whole [0,1] cube: these are 0-255 units, and a
            # diameter check (diameter <= kappa) would then prove cells it must not
            raise UserInputError(f"linf kappas must be <= 1 (radii in [0,1] pixel units; in 0-255 units? divide by 255), "
                                 f"got {kappas.tolist()}")
        st = self.train_stable
        if st is None:
            st = np.zeros((n, kappas.size), dtype=bool)
            if kappas.size:
                raise UserInputError("kappas given without train_stable: pass the bool[n, J] stability flags too")
        st = np.asarray(st)
        if st.ndim == 1:
            st = st[:, None]
        if st.ndim != 2 or st.shape[0] != n:
            raise UserInputError(f"train_stable must have shape (n, J) = ({n}, J), got {st.shape}")
        if st.shape[1] != kappas.size:
            raise UserInputError(
                f"train_stable has {st.shape[1]} columns but {kappas.size} kappas were given; one column per kappa"
            )
        if st.dtype != np.bool_:
            if not np.issubdtype(st.dtype, np.integer) or (st.size and (st.min() < 0 or st.max() > 1)):
                raise UserInputError(f"train_stable must be boolean (or 0/1 integers), got dtype {st.dtype}")
            st = st != 0
        if kappas.size > 1 and np.any(np.diff(kappas) < 0):
            order = np.argsort(kappas, kind="stable")
            kappas, st = kappas[order], st[:, order]
        if kappas.size > 1 and np.any(np.diff(kappas) == 0):
            uniq, first = np.unique(kappas, return_index=True)
            for k in uniq:
                same = st[:, kappas == k]
                if np.any(same != same[:, :1]):
                    raise UserInputError(f"kappa {k:g} is given {same.shape[1]} times with different stability flags "
                                         f"({int(np.any(same != same[:, :1], axis=1).sum())} samples disagree); "
                                         "give each kappa once")
            kappas, st = uniq, st[:, first]
        K, log_K = self._resolve_K(self.K, self.log_K)
        if not isinstance(self.partition, dict):
            raise UserInputError(f"partition must be a dict (the partition record), got {type(self.partition).__name__}")
        try:
            json.dumps(self.partition, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"the partition record must be plain JSON (no NaN/inf, no objects): {exc}") from None
        method = str(self.stability_method)
        if self.stability_sound and method == "unknown":
            method = "declared sound (method not given)"
        elif self.stability_sound and method not in SOUND_METHODS:
            raise UserInputError(
                f"stability_sound=True but stability_method={method!r}; only {sorted(SOUND_METHODS)} are sound"
            )
        if self.stability_sound and kappas.size > 1:
            # A proof at a larger radius covers every smaller ball: sound flags never turn from
            # unstable to stable as kappa grows. Empirical flags (noise, PGD) may, and stay accepted.
            bad = st[:, 1:] & ~st[:, :-1]
            if bad.any():
                i, j = np.argwhere(bad)[0]
                raise UserInputError(
                    f"flags declared sound are not monotone in kappa: {int(bad.any(axis=1).sum())} samples are stable at "
                    f"a larger kappa but not at a smaller one (first: sample {i}, stable at {kappas[j + 1]:g} but not "
                    f"at {kappas[j]:g}); a sound verifier cannot give this, so the flags are not sound")
        d = self.max_cell_diameter
        if d is not None:
            d = _real("max_cell_diameter", d)
            if not math.isfinite(d) or d < 0:
                raise UserInputError(f"max_cell_diameter must be finite and >= 0 (or absent when unknown), got {d}")
        checked, selection, seed, delta_s = self._resolve_checked(n, st)
        ids = {name: _as_ids(name, getattr(self, name), size)
               for name, size in (("train_index", n), ("train_path", n), ("heldout_index", hc.size),
                                  ("heldout_path", hc.size))}
        for k, v in dict(
            **ids, train_checked=checked, selection=selection, selection_seed=seed, delta_s=delta_s,
            train_cell=tc, train_loss=tl, heldout_cell=hc, heldout_loss=hl, kappas=kappas,
            train_stable=st, K=K, log_K=log_K, max_cell_diameter=d, stability_method=method,
            stability_sound=bool(self.stability_sound), label_pure=bool(self.label_pure),
        ).items():
            set_(k, v)

    def _resolve_checked(self, n: int, st: np.ndarray) -> tuple[np.ndarray, str, int | None, float]:
        """``train_checked`` (bool[n]), the selection kind, its seed and ``delta_s``, validated."""
        ch = self.train_checked
        if ch is None:
            ch = np.ones(n, dtype=bool)
        ch = np.asarray(ch)
        if ch.shape != (n,):
            raise UserInputError(f"train_checked must have shape (n,) = ({n},), one flag per training sample, "
                                 f"got {ch.shape}")
        if ch.dtype != np.bool_:
            if not np.issubdtype(ch.dtype, np.integer) or (ch.size and (ch.min() < 0 or ch.max() > 1)):
                raise UserInputError(f"train_checked must be boolean (or 0/1 integers), got dtype {ch.dtype}")
            ch = ch != 0
        s = int(np.count_nonzero(ch))
        selection = self.selection
        if selection is None:
            selection = "all"
            if s < n:
                raise UserInputError(f"train_checked marks {n - s} of {n} samples unchecked: say how the checked ones "
                                     "were chosen, selection = 'cells' (sound verifier budget) or 'uniform' (seeded "
                                     "uniform subsample)")
        if not isinstance(selection, str) or selection not in SELECTIONS:
            raise UserInputError(f"selection must be one of {', '.join(SELECTIONS)}; got {selection!r}")
        if selection == "all" and s < n:
            raise UserInputError(f"selection 'all' but train_checked marks {n - s} of {n} samples unchecked; "
                                 "use 'cells' or 'uniform'")
        if selection == "uniform" and s == 0:
            raise UserInputError("selection 'uniform' needs at least one checked sample (train_checked is all False)")
        if st.shape[1] and np.any(st & ~ch[:, None]):
            bad = int(np.count_nonzero(np.any(st, axis=1) & ~ch))
            raise UserInputError(f"train_stable is True for {bad} samples that train_checked marks unchecked; "
                                 "an unchecked sample has no flag (False)")
        seed = self.selection_seed
        if seed is not None:
            if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
                raise UserInputError(f"selection_seed must be an integer >= 0, got {seed!r}")
            seed = int(seed)
        d = _real("delta_s", self.delta_s)
        if not 0.0 < d < 1.0:
            raise UserInputError(f"delta_s must be in (0, 1) (the diagnostics' sampling confidence), got {self.delta_s!r}")
        return ch, selection, seed, d

    @property
    def s(self) -> int:
        """Number of training samples whose stability was checked."""
        return int(np.count_nonzero(self.train_checked))

    @property
    def subsampled(self) -> bool:
        """The flags are a uniform random subsample of fewer than n samples (spec §8 b)."""
        return self.selection == "uniform" and self.s < self.n

    @staticmethod
    def _resolve_K(K: Any, log_K: Any) -> tuple[int | None, float]:
        if K is None and log_K is None:
            raise UserInputError("give K (total number of cells, empty ones included) or log_K = ln K")
        if K is not None:
            if isinstance(K, (bool, np.bool_)) or not isinstance(K, (int, float, np.integer, np.floating)):
                raise UserInputError(f"K must be a positive integer, got {type(K).__name__} {K!r}")
            try:
                K_int = int(K)
            except (ValueError, OverflowError):  # nan, inf
                raise UserInputError(f"K must be a positive integer, got {K!r}") from None
            if K_int != K or K_int < 1:
                raise UserInputError(f"K must be a positive integer, got {K!r}")
            lk = math.log(K_int)
            if log_K is not None and not math.isclose(_real("log_K", log_K), lk, rel_tol=1e-9, abs_tol=1e-9):
                raise UserInputError(f"K={K_int} and log_K={log_K} disagree (ln K = {lk}); give one of them")
            return K_int, lk
        lk = _real("log_K", log_K)
        if not math.isfinite(lk) or lk < 0:
            raise UserInputError(f"log_K must be finite and >= 0 (K >= 1), got {log_K!r}")
        return None, lk

    @property
    def n(self) -> int:
        return int(self.train_cell.size)

    @property
    def m(self) -> int:
        return int(self.heldout_cell.size)

    @property
    def J(self) -> int:
        return int(self.kappas.size)

    def metadata(self) -> dict[str, Any]:
        """The metadata every result records (``spec/bounds.md`` §1), JSON-ready."""
        return {
            "model": self.model,
            "n": self.n,
            "m": self.m,
            "K": self.K if self.K is not None and self.K < 2**63 else None,
            "log_K": self.log_K,
            "kappas": self.kappas.tolist(),
            "norm": self.norm,
            "stability_method": self.stability_method,
            "stability_sound": self.stability_sound,
            "stability_checked": {"selection": self.selection, "s": self.s, "n": self.n,
                                  "seed": self.selection_seed, "delta_s": self.delta_s},
            "partition": {
                **self.partition,
                "label_pure": self.label_pure,
                "max_cell_diameter": self.max_cell_diameter,
                "uses_heldout": self.partition_uses_heldout,
                "depends_on_train": self.partition_depends_on_train,
            },
        }
