"""Dataset sources: labelled images in [0, 1] pixel units, streamed in batches.

Every source yields pixels in the **pre-normalization** range [0, 1] (``input_range``), so a
stability radius kappa is always in [0, 1] pixel units (spec/bounds.md §7). The normalization the
model expects (per-channel mean/std) is *recorded* on the source (:class:`Normalization`) and
applied inside the model by :class:`genbound.models.Normalize`, never to the data.

A source is random-access (``get(indices)``) and streams (``batches(batch_size)``), so later
layers never need the whole dataset in memory. Small in-memory sources also expose
``tensors()``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from genbound.errors import UserInputError
from genbound.torch_utils import array_hash

DEFAULT_BATCH_SIZE = 256


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std`` that the *model* expects on top of [0, 1] pixels.

    ``mean=(0,), std=(1,)`` (the default) is the identity. A kappa-ball of radius kappa in pixel
    units becomes a ball of radius kappa / std_c in channel c of the normalized input.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        mean = tuple(float(m) for m in np.atleast_1d(self.mean))
        std = tuple(float(s) for s in np.atleast_1d(self.std))
        if len(mean) != len(std) and 1 not in (len(mean), len(std)):
            raise UserInputError(f"normalization mean {mean} and std {std} must have the same length (one per channel)")
        if any(not np.isfinite(s) or s <= 0 for s in std):
            raise UserInputError(f"normalization std must be positive; got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def is_identity(self) -> bool:
        return all(m == 0.0 for m in self.mean) and all(s == 1.0 for s in self.std)

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def preset(cls, name: str) -> "Normalization":
        """``"imagenet"`` (torchvision's ImageNet mean/std) or ``"inception"`` (mean = std = 0.5)."""
        if name not in NORMALIZATIONS:
            raise UserInputError(f"unknown normalization {name!r}; use one of {', '.join(NORMALIZATIONS)} or give "
                                 "mean and std")
        mean, std = NORMALIZATIONS[name]
        return cls(mean, std)


#: named per-channel (mean, std) conventions of pretrained models
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class DataSource(abc.ABC):
    """A labelled dataset of images in [0, 1].

    Subclasses set ``name``, ``shape`` (per-sample shape, e.g. ``(1, 28, 28)``), ``num_classes``,
    ``normalization`` and implement ``__len__``, ``get`` and ``labels``.
    """

    name: str = "source"
    shape: tuple[int, ...] = ()
    num_classes: int = 0
    normalization: Normalization = Normalization()
    input_range: tuple[float, float] = (0.0, 1.0)
    #: ``get`` decodes files (worth parallel worker processes); in-memory sources say False
    decodes: bool = False
    provenance: dict[str, Any]

    def __init__(self) -> None:
        self.provenance = {}

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def get(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples at ``indices``: ``x`` float32 ``[b, *shape]`` in [0, 1], ``y`` int64 ``[b]``."""

    @property
    @abc.abstractmethod
    def labels(self) -> np.ndarray:
        """All labels, int64[n] (cheap: no pixels are decoded)."""

    # ------------------------------------------------------------------ derived behaviour
    @property
    def dim(self) -> int:
        """Number of input features, prod(shape)."""
        return int(np.prod(self.shape))

    def batches(self, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Stream ``(x, y)`` batches in index order; the last batch may be shorter."""
        if batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1; got {batch_size}")
        n = len(self)
        for start in range(0, n, batch_size):
            yield self.get(np.arange(start, min(start + batch_size, n)))

    def num_batches(self, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        return -(-len(self) // batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches(DEFAULT_BATCH_SIZE)

    def subset(self, indices: Sequence[int] | np.ndarray, *, name: str | None = None) -> "DataSource":
        """The samples at ``indices`` (in that order), as a new source."""
        return SubsetSource(self, indices, name=name)

    def with_labels(self, labels: np.ndarray, *, note: str = "labels replaced") -> "DataSource":
        """Same images with other labels (e.g. partially random labels for memorization runs)."""
        return RelabelledSource(self, labels, note=note)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole dataset as ``(x, y)`` tensors (only for sources that fit in memory)."""
        return self.get(np.arange(len(self)))

    def identifiers(self, indices: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """What names each sample at ``indices`` (default: all) so that a result maps back to it.

        ``"index"``: int64 position in the source the user named (a subset or a relabelled copy
        reports its parent's positions, so a split's samples keep their place in the whole set);
        a source of files adds ``"path"``: the file, relative to its folder. Reading identifiers
        never decodes a sample.
        """
        idx = np.arange(len(self), dtype=np.int64) if indices is None else _check_indices(indices, len(self))
        return {"index": idx}

    def describe(self) -> dict[str, Any]:
        """What a run records about this source."""
        return {
            "name": self.name,
            "n": len(self),
            "shape": list(self.shape),
            "num_classes": int(self.num_classes),
            "input_range": list(self.input_range),
            "normalization": self.normalization.as_dict(),
            **({"provenance": self.provenance} if self.provenance else {}),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, shape={self.shape}, num_classes={self.num_classes})"


def _check_indices(indices: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise UserInputError(f"boolean mask has shape {idx.shape}, expected ({n},)")
        return np.flatnonzero(idx).astype(np.int64)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise UserInputError(f"indices must be integers; got dtype {idx.dtype}")
    idx = idx.astype(np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise UserInputError(f"indices out of range for a source of {n} samples")
    return idx


class TensorSource(DataSource):
    """An in-memory source from numpy arrays or torch tensors.

    ``x``: shape ``(N, C, H, W)``, ``(N, H, W)`` (one channel added) or ``(N, d)`` (flat features);
    float values in [0, 1], or ``uint8`` (divided by 255). ``y``: integer labels in
    ``[0, num_classes)``. Anything else raises :class:`UserInputError`.
    """

    def __init__(self, x: Any, y: Any, *, name: str = "arrays", num_classes: int | None = None,
                 normalization: Normalization | None = None, copy: bool = False) -> None:
        super().__init__()
        for what, arr in (("images", x), ("labels", y)):
            if not isinstance(arr, torch.Tensor) and np.asarray(arr).dtype.kind not in "biuf":
                raise UserInputError(f"{name}: {what} must be numeric arrays; got dtype {np.asarray(arr).dtype}")
        xt = torch.as_tensor(x)
        if xt.dtype == torch.uint8:
            xt = xt.to(torch.float32) / 255.0
        elif not torch.is_floating_point(xt):
            raise UserInputError(f"{name}: images must be float in [0, 1] or uint8; got dtype {xt.dtype}")
        xt = xt.to(torch.float32)
        if copy:
            xt = xt.clone()
        if xt.ndim == 3:
            xt = xt.unsqueeze(1)
        if xt.ndim not in (2, 4):
            raise UserInputError(f"{name}: images must have shape (N, C, H, W), (N, H, W) or (N, d); got {tuple(xt.shape)}")
        if xt.numel() and (not torch.isfinite(xt).all() or xt.min() < 0 or xt.max() > 1):
            raise UserInputError(
                f"{name}: pixel values must lie in [0, 1] (range found [{float(xt.min()):.4g}, {float(xt.max()):.4g}]); "
                "divide 8-bit images by 255 and do not pre-normalize (give mean/std as normalization instead)")
        yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
        if yt.is_floating_point():
            if not torch.equal(yt, yt.round()):
                raise UserInputError(f"{name}: labels must be integers")
        if yt.ndim != 1:
            raise UserInputError(f"{name}: labels must be a 1-D array of class indices; got shape {tuple(yt.shape)}")
        yt = yt.to(torch.int64)
        if yt.shape[0] != xt.shape[0]:
            raise UserInputError(f"{name}: {xt.shape[0]} images but {yt.shape[0]} labels")
        if yt.numel() and yt.min() < 0:
            raise UserInputError(f"{name}: labels must be >= 0")
        inferred = int(yt.max()) + 1 if yt.numel() else 0
        if num_classes is None:
            num_classes = inferred
        elif inferred > num_classes:
            raise UserInputError(f"{name}: label {inferred - 1} >= num_classes={num_classes}")
        self.x, self.y = xt, yt
        self.name = name
        self.shape = tuple(xt.shape[1:])
        self.num_classes = int(num_classes)
        self.normalization = normalization or Normalization()
        self._labels = yt.numpy().copy()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def get(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and idx[-1] - idx[0] == idx.size - 1 and np.all(np.diff(idx) == 1):
            s = slice(int(idx[0]), int(idx[-1]) + 1)  # contiguous: a view, no copy
            return self.x[s], self.y[s]
        t = torch.from_numpy(idx)
        return self.x[t], self.y[t]

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


class SubsetSource(DataSource):
    """A view of ``parent`` restricted to ``indices`` (random access is delegated)."""

    def __init__(self, parent: DataSource, indices: Sequence[int] | np.ndarray, *, name: str | None = None) -> None:
        super().__init__()
        self.parent = parent
        self.indices = _check_indices(indices, len(parent))
        self.name = name or f"{parent.name}[subset]"
        self.shape, self.num_classes = parent.shape, parent.num_classes
        self.normalization, self.input_range = parent.normalization, parent.input_range
        self.decodes = parent.decodes
        self.provenance = {"parent": parent.name, "n_parent": len(parent), "indices_hash": array_hash(self.indices),
                           **({"parent_provenance": parent.provenance} if parent.provenance else {})}

    def __len__(self) -> int:
        return int(self.indices.size)

    def get(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.parent.get(self.indices[np.asarray(indices, dtype=np.int64)])

    def identifiers(self, indices: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        pos = self.indices if indices is None else self.indices[_check_indices(indices, len(self))]
        return self.parent.identifiers(pos)

    @property
    def labels(self) -> np.ndarray:
        return self.parent.labels[self.indices]


class RelabelledSource(DataSource):
    """``parent``'s images with the labels replaced by ``labels`` (same length)."""

    def __init__(self, parent: DataSource, labels: np.ndarray, *, note: str = "labels replaced") -> None:
        super().__init__()
        lab = np.asarray(labels)
        if lab.shape != (len(parent),) or not np.issubdtype(lab.dtype, np.integer):
            raise UserInputError(f"labels must be an integer array of shape ({len(parent)},); got {lab.dtype} {lab.shape}")
        if lab.size and (lab.min() < 0 or lab.max() >= parent.num_classes):
            raise UserInputError(f"labels must lie in [0, {parent.num_classes})")
        self.parent, self._labels = parent, lab.astype(np.int64)
        self._y = torch.from_numpy(self._labels)
        self.name = parent.name
        self.shape, self.num_classes = parent.shape, parent.num_classes
        self.normalization, self.input_range = parent.normalization, parent.input_range
        self.decodes = parent.decodes
        self.provenance = {"parent": parent.name, "note": note}

    def __len__(self) -> int:
        return len(self.parent)

    def get(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        x, _ = self.parent.get(idx)
        return x, self._y[torch.from_numpy(idx)]

    def identifiers(self, indices: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        return self.parent.identifiers(indices)

    @property
    def labels(self) -> np.ndarray:
        return self._labels


def randomize_labels(source: DataSource, fraction: float, *, seed: int = 0) -> tuple[DataSource, dict[str, Any]]:
    """Replace the labels of a random ``fraction`` of samples by uniformly random *other* labels.

    Used for memorization experiments (background-bounds §8 item 4): a model trained to
    interpolate these labels has small training error and large held-out error, and every
    certified bound must stay above the held-out error. The chosen samples are a seeded
    ``round(fraction * n)``-subset; each gets a label drawn uniformly from the other
    ``num_classes - 1`` classes. Returns the relabelled source and a record (seed, fraction,
    number changed, hash of the changed indices). Losses for the bounds must be computed against
    these labels (the ones the model was trained on).
    """
    if not 0.0 <= fraction <= 1.0:
        raise UserInputError(f"random-label fraction must be in [0, 1]; got {fraction}")
    if source.num_classes < 2:
        raise UserInputError("random labels need at least 2 classes")
    rng = np.random.default_rng(seed)
    n = len(source)
    changed = np.sort(rng.choice(n, size=int(round(fraction * n)), replace=False)).astype(np.int64)
    labels = source.labels.copy()
    shift = rng.integers(1, source.num_classes, size=changed.size)
    labels[changed] = (labels[changed] + shift) % source.num_classes
    record = {"seed": int(seed), "fraction": float(fraction), "n_changed": int(changed.size),
              "changed_indices_hash": array_hash(changed)}
    out = source.with_labels(labels, note=f"random labels on {changed.size} samples (seed {seed})")
    out.provenance["random_labels"] = record
    return out, {**record, "changed_indices": changed}
