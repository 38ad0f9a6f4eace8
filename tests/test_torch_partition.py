"""Partition layer: blocked nearest-centroid assignment against brute force, specs, label purity."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genbound.data import make_prototypes
from genbound.errors import UserInputError
from genbound.partition import PartitionSpec, build_partition, nearest_centroid



def brute_force(x, c):
    d = ((np.asarray(x, np.float64)[:, None, :] - np.asarray(c, np.float64)[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)  # first minimum on ties


@pytest.mark.parametrize("n,K,d,sb,cb", [(50, 7, 5, 8, 3), (33, 40, 12, 64, 7), (10, 1, 3, 4, 4), (64, 64, 2, 1, 1)])
def test_blocked_assignment_matches_brute_force(n, K, d, sb, cb):
    rng = np.random.default_rng(n * K)
    x, c = rng.random((n, d)), rng.random((K, d))
    got = nearest_centroid(x, c, sample_block=sb, centroid_block=cb, device="cpu", dtype=torch.float64)
    assert got.dtype == np.int64
    assert np.array_equal(got, brute_force(x, c))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30), K=st.integers(1, 20), d=st.integers(1, 6), sb=st.integers(1, 9), cb=st.integers(1, 9),
       seed=st.integers(0, 10_000))
def test_ties_resolve_to_lowest_index_like_brute_force(n, K, d, sb, cb, seed):
    # small integers: every score is exact in float32, so ties are real ties
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, (n, d)).astype(np.float32)
    c = rng.integers(0, 3, (K, d)).astype(np.float32)
    got = nearest_centroid(x, c, sample_block=sb, centroid_block=cb, device="cpu")
    assert np.array_equal(got, brute_force(x, c))


def test_duplicate_centroids_take_first():
    c = np.array([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    assert nearest_centroid(np.zeros((3, 2)), c, centroid_block=1, device="cpu").tolist() == [1, 1, 1]


def test_float32_agrees_with_brute_force_on_generic_data():
    rng = np.random.default_rng(0)
    x, c = rng.random((200, 64)).astype(np.float32), rng.random((30, 64)).astype(np.float32)
    assert np.array_equal(nearest_centroid(x, c, sample_block=17, centroid_block=8, device="cpu"), brute_force(x, c))


@pytest.fixture(scope="module")
def src():
    return make_prototypes(150, shape=(1, 4, 4), num_classes=3, seed=1)


def test_uniform_partition_streams_and_is_seeded(src):
    spec = PartitionSpec("uniform", regions=12, seed=4)
    p = build_partition(spec, input_dim=16)
    assert p.centroids.shape == (12, 16) and 0 <= float(p.centroids.min()) and float(p.centroids.max()) <= 1
    cells = p.assign(src, batch_size=32, sample_block=10, centroid_block=5, device="cpu", progress_bar=False)
    x, _ = src.tensors()
    assert np.array_equal(cells, brute_force(x.reshape(150, -1).numpy(), p.centroids.numpy()))
    assert torch.equal(build_partition(spec, input_dim=16).centroids, p.centroids)
    assert not torch.equal(build_partition(PartitionSpec("uniform", 12, seed=5), input_dim=16).centroids, p.centroids)
    rec = p.record()
    assert rec["max_cell_diameter"] is None and rec["K"] == 12 and rec["kind"] == "uniform" and rec["seed"] == 4


def test_label_pure_cells(src):
    p = build_partition(PartitionSpec("uniform", regions=5, seed=0, label_pure=True, num_classes=3), input_dim=16)
    assert p.K == 15 and np.isclose(p.log_K, np.log(15))
    cells = p.assign(src, device="cpu", progress_bar=False)
    x, y = src.tensors()
    region = brute_force(x.reshape(150, -1).numpy(), p.centroids.numpy())
    assert np.array_equal(cells, region * 3 + y.numpy())
    assert np.array_equal(cells % 3, y.numpy()) and cells.max() < p.K


def test_heldout_partition_reports_used_indices(src):
    held = make_prototypes(40, shape=(1, 4, 4), num_classes=3, seed=9)
    p = build_partition(PartitionSpec("heldout", regions=10, seed=2), input_dim=16, heldout=held)
    used = p.heldout_indices_used
    assert used.size == 10 and np.unique(used).size == 10
    x_used, _ = held.get(used)
    assert torch.equal(p.centroids, x_used.reshape(10, -1))
    # each used held-out point is its own centroid's cell
    assert np.array_equal(p.assign_arrays(x_used, device="cpu"), np.arange(10))
    mask = p.heldout_statistics_mask(40)
    assert mask.sum() == 30 and not mask[used].any()
    assert p.record()["n_heldout_used"] == 10
    with pytest.raises(UserInputError, match="held-out"):
        build_partition(PartitionSpec("heldout", regions=10), input_dim=16)
    with pytest.raises(UserInputError, match="lower K"):
        build_partition(PartitionSpec("heldout", regions=41), input_dim=16, heldout=held)


def test_heldout_centroids_that_cannot_fit_are_refused_before_any_work(monkeypatch):
    import genbound.partition.voronoi as voronoi

    held = make_prototypes(40, shape=(1, 4, 4), num_classes=3, seed=9)
    monkeypatch.setattr(voronoi, "free_memory", lambda device: 100)
    with pytest.raises(UserInputError, match=r"^a 'heldout' partition holds its K = 10 held-out centroids in 16 "
                                             r"dimensions: .* use a 'uniform' partition"):
        build_partition(PartitionSpec("heldout", regions=10, seed=2), input_dim=16, heldout=held)
    monkeypatch.setattr(voronoi, "free_memory", lambda device: 10 * 16 * 4)
    assert build_partition(PartitionSpec("heldout", regions=10, seed=2), input_dim=16, heldout=held).K == 10


def test_projection_partition(src):
    spec = PartitionSpec("projection", regions=6, seed=3, projection_dim=4)
    p = build_partition(spec, input_dim=16)
    assert p.projection.shape == (16, 4) and p.centroids.shape == (6, 4)
    cells = p.assign(src, device="cpu", progress_bar=False)
    x, _ = src.tensors()
    z = x.reshape(150, -1).numpy().astype(np.float64) @ p.projection.numpy().astype(np.float64)
    assert np.array_equal(cells, brute_force(z, p.centroids.numpy()))
    held = make_prototypes(20, shape=(1, 4, 4), num_classes=3, seed=9)
    ph = build_partition(PartitionSpec("projection", 5, seed=3, projection_dim=4, centroids="heldout"),
                         input_dim=16, heldout=held)
    assert torch.equal(ph.projection, p.projection) and ph.heldout_indices_used.size == 5


def test_spec_validation():
    with pytest.raises(UserInputError):
        PartitionSpec("kmeans", 10)
    with pytest.raises(UserInputError):
        PartitionSpec("uniform", 10, label_pure=True)
    with pytest.raises(UserInputError):
        PartitionSpec("projection", 10)
    p = build_partition(PartitionSpec("uniform", 3), input_dim=16)
    with pytest.raises(UserInputError, match="features"):
        p.assign_arrays(np.zeros((2, 15)), device="cpu")
