"""Stability on part of the training set (spec/bounds.md §8): the bounds layer.

The hypergeometric limit against brute force, exact equality with the full computation when
every sample is checked, the uniform-subsample diagnostics, the cell-selection semantics
(eps_cert, M_k, unverified = not stable) and the samples.npz record (old files included).
"""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import hypergeom

from genbound.bounds import SampleStats, compute_bounds, load_stats_npz, save_stats_npz
from genbound.bounds.concentration import u_kaw
from genbound.bounds.sampling import hypergeom_upper, point_estimate
from genbound.cli import main
from genbound.errors import UserInputError


# ------------------------------------------------------------------ the hypergeometric limit


def _tail(c: int, n: int, C: int, s: int) -> Fraction:
    """P(X <= c) for X ~ Hypergeometric(population n, C successes, s draws), exactly."""
    return Fraction(sum(math.comb(C, i) * math.comb(n - C, s - i) for i in range(c + 1)), math.comb(n, s))


@pytest.mark.parametrize("delta", [0.05, 0.2, 0.5])
def test_hypergeom_upper_is_the_largest_C_consistent_with_c(delta):
    d = Fraction(str(delta))  # the decimal value the user means
    for n in range(1, 16):
        for s in range(1, n + 1):
            got = hypergeom_upper(np.arange(s + 1), n, s, delta)
            for c in range(s + 1):
                feasible = range(c, n - s + c + 1)
                strict = max(C for C in feasible if _tail(c, n, C, s) > d)
                tie = max(C for C in feasible if _tail(c, n, C, s) >= d)  # floating point may take an exact tie
                assert strict <= got[c] <= tie, (n, s, c, delta)
                if s == n:
                    assert got[c] == c


@pytest.mark.parametrize("delta", [0.05, 0.3])
def test_hypergeom_upper_covers_exactly(delta):
    """P_C(C_U(X) < C) <= delta for every population, computed exactly over the law of X."""
    worst = 0.0
    for n in (5, 12, 30):
        for s in range(1, n + 1):
            lim = hypergeom_upper(np.arange(s + 1), n, s, delta)
            for C in range(n + 1):
                miss = sum(hypergeom.pmf(c, n, C, s) for c in range(s + 1) if lim[c] < C)
                worst = max(worst, miss)
                assert miss <= delta + 1e-12, (n, s, C)
    assert worst > delta / 4  # the limit is not trivially loose


def test_hypergeom_upper_large_population_is_fast_and_sane():
    n, s = 1_281_167, 5_124
    c = np.array([0, 10, 500, 5_124])
    lim = hypergeom_upper(c, n, s, 0.05)
    est = point_estimate(c, n, s)
    assert np.all(lim >= est) and lim[-1] == n and lim[0] > 0
    assert hypergeom.cdf(c[1], n, lim[1], s) > 0.05 >= hypergeom.cdf(c[1], n, lim[1] + 1, s)


def test_hypergeom_upper_rejects_bad_arguments():
    for args in [(0, 10, 0, 0.05), (0, 10, 11, 0.05), (3, 10, 2, 0.05), (0, 10, 5, 0.0)]:
        with pytest.raises(ValueError):
            hypergeom_upper(*args)


# ------------------------------------------------------------------ statistics


def _stats(n=400, J=3, seed=0, **over):
    rng = np.random.default_rng(seed)
    d = dict(train_cell=rng.integers(0, 12, n), train_loss=(rng.random(n) < 0.15).astype(np.uint8),
             train_stable=np.sort(rng.random((n, J)) < 0.7, axis=1)[:, ::-1], kappas=np.linspace(0.01, 0.05, J),
             heldout_cell=rng.integers(0, 12, n // 2), heldout_loss=(rng.random(n // 2) < 0.15).astype(np.uint8),
             K=12, stability_method="pgd", model="m")
    d.update(over)
    return SampleStats(**d)


def _results(report):
    return [r.to_dict() for r in report.results]


@pytest.mark.parametrize("selection", ["uniform", "cells", "all"])
@pytest.mark.parametrize("sound", [False, True])
def test_every_sample_checked_equals_the_full_computation_exactly(selection, sound):
    over = dict(stability_method="exact", stability_sound=True, label_pure=True, max_cell_diameter=0.01) if sound else {}
    rng = np.random.default_rng(3)
    # label-pure proofs need each proven cell to hold one loss value: losses constant per cell
    cells = rng.integers(0, 12, 400)
    loss = (cells % 5 == 0).astype(np.uint8)
    hcells = rng.integers(0, 12, 200)
    hloss = (hcells % 5 == 0).astype(np.uint8)
    full = _stats(train_cell=cells, train_loss=loss, heldout_cell=hcells, heldout_loss=hloss, **over)
    part = _stats(train_cell=cells, train_loss=loss, heldout_cell=hcells, heldout_loss=hloss, **over,
                  train_checked=np.ones(400, bool), selection=selection, selection_seed=7, delta_s=0.01)
    a, b = compute_bounds(full, 0.05), compute_bounds(part, 0.05)
    assert _results(a) == _results(b)
    assert a.notes == b.notes
    for key in ("unstable_fraction", "robust_train_error"):
        assert a.models[0][key] == b.models[0][key]
    assert b.models[0]["stability_checked"] == {"selection": selection, "s": 400, "n": 400, "seed": 7, "delta_s": 0.01}


def _subsampled(n=2000, s=300, seed=1, J=2, **over):
    full = _stats(n=n, J=J, seed=seed, **over)
    idx = np.random.default_rng(99).choice(n, s, replace=False)
    ch = np.zeros(n, bool)
    ch[idx] = True
    sub = SampleStats(**{**_fields(full), "train_stable": full.train_stable & ch[:, None], "train_checked": ch,
                         "selection": "uniform", "selection_seed": 99})
    return full, sub, ch


def _fields(s):
    keys = ("train_cell", "train_loss", "train_stable", "kappas", "heldout_cell", "heldout_loss", "K", "model",
            "stability_method", "stability_sound", "norm", "label_pure", "max_cell_diameter")
    return {k: getattr(s, k) for k in keys}


def test_uniform_subsample_diagnostics_by_hand():
    full, sub, ch = _subsampled()
    n, s = full.n, int(ch.sum())
    rep = compute_bounds(sub, 0.05)
    R = full.train_loss.mean()
    T = len(np.unique(full.train_cell))
    U = u_kaw(T, math.log(12), n, 0.05)
    correct = full.train_loss == 0
    e_cells = {k for k in range(12) if np.any(full.heldout_loss[full.heldout_cell == k] == 1)
               or not np.any(full.heldout_cell == k)}
    in_e = np.isin(full.train_cell, list(e_cells))
    for j, kappa in enumerate(full.kappas):
        unstable = ~full.train_stable[:, j]
        cb = int(np.sum(ch & correct & unstable))
        ca = int(np.sum(ch & correct & unstable & in_e))
        cu = int(np.sum(ch & unstable))
        (b,) = [r for r in rep.select("stability_b") if r.kappa == kappa]
        (a,) = [r for r in rep.select("stability_a") if r.kappa == kappa]
        (c,) = [r for r in rep.select("stability_c") if r.kappa == kappa]
        Cb = int(hypergeom_upper(cb, n, s, 0.05))
        assert b.value == pytest.approx(R + Cb / n + U, rel=1e-12)
        assert b.terms["point_estimate"] == pytest.approx(R + cb * n / s / n + U, rel=1e-12)
        assert b.terms["sampling_term"] == pytest.approx((Cb - cb * n / s) / n, rel=1e-12)
        assert b.terms["delta_s"] == 0.05 and b.terms["s"] == s and b.terms["observed_count"] == cb
        assert a.value == pytest.approx(R + int(hypergeom_upper(ca, n, s, 0.05)) / n + U, rel=1e-12)
        assert b.terms["unstable_fraction"] == pytest.approx(int(hypergeom_upper(cu, n, s, 0.05)) / n)
        assert b.terms["robust_train_error"] == pytest.approx(R + Cb / n)
        assert b.terms["unstable_fraction_estimate"] == pytest.approx(cu / s)
        # stability_c does not read the flags: the full-sample value, no sampling term
        (cf,) = [r for r in compute_bounds(full, 0.05).select("stability_c") if r.kappa == kappa]
        assert c.value == cf.value and "point_estimate" not in c.terms
    meta = rep.models[0]
    assert meta["stability_checked"] == {"selection": "uniform", "s": s, "n": n, "seed": 99, "delta_s": 0.05}
    assert len(meta["unstable_fraction_estimate"]) == full.J
    best = {b["name"]: b for b in meta["best_over_kappa_diagnostic"]}
    assert best["stability_b"]["delta_s"] == pytest.approx(0.05 / full.J)
    # each limit at delta_s / J is at least the per-kappa limit at delta_s
    per_kappa = min(r.value for r in rep.select("stability_b"))
    assert best["stability_b"]["value"] >= per_kappa
    assert "uniform subsample" in rep.table()


def test_uniform_subsample_certified_results_do_not_read_the_flags():
    rng = np.random.default_rng(5)
    cells = rng.integers(0, 6, 500)
    loss = (cells == 0).astype(np.uint8)
    common = dict(train_cell=cells, train_loss=loss, train_stable=np.ones((500, 1), bool), kappas=[0.1], K=6,
                  stability_method="exact", stability_sound=True, label_pure=True, max_cell_diameter=0.1,
                  heldout_cell=np.zeros(0, np.int64), heldout_loss=np.zeros(0, np.uint8))
    proven = compute_bounds(SampleStats(**common), 0.05)
    ch = np.zeros(500, bool)
    ch[::2] = True
    sub = compute_bounds(SampleStats(**{**common, "train_stable": ch[:, None]}, train_checked=ch, selection="uniform"),
                         0.05)
    assert proven.select("theorem_n")[0].terms["proven_cells"] == 5  # cell 0 is misclassified: M_k = 1
    tn = sub.select("theorem_n")[0]
    assert tn.terms["proven_cells"] == 0 and any("uniform subsample" in a for a in tn.assumptions)
    assert sub.select("kawaguchi")[0].terms["robustness"] == 1.0


def test_cell_selection_semantics():
    """Budget spent cell by cell: M_k = 0 only for cells with a proof, eps_cert = 1 unless every
    occupied cell has one, unverified samples count as not stable in the diagnostics."""
    cells = np.repeat(np.arange(4), 5)  # 4 cells of 5 samples
    loss = np.zeros(20, np.uint8)
    ch = np.zeros(20, bool)
    ch[[0, 5, 10]] = True  # one verified sample in cells 0, 1, 2; cell 3 never reached
    st = ch[:, None].copy()
    common = dict(train_cell=cells, train_loss=loss, kappas=[0.1], K=4, stability_method="crown",
                  stability_sound=True, label_pure=True, max_cell_diameter=0.1,
                  heldout_cell=np.arange(4), heldout_loss=np.zeros(4, np.uint8))
    part = SampleStats(**common, train_stable=st, train_checked=ch, selection="cells", selection_seed=3)
    rep = compute_bounds(part, 0.05)
    tn = rep.select("theorem_n")[0]
    assert tn.terms["proven_cells"] == 3 and tn.terms["proven_fraction"] == pytest.approx(15 / 20)
    assert tn.terms["main"] == pytest.approx(5 / 20)
    assert any("cell by cell" in a for a in tn.assumptions)
    assert rep.select("xu_mannor")[0].terms["robustness"] == 1.0
    assert rep.select("kawaguchi")[0].terms["robustness"] == 1.0
    b = rep.select("stability_b")[0]
    assert b.terms["robustness"] == pytest.approx(17 / 20)  # 17 correct samples without a proof
    assert "point_estimate" not in b.terms
    # a proof in the last cell too: eps_cert drops to 0
    ch2 = ch.copy()
    ch2[15] = True
    rep2 = compute_bounds(SampleStats(**common, train_stable=ch2[:, None], train_checked=ch2, selection="cells"), 0.05)
    assert rep2.select("kawaguchi")[0].terms["robustness"] == 0.0
    assert rep2.select("theorem_n")[0].terms["proven_cells"] == 4


def test_partial_flags_are_validated():
    base = dict(train_cell=np.arange(4), train_loss=np.zeros(4, np.uint8), K=4, kappas=[0.1])
    cases = [
        (dict(train_stable=np.ones((4, 1), bool), train_checked=np.array([1, 1, 0, 1], bool), selection="cells"),
         "marks unchecked"),
        (dict(train_stable=np.zeros((4, 1), bool), train_checked=np.array([1, 1, 0, 1], bool)), "say how"),
        (dict(train_stable=np.zeros((4, 1), bool), train_checked=np.ones(3, bool)), "shape"),
        (dict(train_stable=np.zeros((4, 1), bool), train_checked=np.full(4, 2)), "boolean"),
        (dict(train_stable=np.zeros((4, 1), bool), selection="random"), "selection must be one of"),
        (dict(train_stable=np.zeros((4, 1), bool), train_checked=np.zeros(4, bool), selection="uniform"), "at least one"),
        (dict(train_stable=np.zeros((4, 1), bool), train_checked=np.array([1, 0, 1, 1], bool), selection="all"),
         "selection 'all'"),
        (dict(train_stable=np.zeros((4, 1), bool), delta_s=1.0), "delta_s must be in (0, 1)"),
        (dict(train_stable=np.zeros((4, 1), bool), selection_seed=-1), "selection_seed"),
    ]
    for over, msg in cases:
        with pytest.raises(UserInputError, match=None) as e:
            SampleStats(**base, **over)
        assert msg in str(e.value), (over, str(e.value))


# ------------------------------------------------------------------ samples.npz and `genbound bounds`


def test_npz_roundtrip_keeps_the_selection(tmp_path):
    _, sub, _ = _subsampled(n=300, s=50)
    sub = SampleStats(**{**_fields(sub), "train_checked": sub.train_checked, "selection": "uniform",
                         "selection_seed": 99, "delta_s": 0.1})
    save_stats_npz(tmp_path / "s.npz", sub)
    (back,) = load_stats_npz(tmp_path / "s.npz")
    assert np.array_equal(back.train_checked, sub.train_checked)
    assert (back.selection, back.selection_seed, back.delta_s) == ("uniform", 99, 0.1)
    assert _results(compute_bounds(back)) == _results(compute_bounds(sub))


def test_old_npz_without_train_checked_means_all_checked(tmp_path):
    full = _stats()
    f = tmp_path / "old.npz"
    np.savez(f, train_cell=full.train_cell, train_loss=full.train_loss, train_stable=full.train_stable,
             kappas=full.kappas, heldout_cell=full.heldout_cell, heldout_loss=full.heldout_loss, K=np.int64(12),
             model=np.str_("m"), stability_method=np.str_("pgd"))
    (old,) = load_stats_npz(f)
    assert old.train_checked.all() and old.selection == "all" and old.s == old.n
    assert _results(compute_bounds(old)) == _results(compute_bounds(full))


def test_bounds_cli_reads_train_checked(tmp_path, capsys):
    full, sub, ch = _subsampled(n=1000, s=100)
    f = tmp_path / "sub.npz"
    np.savez(f, train_cell=sub.train_cell, train_loss=sub.train_loss, train_stable=sub.train_stable,
             kappas=sub.kappas, heldout_cell=sub.heldout_cell, heldout_loss=sub.heldout_loss, K=np.int64(12),
             train_checked=ch, selection=np.str_("uniform"), selection_seed=np.int64(99), delta_s=np.float64(0.1))
    out = tmp_path / "r.json"
    assert main(["bounds", str(f), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "uniform subsample: s=100 of n=1000" in text and "unstable_fraction_estimate" in text
    doc = json.loads(out.read_text())
    assert doc["models"][0]["stability_checked"] == {"selection": "uniform", "s": 100, "n": 1000, "seed": 99,
                                                     "delta_s": 0.1}
    b = [r for r in doc["results"] if r["name"] == "stability_b"]
    assert all(r["terms"]["delta_s"] == 0.1 and r["terms"]["sampling_term"] > 0 for r in b)
    # and without the selection the same file is refused in one line
    np.savez(f, train_cell=sub.train_cell, train_loss=sub.train_loss, train_stable=sub.train_stable,
             kappas=sub.kappas, K=np.int64(12), train_checked=ch)
    assert main(["bounds", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "selection = 'cells'" in err[0]


# ------------------------------------------------------------------ limits vs the full sample


def test_subsampled_limits_cover_the_full_sample_values():
    """Over many uniform draws of s of n, the subsampled counts' limits (stability_b, stability_a,
    unstable_fraction) are >= their full-sample values in at least 1 - delta_s of draws per kappa
    (simulated population); and the values built on them likewise (checked on a few draws)."""
    from genbound.bounds.counts import count_cells
    from genbound.bounds.diagnostic import flag_counts

    full = _stats(n=600, J=2, seed=11)
    truth = flag_counts(full, count_cells(full), 0.05).limit
    rng = np.random.default_rng(0)
    draws, s = 300, 60
    fails = {k: np.zeros(full.J, int) for k in truth}
    for r in range(draws):
        ch = np.zeros(full.n, bool)
        ch[rng.choice(full.n, s, replace=False)] = True
        sub = SampleStats(**{**_fields(full), "train_stable": full.train_stable & ch[:, None]}, train_checked=ch,
                          selection="uniform", delta_s=0.05)
        lim = flag_counts(sub, count_cells(sub), sub.delta_s).limit
        for k in truth:
            fails[k] += lim[k] < truth[k]
        if r < 3:  # the value moves with its count: same R_S and U_kaw on both sides
            ref = [x.value for x in compute_bounds(full, 0.05).select("stability_b")]
            got = [x.value for x in compute_bounds(sub, 0.05).select("stability_b")]
            assert [g >= f for g, f in zip(got, ref)] == list(lim["b"] >= truth["b"])
    bound = 0.05 + 3 * math.sqrt(0.05 * 0.95 / draws)  # delta_s per kappa, plus the binomial noise of the draws
    for k, f in fails.items():
        assert np.all(f / draws <= bound), (k, f)
