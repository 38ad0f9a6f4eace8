"""k-means partitions: Voronoi cells of K cluster centres fitted by Lloyd's algorithm (k-means++ seeding).

The space: raw [0, 1] pixels (``features=None``) or the flattened output of a named layer of the
model (``features="layer4"``, :class:`genbound.models.features.LayerFeatures`). The fit data
(``fit``):

- ``"heldout-split"``: a seeded split of the held-out set, a fraction ``fit_fraction`` of it,
  disjoint from the held-out samples that the statistics use (those fitted on are left out of
  them, :meth:`KMeansPartition.heldout_statistics_mask`). In pixel space the partition is then a
  function of data disjoint from the training sample S, so every partition result keeps its kind
  (spec/bounds.md §2).
- ``"train"``: the training set itself. The partition depends on S, the counts are no longer
  multinomial and every partition result is a diagnostic (``depends_on_training_set``).

Features of the model depend on S through the training of the model: a feature-space partition
is also ``depends_on_training_set = True`` whatever it was fitted on. ``holdout_cp`` ignores the
partition and stays certified.

The algorithm (genbound's choices; the seed paper's recipe is not public, ``docs/partitions.md``):

1. **Seeding**: greedy k-means++ (Arthur & Vassilvitskii 2007; greedy variant with
   ``2 + floor(ln K)`` candidates per step as in scikit-learn) on a seeded uniform subsample of at
   most ``seeding_sample`` fit points held in memory (all of them when the fit set is smaller).
   Candidates are drawn by inverse-CDF sampling of the squared distances with a seeded CPU
   generator; distances in float64, every candidate of a step in one matrix product.
2. **Lloyd iterations** (at most ``iterations``) streamed over the whole fit set in batches: each
   batch is assigned to its nearest centre and per-cluster sums and counts are accumulated in
   float64; the new centre of a cluster is its mean; an empty cluster keeps its centre. Each
   iteration records the objective ``sum_i min_k ||x_i - c_k||^2`` of the centres it started
   from (non-increasing, up to rounding); the loop stops early when no assignment changes.
3. **Assignment** of any sample: the nearest centre in squared Euclidean distance, computed in
   float64 as ``||c||^2 - 2 x.c`` and, where the two best scores are within the rounding bound of
   that expansion, recomputed directly as ``sum (x - c)^2``; ties go to the lowest index.

``label_pure=True`` splits every cluster by label (``cell = cluster * num_classes + label``) as for
Voronoi partitions. ``max_cell_diameter`` is unknown (``None``): no cell is ever proven.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from genbound.data.source import DEFAULT_BATCH_SIZE, DataSource
from genbound.errors import UserInputError
from genbound.names import KMEANS_BACKENDS, KMEANS_FITS
from genbound.partition.assign import label_pure_cells
from genbound.torch_utils import array_hash, free_memory, derive_seed, progress, resolve_device

__all__ = ["KMeansSpec", "KMeansPartition", "build_kmeans", "check_kmeans", "kmeans_plus_plus", "lloyd",
           "nearest_exact"]

Featurize = Callable[[torch.Tensor], torch.Tensor]

_EPS64 = float(np.finfo(np.float64).eps)
_SCORE_ELEMENTS = 1 << 22  # rows x centres per score block (32 MiB in float64)


@dataclass(frozen=True)
class KMeansSpec:
    """A k-means partition, fixed before it is fitted: ``regions`` clusters (``K`` = regions, x
    num_classes if ``label_pure``), what it is fitted on and in which space, and its seed."""

    regions: int
    seed: int = 0
    fit: str = "heldout-split"
    fit_fraction: float = 0.5
    features: str | None = None
    iterations: int = 20
    seeding_sample: int = 10_000
    backend: str = "torch"
    label_pure: bool = False
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.regions, bool) or int(self.regions) < 1:
            raise UserInputError(f"number of k-means clusters (K) must be >= 1; got {self.regions}")
        if self.fit not in KMEANS_FITS:
            raise UserInputError(f"kmeans_fit must be one of {', '.join(KMEANS_FITS)}; got {self.fit!r}")
        if not (isinstance(self.fit_fraction, (int, float)) and not isinstance(self.fit_fraction, bool)
                and 0 < self.fit_fraction < 1):
            raise UserInputError("kmeans_fit_fraction must be a number strictly between 0 and 1; "
                                 f"got {self.fit_fraction!r}")
        if self.features is not None and (not isinstance(self.features, str) or not self.features):
            raise UserInputError("kmeans_features must name a layer of the model (e.g. \"layer4\"); "
                                 f"got {self.features!r}")
        if isinstance(self.iterations, bool) or int(self.iterations) < 0:
            raise UserInputError(f"kmeans_iterations must be an integer >= 0; got {self.iterations}")
        if isinstance(self.seeding_sample, bool) or int(self.seeding_sample) < 1:
            raise UserInputError(f"kmeans_seeding_sample must be an integer >= 1; got {self.seeding_sample}")
        if self.backend not in KMEANS_BACKENDS:
            raise UserInputError(f"kmeans_backend must be one of {', '.join(KMEANS_BACKENDS)}; got {self.backend!r}")
        if self.label_pure and (self.num_classes is None or self.num_classes < 2):
            raise UserInputError("a label-pure partition needs num_classes >= 2")

    @property
    def K(self) -> int:
        return int(self.regions) * (int(self.num_classes) if self.label_pure else 1)

    @property
    def depends_on_training_set(self) -> bool:
        return self.fit == "train" or self.features is not None

    @property
    def uses_heldout(self) -> bool:
        return self.fit == "heldout-split"

    def dependence(self) -> str | None:
        """Why the partition depends on the training sample (``None`` when it does not)."""
        why = []
        if self.fit == "train":
            why.append("fitted on the training set")
        if self.features is not None:
            why.append(f"fitted on features of the trained model (layer {self.features!r})")
        return " and ".join(why) or None


# --------------------------------------------------------------------------------- nearest centre
def _rows_per_block(K: int, sample_block: int) -> int:
    return max(1, min(int(sample_block), _SCORE_ELEMENTS // max(int(K), 1)))


@torch.no_grad()
def nearest_exact(x: torch.Tensor, centroids: torch.Tensor, c2: torch.Tensor | None = None, *,
                  sample_block: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of each row of ``x`` [n, p] among ``centroids`` [K, p], and its squared distance.

    Scores ``||c_k||^2 - 2 x.c_k`` in float64 (one matmul per block of rows); the expansion's
    rounding error is below ``tol = 4 (p + 2) eps (||x||^2 + max_k ||c_k||^2)``, so a row whose
    two best scores are closer than ``tol`` is recomputed directly as ``sum_j (x_j - c_kj)^2``.
    Ties go to the lowest index. Returns int64[n] (on ``x``'s device) and float64[n] (>= 0).
    """
    C = centroids.to(x.device, torch.float64)
    K, p = C.shape
    c2 = (C * C).sum(1) if c2 is None else c2.to(x.device, torch.float64)
    cmax = float(c2.max())
    idx_parts, dist_parts = [], []
    rows = _rows_per_block(K, sample_block)
    for s in range(0, x.shape[0], rows):
        xb = x[s:s + rows].to(torch.float64)
        x2 = (xb * xb).sum(1)
        scores = torch.addmm(c2.unsqueeze(0), xb, C.T, beta=1, alpha=-2)
        best = scores.argmin(1)  # the first minimum: the lowest index among equal computed scores
        first = scores.gather(1, best.unsqueeze(1))
        dist = (x2 + first.squeeze(1)).clamp_min(0)
        if K > 1:  # the second-best score: mask the best (cheaper than a top-2 sort)
            second = scores.scatter_(1, best.unsqueeze(1), math.inf).min(1).values
            close = second - first.squeeze(1) <= 4 * (p + 2) * _EPS64 * (x2 + cmax)
        else:
            close = torch.zeros(xb.shape[0], dtype=torch.bool, device=x.device)
        for i in torch.nonzero(close).flatten().tolist():
            d = ((xb[i] - C) ** 2).sum(1)
            best[i] = d.argmin()
            dist[i] = d[best[i]]
        idx_parts.append(best)
        dist_parts.append(dist)
        del scores
    if not idx_parts:
        return torch.zeros(0, dtype=torch.int64, device=x.device), torch.zeros(0, dtype=torch.float64, device=x.device)
    return torch.cat(idx_parts), torch.cat(dist_parts)


class _FaissNearest:
    """faiss (a float32 flat index over the centres, built once per Lloyd pass) finds the two
    nearest centres of each point; where their float32 distances are closer than the float32
    rounding bound ``4 (p + 2) eps32 (||x||^2 + max ||c||^2)``, :func:`nearest_exact` decides, so the
    result is the exact rule's. The distance to the chosen centre is computed directly in float64."""

    def __init__(self, centroids: torch.Tensor) -> None:
        import faiss  # optional

        self.C = centroids.to(torch.float64)
        self.c2 = (self.C * self.C).sum(1)
        self.index = faiss.IndexFlatL2(self.C.shape[1])
        self.index.add(np.ascontiguousarray(self.C.cpu().numpy(), dtype=np.float32))
        self.k = min(2, self.C.shape[0])

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xd = x.to(torch.float64)
        D, I = self.index.search(np.ascontiguousarray(xd.cpu().numpy(), dtype=np.float32), self.k)
        idx = torch.from_numpy(I[:, 0].astype(np.int64)).to(x.device)
        if self.k == 2:
            x2 = (xd * xd).sum(1).cpu().numpy()
            tol = 4 * (xd.shape[1] + 2) * float(np.finfo(np.float32).eps) * (x2 + float(self.c2.max()))
            close = np.flatnonzero((D[:, 1].astype(np.float64) - D[:, 0]) <= tol)
            if close.size:
                rows = torch.from_numpy(close).to(x.device)
                idx[rows] = nearest_exact(xd[rows], self.C.to(x.device), self.c2.to(x.device))[0]
        dist = ((xd - self.C.to(x.device)[idx]) ** 2).sum(1)
        return idx, dist


# ------------------------------------------------------------------------------------ the fit
def kmeans_plus_plus(x: torch.Tensor, k: int, *, seed: int, local_trials: int | None = None,
                     block: int = 4096, progress_bar: bool = False) -> np.ndarray:
    """Indices (int64[k], in the order chosen) of ``k`` rows of ``x`` [n, p] chosen by greedy k-means++.

    First centre uniform; then, ``local_trials`` (default ``2 + floor(ln k)``) candidates drawn with
    probability proportional to ``D(x)^2`` (the squared distance to the nearest centre chosen so
    far; inverse-CDF sampling with a seeded CPU generator ``derive_seed(seed)``) and the one that
    lowers ``sum D^2`` most kept, the first drawn on ties (Arthur & Vassilvitskii 2007; greedy as in
    scikit-learn). Distances in float64 as ``||x||^2 + ||c||^2 - 2 x.c`` (clamped at 0), all
    candidates of a step in one matrix product per block of ``block`` rows. Deterministic.
    """
    n = int(x.shape[0])
    if k > n:
        raise UserInputError(f"cannot seed {k} clusters from {n} points; lower K or fit on more data")
    g = torch.Generator().manual_seed(derive_seed(seed))
    trials = int(local_trials) if local_trials is not None else 2 + int(math.log(k))
    x2 = torch.cat([(b.to(torch.float64) ** 2).sum(1) for b in x.split(block)])

    def sq_dist(idx: list[int]) -> torch.Tensor:  # float64 [n, len(idx)]
        c = x[idx].to(torch.float64)
        c2 = (c * c).sum(1)
        return torch.cat([(x2[s:s + block, None] + c2[None, :]
                           - 2 * (x[s:s + block].to(torch.float64) @ c.T)).clamp_min(0)
                          for s in range(0, n, block)])

    chosen = [int(torch.randint(n, (1,), generator=g))]
    closest = sq_dist(chosen)[:, 0]
    closest[chosen[0]] = 0.0
    for _ in progress(range(1, k), enabled=progress_bar, desc="k-means++ seeding", total=k - 1, unit="centre"):
        cum = torch.cumsum(closest.cpu(), 0)
        total = float(cum[-1])
        if total <= 0:  # every point sits on a centre already: take the first unused point
            unused = np.setdiff1d(np.arange(n), np.asarray(chosen))
            chosen.append(int(unused[0]))
            continue
        u = torch.rand(trials, generator=g, dtype=torch.float64) * total
        # u < cum[i] first: a point of zero weight is never drawn (u rounded up to total -> the last positive)
        last = int(torch.nonzero(closest.cpu() > 0).max())
        cand = torch.searchsorted(cum, u, right=True).clamp_(max=last)
        cand_list = list(dict.fromkeys(cand.tolist()))  # distinct candidates, in draw order
        d = torch.minimum(closest.unsqueeze(1), sq_dist(cand_list))
        d[cand_list, torch.arange(len(cand_list), device=d.device)] = 0.0  # a centre is at distance 0 from itself
        best = int(d.sum(0).argmin())  # first minimum: the earliest drawn candidate on ties
        chosen.append(cand_list[best])
        closest = d[:, best].contiguous()
    return np.asarray(chosen, dtype=np.int64)


@dataclass
class LloydResult:
    centroids: torch.Tensor  # float64 [K, p]
    objective: list[float]  # per iteration, of the centres that iteration started from
    iterations_run: int
    converged: bool  # an iteration changed no assignment
    empty_clusters: int  # clusters empty in the last iteration (they kept their centre)
    n: int


@torch.no_grad()
def lloyd(batches: Callable[[], Iterator[torch.Tensor]], centroids: torch.Tensor, iterations: int, *,
          backend: str = "torch", progress_bar: bool = False) -> LloydResult:
    """Lloyd's algorithm streamed over ``batches()`` (a fresh iterator of float [b, p] feature
    batches per call, same order every time): per-cluster float64 sums and counts accumulated over
    the batches, centres = means; an empty cluster keeps its centre; stops when no assignment changes."""
    C = centroids.to(torch.float64).clone()
    K = C.shape[0]
    history: list[float] = []
    prev: torch.Tensor | None = None
    converged, empty, n, it = False, 0, 0, 0
    sums = torch.empty_like(C)  # two K x p buffers in all: the sums become the next centres
    for it in progress(range(1, int(iterations) + 1), enabled=progress_bar, desc="k-means (Lloyd)", unit="iter"):
        sums.zero_()
        counts = torch.zeros(K, dtype=torch.float64, device=C.device)
        c2 = (C * C).sum(1)
        search = _FaissNearest(C) if backend == "faiss" else None
        objective, parts = 0.0, []
        for xb in batches():
            xb = xb.to(C.device, torch.float64)
            idx, dist = search(xb) if search is not None else nearest_exact(xb, C, c2)
            sums.index_add_(0, idx, xb)
            counts += torch.bincount(idx, minlength=K).to(torch.float64)
            objective += float(dist.sum())
            parts.append(idx.cpu())
        assign = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)
        n = int(assign.numel())
        history.append(objective)
        full = counts > 0
        empty = int((~full).sum())
        sums.div_(counts.clamp_min(1).unsqueeze(1))  # the mean of each cluster's points
        sums[~full] = C[~full]  # an empty cluster keeps its centre
        C, sums = sums, C
        if prev is not None and torch.equal(prev, assign):
            converged = True
            break
        prev = assign
    return LloydResult(C, history, it if iterations else 0, converged, empty, n)


# ------------------------------------------------------------------------------------ the partition
class KMeansPartition:
    """Fitted k-means centres; assigns cell ids to any source (partition protocol)."""

    kind = "kmeans"

    def __init__(self, spec: KMeansSpec, centroids: torch.Tensor, *, input_dim: int,
                 featurize: Featurize | None = None, heldout_indices_used: np.ndarray | None = None,
                 fit_record: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.centroids = centroids.to(torch.float64).cpu().contiguous()
        self.input_dim = int(input_dim)
        self.featurize = featurize
        self.heldout_indices_used = (np.zeros(0, np.int64) if heldout_indices_used is None
                                     else np.asarray(heldout_indices_used, np.int64))
        self.fit_record = dict(fit_record or {})
        self._c2 = (self.centroids * self.centroids).sum(1)

    @property
    def K(self) -> int:
        return self.spec.K

    @property
    def log_K(self) -> float:
        return math.log(self.K)

    max_cell_diameter = None
    """Unknown for k-means cells (never estimated from points): no cell is ever proven from it."""

    @property
    def depends_on_training_set(self) -> bool:
        return self.spec.depends_on_training_set

    @property
    def uses_heldout(self) -> bool:
        return self.spec.uses_heldout

    def diameter(self, norm: str) -> float | None:
        return None

    def record(self) -> dict[str, Any]:
        """What every result records about this partition (spec §1; the protocol's keys)."""
        spec = asdict(self.spec)
        return {"kind": self.kind, **spec, "metric": "l2",
                "space": "pixels" if self.spec.features is None else f"features:{self.spec.features}",
                "K": self.K, "log_K": self.log_K, "input_dim": self.input_dim,
                "feature_dim": int(self.centroids.shape[1]), **self.fit_record,
                "centroids_sha256": _tensor_hash(self.centroids),
                "max_cell_diameter": None, "n_heldout_used": int(self.heldout_indices_used.size),
                "heldout_indices_hash": (array_hash(self.heldout_indices_used) if self.heldout_indices_used.size
                                         else None),
                "depends_on_training_set": self.depends_on_training_set,
                "depends_on_training_set_why": self.spec.dependence(), "uses_heldout": self.uses_heldout}

    def heldout_statistics_mask(self, m: int) -> np.ndarray:
        """bool[m]: held-out samples *not* used to fit the clusters (only these enter held-out statistics)."""
        mask = np.ones(m, dtype=bool)
        mask[self.heldout_indices_used[self.heldout_indices_used < m]] = False
        return mask

    def features(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The space the clusters live in: flattened pixels, or the named layer's features."""
        if x.reshape(x.shape[0], -1).shape[1] != self.input_dim:
            raise UserInputError(f"data have {x.reshape(x.shape[0], -1).shape[1]} features; this partition "
                                 f"was built for {self.input_dim}")
        z = self.featurize(x) if self.featurize is not None else x.reshape(x.shape[0], -1)
        z = z.to(device, torch.float64)
        if z.shape[1] != self.centroids.shape[1]:
            raise UserInputError(f"features have {z.shape[1]} dimensions; the clusters have {self.centroids.shape[1]}")
        return z

    def assigner(self, *, device: str | torch.device | None = None, **_: Any) -> "KMeansCells":
        """A per-batch accumulator of cell ids (``update(x, y)``, ``compute()``): what the one pass
        over a dataset feeds, batch by batch, beside the model's forward pass."""
        return KMeansCells(self, resolve_device(device))

    def assign(self, source: DataSource, *, batch_size: int = DEFAULT_BATCH_SIZE,
               device: str | torch.device | None = None, progress_bar: bool = True) -> np.ndarray:
        """Cell id of every sample of ``source`` (streamed in batches): int64[n] in [0, K)."""
        acc = self.assigner(device=device)
        for x, y in progress(source.batches(batch_size), enabled=progress_bar, desc=f"assign clusters {source.name}",
                             total=source.num_batches(batch_size), unit="batch"):
            acc.update(x, y)
        return acc.compute()

    def assign_arrays(self, x: Any, labels: Any = None, *, device: str | torch.device | None = None) -> np.ndarray:
        """Cell ids of in-memory points ``x`` ``[n, ...]`` (labels needed if label-pure)."""
        dev = resolve_device(device)
        idx, _ = nearest_exact(self.features(torch.as_tensor(x), dev), self.centroids.to(dev), self._c2.to(dev))
        return self._cell(idx.cpu().numpy(), None if labels is None else np.asarray(labels))

    def state(self) -> dict[str, np.ndarray]:
        """Arrays that rebuild this partition with :meth:`from_state` (a run's cache of the fit)."""
        import json
        return {"centroids": self.centroids.numpy(), "heldout_indices_used": self.heldout_indices_used,
                "input_dim": np.int64(self.input_dim), "fit_record": np.str_(json.dumps(self.fit_record))}

    @classmethod
    def from_state(cls, spec: KMeansSpec, state: Any, *, model: nn.Module | None = None) -> "KMeansPartition":
        """The partition :meth:`state` saved (``model``: the one whose features it clusters)."""
        import json
        featurize = None
        if spec.features is not None:
            from genbound.models.features import LayerFeatures
            featurize = LayerFeatures(model, spec.features)  # type: ignore[arg-type]
        return cls(spec, torch.from_numpy(np.asarray(state["centroids"], np.float64)),
                   input_dim=int(state["input_dim"]), featurize=featurize,
                   heldout_indices_used=np.asarray(state["heldout_indices_used"], np.int64),
                   fit_record=json.loads(str(state["fit_record"])))

    def _cell(self, region: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        return label_pure_cells(region, labels, self.spec.num_classes if self.spec.label_pure else None)


class KMeansCells:
    """Cell ids of a stream of batches of one k-means partition: ``update(x, y)``, ``compute()``."""

    def __init__(self, partition: KMeansPartition, device: torch.device) -> None:
        self.partition, self.device = partition, device
        self._C, self._c2 = partition.centroids.to(device), partition._c2.to(device)
        self._parts: list[np.ndarray] = []

    def update(self, x: torch.Tensor, y: torch.Tensor | np.ndarray) -> None:
        idx, _ = nearest_exact(self.partition.features(x, self.device), self._C, self._c2)
        labels = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        self._parts.append(self.partition._cell(idx.cpu().numpy(), labels))

    def compute(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros(0, np.int64)


def _tensor_hash(t: torch.Tensor) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes()).hexdigest()[:16]


def _flatten(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def check_kmeans(spec: KMeansSpec, *, train: DataSource | None = None, heldout: DataSource | None = None,
                 model: nn.Module | None = None) -> int:
    """Every mistake :func:`build_kmeans` would meet, found without fitting (a run checks them
    before it computes anything); returns the number of fit samples."""
    K = int(spec.regions)
    if spec.fit == "heldout-split":
        if heldout is None or len(heldout) == 0:
            raise UserInputError("kmeans_fit = \"heldout-split\" needs held-out data to fit the clusters on")
        m = len(heldout)
        n_fit = int(round(spec.fit_fraction * m))
        if n_fit < K:
            raise UserInputError(f"the k-means fit split holds {n_fit} of {m} held-out samples "
                                 f"(kmeans_fit_fraction = {spec.fit_fraction:g}), fewer than K = {K}; "
                                 "lower K or raise kmeans_fit_fraction")
        if n_fit >= m:
            raise UserInputError(f"kmeans_fit_fraction = {spec.fit_fraction:g} of {m} held-out samples leaves none "
                                 "for evaluation; lower it")
    else:
        if train is None or len(train) == 0:
            raise UserInputError("kmeans_fit = \"train\" needs the training set")
        n_fit = len(train)
        if K > n_fit:
            raise UserInputError(f"cannot fit {K} clusters on {n_fit} training samples; lower K")
    if min(n_fit, int(spec.seeding_sample)) < K:
        raise UserInputError(f"kmeans_seeding_sample = {spec.seeding_sample} is smaller than K = {K}")
    if spec.features is not None:
        if model is None:
            raise UserInputError(f"kmeans_features = {spec.features!r} needs the model whose layer it names")
        from genbound.models.features import resolve_layer
        resolve_layer(model, spec.features)
    return n_fit


def check_fit_memory(K: int, p: int, n: int, s: int, cache_bytes: int, device: torch.device,
                     backend: str = "torch") -> None:
    """Refuse, before any work, a fit that cannot fit in memory. Its peak: the fit set when it is held
    (float64, up to ``cache_bytes``), plus the larger of the seeding step (the sample of ``s``
    points gathered in float32, and in float64 when it is held) and the Lloyd step (the initial
    centres, the centres and their per-cluster sums: ``3 K p`` float64; faiss adds a float32 copy)."""
    held = n * p * 8 if n * p * 8 <= cache_bytes else 0
    seeding = 2 * s * p * 4 + (s * p * 8 if s < n and s * p * 8 <= cache_bytes else 0)
    fitting = 3 * K * p * 8 + (K * p * 4 if backend == "faiss" else 0)
    need = held + max(seeding, fitting)
    free = free_memory(device)
    if free is not None and need > free:
        gib = 2.0 ** 30
        raise UserInputError(
            f"a k-means fit of K = {K:,} centres in {p:,} dimensions needs about {need / gib:.1f} GiB "
            f"(initial centres, centres and their sums in float64) but {free / gib:.1f} GiB are free "
            f"on {device}; cluster a model's features instead (kmeans_features = \"<layer>\"), or lower K or "
            "kmeans_seeding_sample")


def build_kmeans(spec: KMeansSpec, *, train: DataSource | None = None, heldout: DataSource | None = None,
                 model: nn.Module | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 device: str | torch.device | None = None, cache_bytes: int = 1 << 30,
                 model_id: str | None = None, progress_bar: bool = False) -> KMeansPartition:
    """Fit the k-means partition ``spec`` and return it.

    ``fit="heldout-split"`` needs ``heldout``: the fit split is ``round(fit_fraction * m)`` held-out
    samples drawn by ``numpy.random.default_rng(derive_seed(seed, 3))`` (at least K, at least one
    left for evaluation). ``fit="train"`` needs ``train``. ``features`` needs ``model``. The fit
    set's features are kept in memory when they take at most ``cache_bytes`` (float64), else they
    are recomputed on every Lloyd pass (streaming). Seeds: subsample ``derive_seed(seed, 5)``,
    k-means++ ``derive_seed(seed, 4)``. ``model_id`` (e.g. the model's fingerprint) is recorded
    with a feature-space partition, which belongs to that model.
    """
    dev = resolve_device(device)
    K = int(spec.regions)
    n_fit = check_kmeans(spec, train=train, heldout=heldout, model=model)
    used = None
    if spec.fit == "heldout-split":
        assert heldout is not None
        rng = np.random.default_rng(derive_seed(spec.seed, 3))
        used = np.sort(rng.permutation(len(heldout))[:n_fit]).astype(np.int64)
        fit_src = heldout.subset(used, name=f"{heldout.name}[k-means fit split]")
        where = f"heldout-split:{heldout.name}"
    else:
        assert train is not None
        fit_src, where = train, f"train:{train.name}"
    featurize: Featurize | None = None
    if spec.features is not None:
        from genbound.models.features import LayerFeatures
        featurize = LayerFeatures(model, spec.features)  # type: ignore[arg-type]

    def feats(x: torch.Tensor) -> torch.Tensor:
        return (featurize(x) if featurize is not None else _flatten(x)).to(torch.float32)

    n = len(fit_src)
    first, _ = fit_src.get(np.arange(min(n, 2)))
    p = int(feats(first).shape[1])
    check_fit_memory(K, p, n, min(n, int(spec.seeding_sample)), cache_bytes, dev, spec.backend)
    # float32 features (pixels, or the model's) become float64 exactly; held in float64 when they fit
    cached: list[torch.Tensor] | None = None
    if n * p * 8 <= cache_bytes:
        cached = [feats(x).to(dev, torch.float64) for x, _ in fit_src.batches(batch_size)]

    def batches() -> Iterator[torch.Tensor]:
        if cached is not None:
            yield from cached
        else:
            for x, _ in fit_src.batches(batch_size):
                yield feats(x).to(dev)

    # seeding on a seeded uniform subsample (all points when the fit set is small)
    s = min(n, int(spec.seeding_sample))
    if s == n:
        sub = np.arange(n, dtype=np.int64)
        xs = torch.cat(list(batches())) if n else torch.zeros(0, p)
    else:
        rng = np.random.default_rng(derive_seed(spec.seed, 5))
        sub = np.sort(rng.choice(n, size=s, replace=False)).astype(np.int64)
        xs = torch.cat([feats(fit_src.get(sub[i:i + batch_size])[0]).to(dev) for i in range(0, s, batch_size)])
        if s * p * 8 <= cache_bytes:
            xs = xs.to(torch.float64)
    seeds = kmeans_plus_plus(xs, K, seed=derive_seed(spec.seed, 4), progress_bar=progress_bar)
    init = xs[torch.as_tensor(seeds, device=xs.device)].to(torch.float64)
    del xs
    res = lloyd(batches, init, int(spec.iterations), backend=spec.backend, progress_bar=progress_bar)
    fit_record = {"fit_source": where, "n_fit": n, "n_seeding": s, "seeding": "greedy k-means++",
                  "objective": res.objective, "iterations_run": res.iterations_run, "converged": res.converged,
                  "empty_clusters": res.empty_clusters, "streamed": cached is None,
                  "fit_indices_hash": array_hash(used) if used is not None else None}
    if spec.features is not None:
        fit_record["model_fingerprint"] = model_id
    return KMeansPartition(spec, res.centroids, input_dim=fit_src.dim, featurize=featurize,
                           heldout_indices_used=used, fit_record=fit_record)
