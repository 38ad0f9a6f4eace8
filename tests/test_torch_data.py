"""Data layer: shipped loaders, arrays, image folders, splits, random labels."""

import numpy as np
import pytest

from genbound.data.preprocess import Preprocess
import torch

from genbound.data import (ImageFolderSource, TensorSource, available_datasets, load_dataset, make_linear_teacher,
                           make_prototypes, randomize_labels, split_source, stratified_split)
from genbound.errors import UserInputError



def test_digits_shape_range_classes():
    src = load_dataset("digits")
    assert len(src) == 1797 and src.shape == (1, 8, 8) and src.num_classes == 10
    x, y = src.tensors()
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(np.unique(src.labels)) == set(range(10))
    assert src.normalization.std[0] > 0


def test_mnist5k_shape_range_classes():
    src = load_dataset("mnist5k")
    assert len(src) == 5000 and src.shape == (1, 28, 28)
    assert np.array_equal(np.bincount(src.labels), np.full(10, 500))
    x, y = next(src.batches(64))
    assert x.shape == (64, 1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert src.normalization.mean == (0.1307,)


def test_batches_stream_everything_in_order():
    src, _ = make_linear_teacher(103, shape=(1, 4, 4), seed=1)
    xs, ys = zip(*src.batches(10))
    assert [len(y) for y in ys] == [10] * 10 + [3]
    x_all, y_all = src.tensors()
    assert torch.equal(torch.cat(xs), x_all) and torch.equal(torch.cat(ys), y_all)
    assert src.num_batches(10) == 11


def test_tensor_source_validation():
    with pytest.raises(UserInputError, match=r"\[0, 1\]"):
        TensorSource(np.full((2, 1, 2, 2), 3.0), [0, 1])
    with pytest.raises(UserInputError, match="labels"):
        TensorSource(np.zeros((2, 1, 2, 2)), [0, 1, 1])
    with pytest.raises(UserInputError, match="num_classes"):
        TensorSource(np.zeros((2, 4)), [0, 5], num_classes=3)
    u8 = TensorSource(np.full((2, 3, 3), 255, np.uint8), [0, 1])
    assert u8.shape == (1, 3, 3) and float(u8.tensors()[0].max()) == 1.0


def test_stratified_split_is_seeded_and_stratified():
    labels = load_dataset("digits").labels
    a = stratified_split(labels, 0.25, seed=3)
    b = stratified_split(labels, 0.25, seed=3)
    c = stratified_split(labels, 0.25, seed=4)
    assert np.array_equal(a.heldout_indices, b.heldout_indices)
    assert not np.array_equal(a.heldout_indices, c.heldout_indices)
    assert np.intersect1d(a.train_indices, a.heldout_indices).size == 0
    assert a.train_indices.size + a.heldout_indices.size == labels.size
    per_class = np.bincount(labels[a.heldout_indices]) / np.bincount(labels)
    assert np.allclose(per_class, 0.25, atol=0.01)
    rec = a.record()
    assert rec["seed"] == 3 and rec["heldout_indices_hash"].startswith("sha256:")


def test_load_dataset_split_and_errors():
    tr = load_dataset("digits", split="train", heldout_fraction=0.5, split_seed=1)
    ho = load_dataset("digits", split="heldout", heldout_fraction=0.5, split_seed=1)
    assert len(tr) + len(ho) == 1797
    assert tr.provenance["split"]["part"] == "train"
    with pytest.raises(UserInputError, match="unknown dataset"):
        load_dataset("cifar-nonexistent")
    assert "mnist5k" in available_datasets()


def test_imagefolder_decodes_resizes_and_labels(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    src = ImageFolderSource(tmp_path, preprocess=Preprocess(resize=(8, 8)))
    assert len(src) == 6 and src.shape == (3, 8, 8) and src.num_classes == 2
    assert src.classes == ["cat", "dog"]
    x, y = next(src.batches(4))
    assert x.shape == (4, 3, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert y.tolist() == [0, 0, 0, 1]
    raw = ImageFolderSource(tmp_path)
    assert raw.shape == (3, 10, 12)
    assert load_dataset(str(tmp_path), preprocess=Preprocess(resize=(4, 4))).shape == (3, 4, 4)


def test_npz_source(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((5, 2, 3, 3), np.float32), y=np.arange(5) % 2)
    src = load_dataset(str(p))
    assert src.shape == (2, 3, 3) and len(src) == 5


def test_randomize_labels_changes_exactly_the_fraction():
    src = make_prototypes(200, shape=(1, 4, 4), num_classes=5, seed=0)
    noisy, rec = randomize_labels(src, 0.3, seed=7)
    changed = np.flatnonzero(noisy.labels != src.labels)
    assert changed.size == 60 and np.array_equal(changed, rec["changed_indices"])
    x0, _ = src.get(np.arange(10))
    x1, _ = noisy.get(np.arange(10))
    assert torch.equal(x0, x1)


def test_subset_and_split_source():
    src = make_prototypes(50, shape=(1, 2, 2), num_classes=2, seed=0)
    tr, ho, sp = split_source(src, 0.2, seed=0)
    assert len(tr) == sp.train_indices.size
    x, y = tr.get(np.array([0, 1]))
    xr, yr = src.get(sp.train_indices[:2])
    assert torch.equal(x, xr) and torch.equal(y, yr)
