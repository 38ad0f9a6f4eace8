"""Every formula against hand-computed values and the published magnitudes of background §3.1."""

import json
import math

import numpy as np
import pytest

from genbound.bounds import SampleStats, clopper_pearson_upper, compute_bounds, u_g, u_kaw, u_m, u_xm

LN2 = math.log(2)


def test_concentration_terms_imagenet_magnitudes():
    """background-bounds.md §3.1 (n = 1,281,167, delta = 0.05, |T| = K)."""
    n = 1_281_167
    for K, xm, kaw, lm in [(100, 0.0106, 0.0627, 0.0737), (1000, 0.0330, 0.2361, 0.2793), (10000, 0.1040, 0.9674, 1.1660)]:
        assert u_xm(math.log(K), n, 0.05) == pytest.approx(xm, abs=6e-5)
        assert u_kaw(K, math.log(K), n, 0.05) == pytest.approx(kaw, abs=6e-5)
        # Lemma M with every a_k = a_o = 1 and balanced cells reaches its closed-form upper line.
        L = math.log(2 * K / 0.05)
        closed = 2 * math.sqrt(2) * math.sqrt(K * L / n) + 8 / 3 * K * L / n
        assert closed == pytest.approx(lm, abs=6e-5)
        nk = np.full(K, n / K)
        assert u_m(nk, np.ones(K), 1.0, math.log(K), n, 0.05) == pytest.approx(closed, rel=1e-12)


def test_concentration_terms_by_hand():
    n, K, d = 100, 4, 0.1
    assert u_xm(math.log(K), n, d) == pytest.approx(math.sqrt((8 * LN2 + 2 * math.log(10)) / 100))
    L = math.log(80)
    assert u_kaw(3, math.log(K), n, d) == pytest.approx((math.sqrt(2) + 1) * math.sqrt(3 * L / 100) + 6 * L / 100)
    nk, a = np.array([50.0, 30.0, 20.0]), np.array([0.1, 0.5, 0.0])
    g = math.sqrt(L) / 100 * sum(math.sqrt(x) * (0.7 + math.sqrt(2) * y) for x, y in zip(nk, a)) + 2 * L / 100 * (0.7 * 3 + 0.6)
    assert u_g(nk, a, 0.7, math.log(K), n, d) == pytest.approx(g)
    mm = math.sqrt(2 * L) / 100 * sum(math.sqrt(x) * (y + 0.7) for x, y in zip(nk, a)) + L / 100 * (2 * 0.6 + 2 / 3 * 0.7 * 3)
    assert u_m(nk, a, 0.7, math.log(K), n, d) == pytest.approx(mm)


def test_clopper_pearson():
    # e = 0: closed form 1 - alpha^(1/m)
    assert float(clopper_pearson_upper(0, 50, 0.05)) == pytest.approx(1 - 0.05 ** (1 / 50))
    assert float(clopper_pearson_upper(5, 5, 0.05)) == 1.0
    assert float(clopper_pearson_upper(0, 0, 0.05)) == 1.0
    # background §9: ResNet-50 V1, 23.870 % of 50,000 -> 24.19 % at delta = 0.05
    assert float(clopper_pearson_upper(11935, 50000, 0.05)) == pytest.approx(0.2419, abs=5e-5)
    # tiny alpha keeps precision (delta / 2K with K = 1e30)
    v = float(clopper_pearson_upper(0, 10, 0.05 / 2e30))
    assert v == pytest.approx(1 - (0.05 / 2e30) ** 0.1, rel=1e-9)


def _tiny():
    # 2 cells (K = 3, one empty), 4 training samples, 2 held-out samples, one kappa.
    return dict(
        train_cell=np.array([0, 0, 1, 1]), train_loss=np.array([0, 1, 0, 0], np.uint8),
        train_stable=np.array([[True], [False], [True], [False]]), kappas=np.array([0.1]),
        heldout_cell=np.array([0, 1]), heldout_loss=np.array([1, 0], np.uint8), K=3,
    )


def test_tiny_example_by_hand():
    d = 0.1
    rep = compute_bounds(SampleStats(**_tiny()), d)
    v = {r.name: r.value for r in rep.results}
    n, R, T = 4, 0.25, 2
    L = math.log(2 * 3 / d)
    Ukaw = (math.sqrt(2) + 1) * math.sqrt(T * L / n) + 2 * T * L / n
    assert v["holdout_cp"] == pytest.approx(1 - d ** 0.5 if False else float(clopper_pearson_upper(1, 2, d)))
    assert v["xu_mannor"] == pytest.approx(R + 1 + math.sqrt((6 * LN2 + 2 * math.log(10)) / 4))
    assert v["kawaguchi"] == pytest.approx(R + 1 + Ukaw)
    L1 = math.log(3 * 3 / d)
    N1 = sum(nk / 4 + math.sqrt(2 * nk * L1) / 4 + 2 * L1 / 4 for nk in (2, 2)) + 1 * 2 * L1 / 4
    N3 = 1 + 0.5 * math.sqrt((6 * LN2 + 2 * math.log(3 / d)) / 4)
    assert v["theorem_n"] == pytest.approx(min(N1, 1.0, N3))
    # Than: both cells kept, w = (1/2, 1/2). Cell 0: train {0,1}, held-out {1}: eps 1, sig 1/2, avg 2/3.
    # Cell 1: train {0,0}, held-out {0}: eps 0, sig 0, avg 0.
    assert v["than_rob"] == pytest.approx(R + 1 + Ukaw)
    assert v["than_localrob"] == pytest.approx(R + 0.5 + Ukaw)
    assert v["than_localsen"] == pytest.approx(R + 0.25 + Ukaw)
    a, ao = np.array([2 / 3, 0.0]), 2 / 3
    assert v["than_localavg"] == pytest.approx(1 / 3 + u_g(np.array([2.0, 2.0]), a, ao, math.log(3), 4, d))
    # Stability: correct & unstable = sample 3 (cell 1). e_0 = 1 (held-out error), e_1 = 0.
    assert v["stability_b"] == pytest.approx(R + 0.25 + Ukaw)
    assert v["stability_a"] == pytest.approx(R + 0.0 + Ukaw)
    # correct & stable: sample 0 (cell 0, e = 1) and sample 2 (cell 1, e = 0)
    assert v["stability_c"] == pytest.approx(R + Ukaw + 0.25)
    # theorem_h: A_0 = CP(1 of 1) = 1, A_1 = CP(0 of 1 at delta/(2K)) = 1 - delta/6
    A = np.array([1.0, 1 - d / 6])
    assert v["theorem_h"] == pytest.approx(0.5 * A.sum() + u_m(np.array([2.0, 2.0]), A, 1.0, math.log(3), 4, d / 2))


def test_theorem_n_with_proven_cells_by_hand():
    # kappa-fine label-pure cells, sound stability: cell 0 holds a correct proven sample.
    s = SampleStats(
        train_cell=np.array([0, 0, 1, 2]), train_loss=np.array([0, 0, 0, 1], np.uint8),
        train_stable=np.array([[True], [False], [False], [False]]), kappas=np.array([0.1]), K=10,
        stability_method="exact", stability_sound=True, label_pure=True, max_cell_diameter=0.1,
    )
    d = 0.05
    r = compute_bounds(s, d).select("theorem_n")[0]
    L = math.log(30 / d)
    N1 = (1 / 4 + math.sqrt(2 * L) / 4 + 2 * L / 4) * 2 + 7 * 2 * L / 4
    N2 = 0.5 + math.sqrt(2 * 2 * L) / 4 + 2 * L / 12
    N3 = 0.5 + 0.5 * math.sqrt((20 * LN2 + 2 * math.log(3 / d)) / 4)
    assert r.terms["N1"] == pytest.approx(N1) and r.terms["N2"] == pytest.approx(N2) and r.terms["N3"] == pytest.approx(N3)
    assert r.value == pytest.approx(min(N1, N2, N3))
    assert r.terms["proven_cells"] == 1 and r.terms["main"] == pytest.approx(0.5)
    # eps_cert: cells 1 and 2 hold no proven sample -> 1
    assert compute_bounds(s, d).select("xu_mannor")[0].terms["robustness"] == 1.0


def test_eps_cert_zero_when_every_cell_proven():
    s = SampleStats(
        train_cell=np.array([0, 0, 1]), train_loss=np.array([0, 0, 1], np.uint8),
        train_stable=np.array([[True], [False], [True]]), kappas=np.array([0.2]), K=4,
        stability_method="ibp", stability_sound=True, label_pure=True, max_cell_diameter=0.2,
    )
    rep = compute_bounds(s)
    assert rep.select("xu_mannor")[0].terms["robustness"] == 0.0
    assert rep.select("kawaguchi")[0].terms["robustness"] == 0.0


def test_unsound_or_coarse_never_proves(rng):
    base = dict(
        train_cell=np.array([0, 0, 1]), train_loss=np.array([0, 0, 0], np.uint8),
        train_stable=np.array([[True], [True], [True]]), kappas=np.array([0.2]), K=4, label_pure=True,
    )
    for kw in (dict(stability_method="pgd"), dict(stability_method="ibp", stability_sound=True, max_cell_diameter=0.3),
               dict(stability_method="ibp", stability_sound=True)):
        r = compute_bounds(SampleStats(**base, **{"max_cell_diameter": 0.1, **kw})).select("theorem_n")[0]
        if kw.get("stability_method") == "pgd" or kw.get("max_cell_diameter") == 0.3:
            assert r.terms["proven_cells"] == 0 and r.terms["main"] == 1.0


def test_astronomical_K_in_log_space(rng):
    """log_K = 5e5 (a kappa-fine grid on ImageNet-sized inputs): N2 stays finite, linear-in-K terms are null."""
    s = SampleStats(train_cell=np.arange(50), train_loss=np.zeros(50, np.uint8), train_stable=np.ones((50, 1), bool),
                    kappas=np.array([4 / 255]), log_K=5.2e5, heldout_cell=np.arange(10), heldout_loss=np.zeros(10, np.uint8),
                    stability_method="crown", stability_sound=True, label_pure=True, max_cell_diameter=4 / 255)
    rep = compute_bounds(s)
    xm = rep.select("xu_mannor")[0]
    assert xm.value is None and any("not finite" in a for a in xm.assumptions)
    tn = rep.select("theorem_n")[0]
    assert tn.terms["proven_cells"] == 50 and tn.terms["main"] == 0.0
    assert tn.value == pytest.approx(tn.terms["N2"]) and tn.value > 1e4  # vacuous, shown as it is, never clipped
    assert tn.terms["N1"] == math.inf and tn.to_dict()["terms"]["N1"] is None
    assert rep.select("kawaguchi")[0].value > 1e4
    assert rep.select("theorem_h")[0].value is not None
    json.loads(rep.to_json())  # no NaN/inf leak into JSON
    assert rep.models[0]["K"] is None and rep.models[0]["log_K"] == 5.2e5


def test_result_schema_fields(rng):
    from tests.conftest import make_stats_arrays
    a = make_stats_arrays(rng, 100, 30, 5, 2)
    doc = json.loads(compute_bounds(SampleStats(**a, K=5, model="m1")).to_json())
    assert doc["schema"] == "genbound.result/1"
    for r in doc["results"]:
        assert set(r) == {"model", "name", "kind", "value", "delta", "kappa", "K", "log_K", "heldout_error",
                          "covers", "terms", "assumptions"}
        assert r["kind"] in ("certified", "diagnostic") and r["assumptions"]
        if r["name"] in ("holdout_cp", "theorem_h") or r["name"].startswith("than_"):
            assert r["kappa"] is None
        else:
            assert r["kappa"] is not None
        assert r["covers"] == (r["value"] >= r["heldout_error"])
    kinds = {r["name"]: r["kind"] for r in doc["results"]}
    assert {k for k, v in kinds.items() if v == "certified"} == {"holdout_cp", "xu_mannor", "kawaguchi", "theorem_n", "theorem_h"}


def test_partition_violations_downgrade_to_diagnostic(rng):
    from tests.conftest import make_stats_arrays
    a = make_stats_arrays(rng, 100, 30, 5, 2)
    rep = compute_bounds(SampleStats(**a, K=5, partition_depends_on_train=True))
    kinds = {r.name: r.kind for r in rep.results}
    assert kinds["holdout_cp"] == "certified"
    assert all(kinds[n] == "diagnostic" for n in ("xu_mannor", "kawaguchi", "theorem_n", "theorem_h"))
    rep = compute_bounds(SampleStats(**a, K=5, partition_uses_heldout=True))
    kinds = {r.name: r.kind for r in rep.results}
    assert kinds["theorem_h"] == "diagnostic" and kinds["theorem_n"] == "certified"


def test_no_heldout_omits_with_note(rng):
    from tests.conftest import make_stats_arrays
    a = make_stats_arrays(rng, 100, 0, 5, 2)
    rep = compute_bounds(SampleStats(**a, K=5))
    names = {r.name for r in rep.results}
    assert names == {"xu_mannor", "kawaguchi", "theorem_n", "stability_b"}
    assert any("no held-out data" in n for n in rep.notes)
    assert all(r.covers is None and r.heldout_error is None for r in rep.results)


def test_table_marks_non_covering_values(rng):
    from tests.conftest import make_stats_arrays
    a = make_stats_arrays(rng, 2000, 500, 4, 2, err=0.0, herr=0.3)
    text = compute_bounds(SampleStats(**a, K=4)).table()
    assert "holdout_cp" in text and "certified" in text and "diagnostic" in text
    assert "!" in text  # than_localavg falls below the held-out error here


def test_sound_flag_without_method_is_a_recorded_declaration():
    s = SampleStats(train_cell=np.array([0, 0, 1]), train_loss=np.array([0, 0, 1], np.uint8),
                    train_stable=np.array([[True], [False], [True]]), kappas=np.array([0.1]), K=4,
                    stability_sound=True, label_pure=True, max_cell_diameter=0.1)
    assert s.stability_method.startswith("declared sound")
    assert compute_bounds(s).select("theorem_n")[0].terms["proven_cells"] == 1
