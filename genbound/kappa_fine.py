"""Every bound on kappa-fine, label-pure grids rebuilt per kappa (Corollary N1; spec §3, §5).

For each kappa_j of a grid declared in advance, the input range is cut into an l_inf grid of side
kappa_j (:func:`genbound.partition.grid.grid_partition`, cells = label x box, diameter kappa_j by
construction), so each kappa is **its own partition** (its own K). Every result of the spec is
computed on partition j with the stability flags at kappa_j, at ``delta_j = delta / J``
(:func:`genbound.bounds.grids.split_delta`): all J partitions' certified values then hold at once
with probability >= 1 - delta, and the best over the grid is certified at 1 - delta.

:func:`grid_bounds` computes every result from grids whose cells are already assigned (the
pipeline, :func:`genbound.pipeline.evaluate` with ``partition="grid"``, streams its data sources
through :class:`~genbound.partition.grid.GridPartition`); :func:`kappa_fine_bounds` builds the
grids from in-memory arrays first (models outside torch, e.g. a linear rule). No torch here: the
caller supplies losses and stability flags (sound ones for proofs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from genbound.bounds import BoundReport, SampleStats, compute_bounds
from genbound.bounds.grids import best_over_grid, split_delta
from genbound.bounds.sanity import kappa_zero_check
from genbound.partition.grid import GridPartition, grid_partition

__all__ = ["KappaFineResult", "grid_bounds", "kappa_fine_bounds"]


@dataclass
class KappaFineResult:
    """Reports (one per kappa partition, each at delta/J), their statistics and the delta account."""

    report: BoundReport  # merged over the J partitions
    reports: list[BoundReport]  # one per kappa partition, in the order of the kappa grid
    stats: list[SampleStats]
    best: list[dict[str, Any]]
    delta: float
    delta_per_partition: float
    partitions: list[dict[str, Any]] = field(default_factory=list)
    sanity: list[dict[str, Any]] = field(default_factory=list)

    def at(self, kappa: float) -> BoundReport:
        """The report of the partition whose grid side is ``kappa``."""
        for p, rep in zip(self.partitions, self.reports):
            if p["side"] == float(kappa):
                return rep
        raise KeyError(f"no partition of side {kappa}")

    @property
    def delta_accounting(self) -> dict[str, Any]:
        J = len(self.partitions)
        return {"delta": self.delta, "partitions": J, "delta_per_partition": self.delta_per_partition,
                "rule": (f"one kappa-fine grid per kappa ({J} partitions, declared before any bound was computed); "
                         f"each partition's results at delta/{J}; union bound: every certified value and the best "
                         f"over the grid hold at 1 - {self.delta:g} (spec §5)"),
                "within_partition": "theorem_n: delta_j/3 to each of N1, N2, N3; theorem_h: delta_j/2 training counts, "
                                    "delta_j/2 held-out cells"}


def kappa_fine_bounds(*, model: str, train_x: np.ndarray, train_y: np.ndarray, train_loss: np.ndarray,
                      stable: np.ndarray, kappas: Sequence[float], num_classes: int, delta: float,
                      heldout_x: np.ndarray | None = None, heldout_y: np.ndarray | None = None,
                      heldout_loss: np.ndarray | None = None, stability_method: str = "crown",
                      stability_sound: bool = True, range: tuple = (0.0, 1.0),  # noqa: A002
                      partition_depends_on_train: bool = False, partition_note: dict | None = None,
                      **partial: Any) -> KappaFineResult:
    """Every result of the spec on one kappa-fine grid per kappa.

    Parameters
    ----------
    train_x, train_y, train_loss:
        Inputs ``[n, d]`` in ``range`` (pre-normalization units), the labels the model was trained
        on and its 0-1 losses against them.
    stable:
        ``bool[n, J]`` stability flags of the training samples at ``kappas`` (l_inf balls in the
        same units, intersected with the input domain).
    kappas:
        The kappa grid (J values), each the side of its own grid and the radius of its proof.
    heldout_x, heldout_y, heldout_loss:
        Held-out samples (optional).
    stability_method, stability_sound:
        Recorded; only sound methods (ibp, crown, exact) prove cells.
    partition_depends_on_train:
        The input range was fitted on the training sample: every partition result is a diagnostic.
    partial:
        ``train_checked``, ``selection``, ``selection_seed``, ``delta_s`` of a partial stability
        check (spec §8), passed to :func:`grid_bounds`.
    """
    kappas = [float(k) for k in kappas]
    grids = []
    for kap in kappas:
        part = grid_partition(train_x, train_y, heldout_x, heldout_y, kappa=kap, num_classes=num_classes, range=range)
        grids.append((part, part.train_cell, part.heldout_cell))
    return grid_bounds(model=model, grids=grids, train_loss=train_loss, stable=stable, delta=delta,
                       heldout_loss=heldout_loss, stability_method=stability_method, stability_sound=stability_sound,
                       partition_depends_on_train=partition_depends_on_train, partition_note=partition_note, **partial)


def grid_bounds(*, model: str, grids: Sequence[tuple[GridPartition, np.ndarray, np.ndarray]], train_loss: np.ndarray,
                stable: np.ndarray, delta: float, heldout_loss: np.ndarray | None = None, stability_method: str = "crown",
                stability_sound: bool = True, partition_depends_on_train: bool = False,
                partition_note: dict | None = None, train_checked: np.ndarray | None = None,
                selection: str | None = None, selection_seed: int | None = None,
                delta_s: float = 0.05) -> KappaFineResult:
    """Every result of the spec on J assigned grids ``(grid, train cells, held-out cells)``, grid j
    of side kappa_j with the flags ``stable[:, j]``, each at ``delta / J`` (module docstring).
    ``train_checked``, ``selection``, ``selection_seed``, ``delta_s``: a partial stability check
    (spec §8), as :class:`~genbound.bounds.SampleStats` takes them."""
    J = len(grids)
    dj = split_delta(delta, J)
    stable = np.asarray(stable, dtype=bool).reshape(len(train_loss), J)
    reports, stats_all, parts = [], [], []
    for j, (part, train_cell, heldout_cell) in enumerate(grids):
        kap = part.kappa
        rec = {**part.record(), **(partition_note or {}), "delta": dj}
        s = SampleStats(
            train_cell=train_cell, train_loss=train_loss, kappas=[kap], train_stable=stable[:, j:j + 1],
            heldout_cell=heldout_cell if heldout_loss is not None else np.zeros(0, np.int64),
            heldout_loss=heldout_loss if heldout_loss is not None else np.zeros(0, np.uint8),
            K=part.K, log_K=None if part.K is not None else part.log_K, model=model,
            stability_method=stability_method, stability_sound=stability_sound, norm="linf", label_pure=True,
            max_cell_diameter=part.diameter("linf"),
            partition={k: v for k, v in rec.items() if k not in ("label_pure", "max_cell_diameter")},
            partition_depends_on_train=partition_depends_on_train or part.depends_on_training_set,
            partition_uses_heldout=part.uses_heldout, train_checked=train_checked, selection=selection,
            selection_seed=selection_seed, delta_s=delta_s,
        )
        stats_all.append(s)
        reports.append(compute_bounds(s, dj))
        parts.append(rec)
    report = BoundReport.merge(reports)
    best = best_over_grid(reports, delta, J, what="kappa-fine grids (one per kappa)")
    return KappaFineResult(report, reports, stats_all, best, float(delta), dj, parts, kappa_zero_check(report))
