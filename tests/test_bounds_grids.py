"""Grids and delta (spec §5): best certified value over a declared grid, median over random partitions."""

import math

import numpy as np
import pytest

from genbound.bounds import SampleStats, best_over_grid, compute_bounds, median_over_partitions, split_delta
from genbound.errors import UserInputError


def _stats(seed: int, K: int = 40, n: int = 400, m: int = 200, model: str = "m") -> SampleStats:
    rng = np.random.default_rng(seed)
    return SampleStats(train_cell=rng.integers(0, K, n), train_loss=(rng.random(n) < 0.1).astype(np.uint8),
                       heldout_cell=rng.integers(0, K, m), heldout_loss=(rng.random(m) < 0.1).astype(np.uint8),
                       kappas=[0.1, 0.2], train_stable=rng.random((n, 2)) < 0.5, K=K, model=model)


def test_split_delta():
    assert split_delta(0.05, 4) == pytest.approx(0.0125)
    for bad in (0, -1, 1.5):
        with pytest.raises(UserInputError):
            split_delta(0.05, bad)
    with pytest.raises(UserInputError):
        split_delta(1.0, 2)


def test_best_over_grid_is_min_at_split_delta():
    G, delta = 3, 0.05
    reps = [compute_bounds(_stats(s, K=20 * (s + 1)), split_delta(delta, G)) for s in range(G)]
    best = best_over_grid(reps, delta, G)
    names = {b["name"] for b in best}
    assert names == {"xu_mannor", "kawaguchi", "theorem_n", "theorem_h"}  # holdout_cp is not a grid result
    for b in best:
        vals = [r.value for rep in reps for r in rep.results if r.name == b["name"] and r.value is not None]
        assert b["value"] == min(vals)
        assert b["delta"] == delta and b["delta_per_partition"] == pytest.approx(delta / G) and b["grid_size"] == G
        assert "delta split evenly" in b["note"]


def test_best_over_grid_refuses_reports_at_full_delta():
    reps = [compute_bounds(_stats(s), 0.05) for s in range(2)]
    with pytest.raises(ValueError, match="delta/|G|"):
        best_over_grid(reps, 0.05, 2)


def test_best_over_grid_skips_diagnostic_partitions():
    s = _stats(0)
    bad = SampleStats(**{**{k: getattr(s, k) for k in ("train_cell", "train_loss", "heldout_cell", "heldout_loss",
                                                       "kappas", "train_stable", "K")}, "partition_depends_on_train": True})
    best = best_over_grid([compute_bounds(bad, 0.05)], 0.05, 1)
    assert {b["name"] for b in best} == set()  # every partition-based result is a diagnostic there


def test_median_over_partitions_confidence_and_values():
    R, delta = 5, 0.05
    reps = [compute_bounds(_stats(s), delta) for s in range(R)]
    med = median_over_partitions(reps)
    keys = {(m["name"], m["kappa"]) for m in med}
    assert ("theorem_n", 0.1) in keys and ("than_rob", None) in keys
    for m in med:
        vals = [r.value for rep in reps for r in rep.results if r.name == m["name"] and r.kappa == m["kappa"]]
        assert m["R"] == R and m["median"] == pytest.approx(float(np.median(vals)))
        if m["kind"] == "certified":
            assert m["confidence"] == pytest.approx(1 - 2 * delta) and m["delta"] == pytest.approx(2 * delta)
        else:
            assert m["confidence"] is None and m["delta"] is None and "not a bound" in m["note"]
        assert "mean" not in m


def test_median_counts_null_as_infinite():
    reps = [compute_bounds(_stats(s), 0.05) for s in range(3)]
    for rep in reps[:2]:
        for r in rep.results:
            if r.name == "xu_mannor":
                r.value = None
    med = [m for m in median_over_partitions(reps) if m["name"] == "xu_mannor"]
    assert all(m["median"] is None for m in med)  # two of three infinite: the median is infinite -> null
    reps[1] = compute_bounds(_stats(1), 0.05)
    med = [m for m in median_over_partitions(reps) if m["name"] == "xu_mannor"]
    assert all(m["median"] is not None and math.isfinite(m["median"]) for m in med)


def test_median_needs_one_delta():
    with pytest.raises(UserInputError):
        median_over_partitions([compute_bounds(_stats(0), 0.05), compute_bounds(_stats(1), 0.01)])
    with pytest.raises(UserInputError):
        median_over_partitions([])
