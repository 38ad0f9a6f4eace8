import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genbound.errors import UserInputError
from genbound.partition.grid import grid_partition


def brute_cells(x, y, kappa, lo=0.0, hi=1.0):
    """Reference: cell = (label, per-dimension bin) with the upper edge in the last bin."""
    nb = math.ceil((hi - lo) / kappa)
    out = []
    for row, lab in zip(x, y):
        bins = []
        for v in row:
            b = int(math.floor((v - lo) / kappa))
            bins.append(min(max(b, 0), nb - 1))
        out.append((int(lab), *bins))
    return out


def test_ids_match_brute_force_and_are_consistent():
    rng = np.random.default_rng(0)
    x = rng.random((200, 3))
    x[:5] = [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.25], [0.25, 0.75, 1.0]]
    y = rng.integers(0, 4, 200)
    hx = np.concatenate([x[:50], rng.random((30, 3))])
    hy = np.concatenate([y[:50], rng.integers(0, 4, 30)])
    kappa = 0.25
    p = grid_partition(x, y, hx, hy, kappa=kappa, num_classes=4)
    ref = brute_cells(np.concatenate([x, hx]), np.concatenate([y, hy]), kappa)
    ids = np.concatenate([p.train_cell, p.heldout_cell])
    assert ids.dtype == np.int64
    # same id <=> same (label, bins)
    mapping = {}
    for key, i in zip(ref, ids):
        assert mapping.setdefault(key, i) == i
    assert len(set(mapping.values())) == len(mapping)
    # held-out copies of training points get the training ids
    assert np.array_equal(p.heldout_cell[:50], p.train_cell[:50])
    # compact ids
    assert set(ids.tolist()) == set(range(len(mapping)))
    # upper edge belongs to the last cell
    assert ref[0][1:] == (3, 3, 3)
    # assign_arrays() maps through the same dictionary
    again = p.assign_arrays(hx, hy)
    assert np.array_equal(again, p.heldout_cell)
    new = p.assign_arrays(np.array([[0.99, 0.01, 0.6]]), np.array([3]))
    key = (3, 3, 0, 2)
    assert new[0] == mapping.get(key, new[0])


def test_record_and_K():
    rng = np.random.default_rng(1)
    x = rng.random((10, 3))
    p = grid_partition(x, np.zeros(10, int), kappa=0.3, num_classes=2)
    assert p.K == 2 * 4**3
    assert math.isclose(p.log_K, math.log(2 * 4**3))
    r = p.record()
    assert r["kind"] == "grid" and r["label_pure"] is True and r["side"] == 0.3
    assert r["range"] == [0.0, 1.0]
    assert r["max_cell_diameter"]["linf"] == 0.3
    assert math.isclose(r["max_cell_diameter"]["l2"], 0.3 * math.sqrt(3))
    assert len(p.heldout_cell) == 0


def test_big_d_log_K_no_overflow():
    d = 784
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (20, d)) / 255.0
    y = rng.integers(0, 10, 20)
    kappa = 1 / 255
    p = grid_partition(x, y, x[:5], y[:5], kappa=kappa, num_classes=10)
    assert p.K is None
    assert math.isclose(p.log_K, math.log(10) + d * math.log(255), rel_tol=1e-12)
    assert len(np.unique(p.train_cell)) == 20
    assert np.array_equal(p.heldout_cell, p.train_cell[:5])
    assert math.isclose(p.record()["max_cell_diameter"]["l2"], kappa * math.sqrt(d))
    # ImageNet-sized input: K ~ exp(8.3e5), only log space works
    d_in = 3 * 224 * 224
    xi = np.random.default_rng(3).integers(0, 256, (3, d_in)) / 255.0
    pi = grid_partition(xi, np.arange(3), kappa=kappa, num_classes=1000)
    assert pi.K is None and math.isclose(pi.log_K, math.log(1000) + d_in * math.log(255), rel_tol=1e-12)
    assert pi.train_cell.tolist() == [0, 1, 2]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 5),
    st.floats(0.01, 1.5),
    st.integers(1, 3),
    st.integers(0, 10_000),
)
def test_same_cell_means_close_and_same_label(d, kappa, num_classes, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((40, d))
    x[rng.random((40, d)) < 0.2] = 1.0
    y = rng.integers(0, num_classes, 40)
    p = grid_partition(x, y, kappa=kappa, num_classes=num_classes)
    ids = p.train_cell
    for k in np.unique(ids):
        members = np.nonzero(ids == k)[0]
        assert len(set(y[members].tolist())) == 1
        pts = x[members]
        assert np.max(pts.max(0) - pts.min(0)) <= p.max_cell_diameter["linf"] + 1e-12
    nb = math.ceil(1 / kappa)
    assert p.K == num_classes * nb**d or p.K == num_classes * (nb + 1) ** d
    assert p.max_cell_diameter["linf"] == min(kappa, 1.0)


def test_user_errors():
    x = np.random.default_rng(0).random((5, 2))
    y = np.zeros(5, int)
    with pytest.raises(UserInputError, match="outside the grid range"):
        grid_partition(x + 1, y, kappa=0.1, num_classes=2)
    with pytest.raises(UserInputError, match="kappa"):
        grid_partition(x, y, kappa=0, num_classes=2)
    with pytest.raises(UserInputError, match="train_y"):
        grid_partition(x, np.array([0, 1, 2, 0, 0]), kappa=0.1, num_classes=2)
    with pytest.raises(UserInputError, match="features"):
        grid_partition(x, y, np.random.default_rng(0).random((3, 4)), np.zeros(3, int), kappa=0.1, num_classes=2)


def test_custom_range_and_torch_input():
    torch = pytest.importorskip("torch")
    x = torch.rand(10, 1, 2, 2) * 2 - 1
    y = torch.zeros(10, dtype=torch.long)
    p = grid_partition(x, y, kappa=0.5, num_classes=1, range=(-1.0, 1.0))
    assert p.K == 4**4 and p.record()["range"] == [-1.0, 1.0]
