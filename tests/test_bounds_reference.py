"""genbound.bounds against the independent plain implementation in reference_bounds.py."""

import math

import numpy as np
import pytest

from genbound.bounds import SampleStats, compute_bounds
from tests.reference_bounds import reference
from tests.conftest import make_stats_arrays


def _compare(report, ref, rel=1e-9):
    got = {}
    for r in report.results:
        got.setdefault(r.name, []).append((r.kappa, r.value))
    assert set(got) == set(ref), (set(got) ^ set(ref))
    for name, pairs in ref.items():
        assert len(got[name]) == len(pairs), name
        for (k1, v1), (k2, v2) in zip(sorted(got[name], key=lambda p: p[0] or 0), sorted(pairs, key=lambda p: p[0] or 0)):
            assert (k1 is None) == (k2 is None)
            if k1 is not None:
                assert k1 == pytest.approx(k2)
            assert v1 == pytest.approx(v2, rel=rel, abs=1e-12), (name, k1, v1, v2)


CASES = [
    # n, m, K, J, sound, label_pure, diam_index
    (300, 120, 7, 3, False, False, None),
    (300, 0, 7, 3, False, False, None),
    (200, 90, 500, 4, False, False, None),   # K >> n: many empty cells
    (400, 150, 20, 4, True, True, 1),        # sound stability on kappa-fine label-pure cells
    (400, 0, 20, 4, True, True, 0),
    (250, 60, 30, 0, False, False, None),    # no stability flags
    (500, 200, 3, 2, True, True, None),      # sound but diameter unknown: nothing proven
]


@pytest.mark.parametrize("n,m,K,J,sound,pure,diam_j", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(n, m, K, J, sound, pure, diam_j, seed):
    rng = np.random.default_rng(seed)
    a = make_stats_arrays(rng, n, m, K, J, consistent_cells=sound)
    diam = None if diam_j is None else float(a["kappas"][diam_j])
    stats = SampleStats(**a, K=K, stability_method="ibp" if sound else "pgd", stability_sound=sound,
                        label_pure=pure, max_cell_diameter=diam)
    for delta in (0.05, 0.01):
        rep = compute_bounds(stats, delta)
        ref = reference(a["train_cell"].tolist(), a["train_loss"].tolist(), a["train_stable"].tolist(),
                        a["kappas"].tolist(), a["heldout_cell"].tolist(), a["heldout_loss"].tolist(), K, delta,
                        sound=sound, label_pure=pure, diam=diam)
        _compare(rep, ref)


def test_sound_case_proves_cells():
    rng = np.random.default_rng(7)
    a = make_stats_arrays(rng, 400, 100, 20, 4, consistent_cells=True)
    stats = SampleStats(**a, K=20, stability_method="crown", stability_sound=True, label_pure=True,
                        max_cell_diameter=float(a["kappas"][0]))
    rep = compute_bounds(stats)
    proven = [r.terms["proven_cells"] for r in rep.select("theorem_n")]
    assert max(proven) > 0, "the test data must exercise proven cells"


def test_non_monotone_flags_use_each_column(rng):
    a = make_stats_arrays(rng, 300, 80, 10, 5, monotone=False)
    stats = SampleStats(**a, K=10)
    rep = compute_bounds(stats)
    ref = reference(a["train_cell"].tolist(), a["train_loss"].tolist(), a["train_stable"].tolist(),
                    a["kappas"].tolist(), a["heldout_cell"].tolist(), a["heldout_loss"].tolist(), 10, 0.05)
    _compare(rep, ref)
    assert any("not monotone" in n for n in rep.notes)


@pytest.mark.parametrize("J", [1, 2, 3, 5, 8, 9, 12])
def test_stability_width_paths_agree(J):
    """The packed-word fast path (J <= 8) and the generic path (J > 8) agree with the reference."""
    rng = np.random.default_rng(J)
    a = make_stats_arrays(rng, 200, 50, 9, J)
    rep = compute_bounds(SampleStats(**a, K=9))
    ref = reference(a["train_cell"].tolist(), a["train_loss"].tolist(), a["train_stable"].tolist(),
                    a["kappas"].tolist(), a["heldout_cell"].tolist(), a["heldout_loss"].tolist(), 9, 0.05)
    _compare(rep, ref)


def test_sparse_cell_labels_relabelled(rng):
    """Cell ids need not be < K: huge or negative labels give the same numbers as compact ones."""
    a = make_stats_arrays(rng, 300, 100, 12, 3)
    big = dict(a)
    mapping = rng.permutation(12).astype(np.int64) * 10**15 - 5 * 10**15
    big["train_cell"], big["heldout_cell"] = mapping[a["train_cell"]], mapping[a["heldout_cell"]]
    r1 = compute_bounds(SampleStats(**a, K=12))
    r2 = compute_bounds(SampleStats(**big, K=12))
    assert [r.value for r in r1.results] == pytest.approx([r.value for r in r2.results], rel=1e-12)


def test_unsorted_kappas_are_sorted_with_their_columns(rng):
    a = make_stats_arrays(rng, 200, 50, 6, 4)
    perm = np.array([2, 0, 3, 1])
    shuffled = dict(a, kappas=a["kappas"][perm], train_stable=a["train_stable"][:, perm])
    r1, r2 = compute_bounds(SampleStats(**a, K=6)), compute_bounds(SampleStats(**shuffled, K=6))
    assert [(r.name, r.kappa, r.value) for r in r1.results] == [(r.name, r.kappa, r.value) for r in r2.results]


def test_log_K_equals_K(rng):
    a = make_stats_arrays(rng, 200, 50, 6, 2)
    r1 = compute_bounds(SampleStats(**a, K=600))
    r2 = compute_bounds(SampleStats(**a, log_K=math.log(600)))
    for x, y in zip(r1.results, r2.results):
        assert x.value == pytest.approx(y.value, rel=1e-9)


def _theorem_n_brute(tc, tl, st_col, K, delta, provable):
    """N1, N2, N3 evaluated per sample and per cell id 0..K-1 (empty cells included explicitly)."""
    n = len(tc)
    L = math.log(3 * K / delta)
    M = [1] * K
    if provable:
        for i in range(n):
            if st_col[i] and tl[i] == 0:
                M[tc[i]] = 0
    nk = [0] * K
    for c in tc:
        nk[c] += 1
    N1 = N2 = N3 = 0.0
    for i in range(n):  # the main term as a per-sample average
        N2 += M[tc[i]] / n
    N3 = N2 + 0.5 * math.sqrt((2 * K * math.log(2) + 2 * math.log(3 / delta)) / n)
    for k in range(K):
        if nk[k] == 0:
            N1 += 2 * L / n
        else:
            N1 += M[k] * (nk[k] / n + math.sqrt(2 * nk[k] * L) / n + 2 * L / n)
            if M[k] == 0:
                N2 += math.sqrt(2 * nk[k] * L) / n + 2 * L / (3 * n)
    return N1, N2, N3


@pytest.mark.parametrize("seed", range(5))
def test_theorem_n_forms_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    K = int(rng.integers(2, 60))
    a = make_stats_arrays(rng, int(rng.integers(5, 400)), 40, K, 3, consistent_cells=True)
    stats = SampleStats(**a, K=K, stability_method="exact", stability_sound=True, label_pure=True,
                        max_cell_diameter=float(a["kappas"][0]))
    for r, j in zip(sorted(compute_bounds(stats, 0.02).select("theorem_n"), key=lambda r: r.kappa), range(3)):
        col = a["train_stable"][:, j].tolist()
        N = _theorem_n_brute(a["train_cell"].tolist(), a["train_loss"].tolist(), col, K, 0.02, True)
        assert (r.terms["N1"], r.terms["N2"], r.terms["N3"]) == pytest.approx(N, rel=1e-10)
