"""Stability on part of the training set (spec §8), torch side: the uniform subsample of empirical
methods, the sound verifier's budget spent cell by cell, and both through `evaluate`."""

import json

import numpy as np
import pytest

from genbound.bounds import compute_bounds, load_stats_npz
from genbound.bounds.counts import count_cells
from genbound.config import Config
from genbound.data import TensorSource
from genbound.data.lowdim import sample_lowdim
from genbound.models import mlp, train_classifier
from genbound.pipeline import evaluate
from genbound.stability.selection import BudgetPlan, spend_budget, subsample_size, uniform_subsample

# ------------------------------------------------------------------ selections (numpy only)


def test_uniform_subsample_is_seeded_sorted_and_sized():
    a = uniform_subsample(1000, 100, seed=3)
    assert a.size == 100 and np.all(np.diff(a) > 0) and a.max() < 1000
    assert np.array_equal(a, uniform_subsample(1000, 100, seed=3))
    assert not np.array_equal(a, uniform_subsample(1000, 100, seed=4))
    assert subsample_size(1000, 0.1) == 100 and subsample_size(1000, 0.0001) == 1 and subsample_size(10, 50) == 10
    assert uniform_subsample(10, 1.0, seed=0).tolist() == list(range(10))


def _cells():
    # cell 7: 5 samples, cell 2: 3 samples, cell 9: 3 samples (ties: smaller id first), cell 0: 1 sample
    return np.array([7, 2, 7, 9, 0, 7, 2, 9, 7, 9, 2, 7])


def test_budget_order_largest_cell_first_round_robin_seeded_within_cells():
    cells = _cells()
    plan = BudgetPlan(cells, seed=1, budget=100)
    assert plan.cell_ids.tolist() == [7, 2, 9, 0]
    seen = []
    while True:
        idx = plan.next_round()
        if idx.size == 0:
            break
        seen.append(idx)
        plan.record(idx, np.zeros((idx.size, 1), bool))  # nothing proven: every cell stays open
    assert [cells[r].tolist() for r in seen] == [[7, 2, 9, 0], [7, 2, 9], [7, 2, 9], [7], [7]]
    within = [np.concatenate(seen)[cells[np.concatenate(seen)] == c] for c in (7, 2, 9)]
    assert sorted(np.concatenate(seen).tolist()) == list(range(12))  # every sample once
    other = BudgetPlan(cells, seed=2, budget=100)
    order2 = np.concatenate([other.next_round() for _ in range(5)])
    assert any(not np.array_equal(w, order2[cells[order2] == c]) for w, c in zip(within, (7, 2, 9)))


def test_budget_stops_a_cell_at_its_first_proof_and_respects_the_budget():
    cells = _cells()
    provable = np.zeros((12, 2), bool)
    provable[:, 0] = True  # everything is stable at the small kappa
    provable[[2, 6], 1] = True  # at the large kappa only samples 2 (cell 7) and 6 (cell 2)
    calls = []

    def verify(idx):
        calls.append(idx.copy())
        return provable[idx]

    checked, stable = spend_budget(BudgetPlan(cells, seed=0, budget=100, close_at=0), verify, 2)
    assert checked.sum() == 4 and sorted(cells[checked].tolist()) == [0, 2, 7, 9]  # one proof per cell, then stop
    assert len(calls) == 1
    # closing at the large kappa: cells keep being tried until a proof there (or they run out)
    checked, stable = spend_budget(BudgetPlan(cells, seed=0, budget=100, close_at=1), verify, 2)
    for c in (7, 2):
        tried = np.flatnonzero(checked & (cells == c))
        assert stable[tried, 1].sum() == 1  # stopped at the first proof at kappa 1
    assert checked[cells == 9].all() and checked[cells == 0].all()  # never proven there: exhausted
    assert np.array_equal(stable, provable & checked[:, None])
    # a budget smaller than the occupied cells reaches only the largest ones
    checked, _ = spend_budget(BudgetPlan(cells, seed=0, budget=2), verify, 2)
    assert sorted(cells[checked].tolist()) == [2, 7]


# ------------------------------------------------------------------ through evaluate


@pytest.fixture(scope="module")
def digits(digits_mlp):
    return digits_mlp


CFG = dict(kappas=(0.02, 0.1), K=(5, 20), stability="pgd", pgd_steps=3, progress=False)


def test_uniform_sample_flags_equal_the_full_run_on_the_subsample(digits, tmp_path):
    model, train, held = digits
    full = evaluate({"m": model}, train, held, Config(**CFG))
    sub = evaluate({"m": model}, train, held, Config(**CFG, stability_sample=60, stability_seed=0, delta_s=0.1),
                   cache_dir=str(tmp_path / "cache"))
    idx = uniform_subsample(300, 60, 0)
    for f, s in zip(full.stats, sub.stats):
        assert s.selection == "uniform" and s.s == 60 and s.delta_s == 0.1 and s.selection_seed == 0
        assert np.array_equal(s.train_checked, np.isin(np.arange(300), idx))
        assert np.array_equal(s.train_stable[idx], f.train_stable[idx]) and not s.train_stable[~s.train_checked].any()
        assert np.array_equal(s.train_loss, f.train_loss) and np.array_equal(s.train_cell, f.train_cell)
    b = sub.report.select("stability_b")
    assert all(r.terms["s"] == 60 and r.terms["delta_s"] == 0.1 and r.value >= r.terms["point_estimate"] for r in b)
    assert sub.records["stability"]["m"]["selection"]["kind"] == "uniform"
    # certified results never read the subsampled flags (pgd proves nothing anyway): identical to the full run
    cert = lambda ev: [(r.name, r.kappa, r.K, r.value) for r in ev.report.results if r.kind == "certified"]  # noqa: E731
    assert cert(full) == cert(sub)
    # the file records the selection, and `genbound bounds` reads it back to the same numbers
    paths = sub.save(tmp_path / "run", report=False)
    back = load_stats_npz(paths["samples"])
    assert all(np.array_equal(x.train_checked, s.train_checked) and x.selection == "uniform" for x, s in zip(back, sub.stats))
    assert [r.to_dict() for r in compute_bounds(back[0]).results] == [r.to_dict() for r in compute_bounds(sub.stats[0]).results]
    # a rerun reuses the cached subsample flags; another sample size is another cache entry
    again = evaluate({"m": model}, train, held, Config(**CFG, stability_sample=60, stability_seed=0, delta_s=0.1),
                     cache_dir=str(tmp_path / "cache"))
    assert np.array_equal(again.stats[0].train_stable, sub.stats[0].train_stable)
    evaluate({"m": model}, train, held, Config(**CFG, stability_sample=30), cache_dir=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("stability-m-*.npz"))) == 2


def test_uniform_sample_of_everything_equals_the_full_computation(digits):
    model, train, held = digits
    full = evaluate({"m": model}, train, held, Config(**CFG))
    every = evaluate({"m": model}, train, held, Config(**CFG, stability_sample=1.0))
    assert all(s.selection == "uniform" and s.s == s.n for s in every.stats)
    assert [r.to_dict() for r in full.report.results] == [r.to_dict() for r in every.report.results]


def _circle():
    x, y, _ = sample_lowdim(1500, 2, "circle", 0.05, 0)
    hx, hy, _ = sample_lowdim(500, 2, "circle", 0.05, 1)
    model = mlp(input_shape=[2], num_classes=2, hidden=(16, 16), seed=0).eval()
    train = TensorSource(x, y, name="circle", num_classes=2)
    train_classifier(model, train, epochs=3, batch_size=128, lr=1e-2, seed=0, progress_bar=False)
    return model.eval(), train, TensorSource(hx, hy, name="circle-ho", num_classes=2)


def test_sound_budget_on_kappa_fine_grids_proves_only_what_it_verified():
    model, train, held = _circle()
    kappas = (0.05, 0.1)
    base = dict(kappas=kappas, partition="grid", stability="crown", batch_size=512, progress=False)
    full = evaluate({"c": model}, train, held, Config(**base))
    ev = evaluate({"c": model}, train, held, Config(**base, stability_budget=150, stability_seed=1))
    sel = ev.records["stability"]["c"]["selection"]
    assert sel["kind"] == "cells" and sel["spent"] <= 150 and sel["partition"] == "grid:0.05"
    for s, f in zip(ev.stats, full.stats):
        assert s.selection == "cells" and s.s == sel["spent"]
        assert np.array_equal(s.train_stable, f.train_stable & s.train_checked[:, None])  # flags where verified only
        # M_k = 0 exactly for the cells of THIS grid holding a verified, correct, proven sample
        tn = compute_bounds(s).select("theorem_n")[0]
        c = count_cells(s)
        assert tn.terms["proven_cells"] == int(np.sum(c.stable_ok[:, 0] > 0))
        proven_ids = {int(k) for k in np.unique(s.train_cell[s.train_stable[:, 0] & (s.train_loss == 0)])}
        assert tn.terms["proven_cells"] == len(proven_ids)
        full_tn = compute_bounds(f).select("theorem_n")[0]
        assert tn.terms["proven_cells"] <= full_tn.terms["proven_cells"]
        # no partial run proves every occupied cell with 150 of 1500 samples here: eps_cert stays 1
        if s.s < len(np.unique(s.train_cell)):
            assert compute_bounds(s).select("kawaguchi")[0].terms["robustness"] == 1.0
    # the finest grid orders the budget: each of its cells holds at most one proof at its kappa
    fine = ev.stats[0]
    proofs = np.bincount(fine.train_cell[fine.train_stable[:, 0]])
    assert proofs.max() <= 1 and 0 < compute_bounds(fine).select("theorem_n")[0].terms["proven_cells"]
    assert fine.s == 150 < fine.n
    # a budget that reaches every cell proves, on the finest grid, exactly the cells the full run proves
    # (one proof per cell is all theorem_n needs), with far fewer verifier calls
    big = evaluate({"c": model}, train, held, Config(**base, stability_budget=10**6))
    a, b = compute_bounds(big.stats[0]).select("theorem_n")[0], compute_bounds(full.stats[0]).select("theorem_n")[0]
    assert a.terms["proven_cells"] == b.terms["proven_cells"] and a.value == b.value
    assert big.stats[0].s < big.stats[0].n


def test_sound_budget_record_in_the_result_file(tmp_path):
    model, train, held = _circle()
    ev = evaluate({"c": model}, train, held, Config(kappas=(0.1,), K=(4, 16), stability="ibp", stability_budget=40,
                                                     progress=False, batch_size=512))
    sel = ev.records["stability"]["c"]["selection"]
    assert sel["partition"] == "16" and sel["spent"] <= 40 and sel["close_at_kappa"] == 0.1
    paths = ev.save(tmp_path / "run", report=False)
    doc = json.loads(open(paths["result"]).read())
    assert doc["models"][0]["stability_checked"]["selection"] == "cells"
    assert doc["config"]["stability_budget"] == 40
    assert all(s.s == sel["spent"] for s in load_stats_npz(paths["samples"]))
