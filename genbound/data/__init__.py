"""Data layer: sources of labelled images in [0, 1] pixel units, splits, the dataset registry.

Public API:

- :class:`DataSource` (stream ``batches(batch_size)``, ``get(indices)``, ``labels``, ``subset``),
  :class:`TensorSource` (numpy/torch arrays), :class:`ImageFolderSource` (``root/<class>/<img>``),
  :class:`Normalization` (mean/std the model expects; applied by the model, not the data).
- :func:`load_dataset` / :func:`register_dataset` / :func:`available_datasets` (by name).
- :func:`load_digits_source`, :func:`load_mnist5k_source` (shipped, offline).
- :func:`make_linear_teacher`, :func:`make_prototypes` (synthetic, known law).
- :func:`stratified_split`, :func:`split_source`, :func:`randomize_labels`.
"""

from genbound.data.imagefolder import ImageFolderSource
from genbound.data.registry import available_datasets, load_dataset, load_npz, register_dataset
from genbound.data.shipped import (DIGITS_NORMALIZATION, MNIST_NORMALIZATION, load_digits_source,
                                   load_mnist5k_source, mnist5k_path)
from genbound.data.source import (DEFAULT_BATCH_SIZE, DataSource, Normalization, RelabelledSource,
                                  SubsetSource, TensorSource, randomize_labels)
from genbound.data.splits import Split, split_source, stratified_split
from genbound.data.synthetic import make_linear_teacher, make_prototypes

__all__ = [
    "DEFAULT_BATCH_SIZE", "DIGITS_NORMALIZATION", "MNIST_NORMALIZATION", "DataSource", "ImageFolderSource",
    "Normalization", "RelabelledSource", "Split", "SubsetSource", "TensorSource", "available_datasets",
    "load_dataset", "load_digits_source", "load_mnist5k_source", "load_npz", "make_linear_teacher",
    "make_prototypes", "mnist5k_path", "randomize_labels", "register_dataset", "split_source", "stratified_split",
]
