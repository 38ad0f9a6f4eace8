"""Study certified-lowdim at tiny scale, the coverage and memorization checks, and their CLI errors."""

import json

import numpy as np
import pytest

from genbound.checks.coverage import CoverageTask, clopper_pearson_interval, one_draw, run_coverage
from genbound.cli import main
from genbound.data.tabular import apply_range, fit_range, load_tabular, three_way_split
from genbound.studies.certified_lowdim import StudyResult, TaskSpec, run_task


def test_tiny_lowdim_task_proves_cells_and_theorem_n_below_half(tmp_path):
    spec = TaskSpec("circle-2d", "synthetic", (0.05, 0.1), d=2, rule="circle", n=20_000, m=5_000, epochs=3,
                    fresh=50_000)
    t = run_task(spec, delta=0.05, progress=False)
    tn = [r for r in t.bounds.report.results if r.name == "theorem_n"]
    assert all(r.kind == "certified" and r.delta == pytest.approx(0.025) for r in tn)  # delta split over 2 grids
    best = min(r.value for r in tn)
    assert best < 0.5, best
    assert best >= t.true_error["high"]  # a bound above the true error of this draw
    row = t.row(0.05)
    assert row["K"] == 800 and row["proven_fraction"] > 0.5
    assert {"holdout_cp", "xu_mannor", "kawaguchi", "theorem_h"} <= set(row)
    res = StudyResult([t], 0.05, True)
    assert res.check()["passed"]
    paths = res.save(str(tmp_path))
    page = open(paths["html"], encoding="utf-8").read()
    assert 'data-model="circle-2d"' in page and "theorem_n" in page
    doc = json.loads(open(paths["result"]).read())
    assert doc["schema"] == "genbound.result/1" and {m["model"] for m in doc["models"]} == {"circle-2d"}
    assert doc["delta_accounting"]["circle-2d"]["delta_per_partition"] == pytest.approx(0.025)
    for r in doc["results"]:
        assert set(r) >= {"model", "name", "kind", "value", "delta", "kappa", "K", "log_K", "heldout_error", "covers",
                          "terms", "assumptions"}
    assert "theorem_n" in res.table() and "CHECK passed" in res.table()


def test_tabular_range_comes_from_the_disjoint_split_only():
    X, Y, C = load_tabular("iris")
    sc, tr, ho = three_way_split(Y, (0.2, 0.6, 0.2), 0)
    assert not (set(sc) & set(tr)) and not (set(tr) & set(ho)) and len(sc) + len(tr) + len(ho) == len(Y)
    lo, hi = fit_range(X[sc])
    X2 = X.copy()
    X2[tr] *= 3.0  # the training rows do not move the range
    assert np.array_equal(fit_range(X2[sc])[0], lo)
    z = apply_range(X[tr], lo, hi)
    assert z.min() >= 0 and z.max() <= 1 and z.dtype == np.float32


def test_coverage_tiny_schema_and_consistent_counts():
    tasks = [CoverageTask("t", (1.0, 0.5), -0.75, 0.05, 3000, 2000, (0.05, 0.2))]
    res = run_coverage(draws=4, tasks=tasks, progress=False)
    names = {r["name"] for r in res.rows}
    assert {"holdout_cp", "theorem_n", "theorem_h", "xu_mannor", "kawaguchi", "best:theorem_n", "stability_b",
            "than_rob"} <= names
    for r in res.rows:
        assert set(r) >= {"task", "name", "kind", "kappa", "delta", "draws", "failures", "failure_rate", "ci_low", "ci_high"}
        assert 0 <= r["failures"] <= r["draws"] == 4 and r["failure_rate"] == r["failures"] / 4
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(clopper_pearson_interval(r["failures"], 4))
        assert (r["delta"] is None) == (r["kind"] == "diagnostic")
    assert res.passed and all(r["ci_low"] <= r["delta"] for r in res.rows if r["kind"] == "certified")
    # the failure counts are what the draws say
    d = one_draw(tasks[0], 0, 0.05)
    v = d["values"][("theorem_n", 0.05)]
    assert v[0] == "certified" and v[2] >= d["true_error"]
    doc = res.to_dict()
    json.dumps(doc, allow_nan=False)
    assert doc["passed"] is True and "PASSED" in res.table()


def test_coverage_includes_both_kinds_of_partial_runs():
    """spec §8: a sound budget spent cell by cell (certified rows) and a uniform subsample (sampling
    rows: the subsampled limit against the full-sample value, at delta_s)."""
    from genbound.checks.coverage import DELTA_S, CoverageResult
    tasks = [CoverageTask("t", (1.0, 0.5), -0.75, 0.05, 3000, 2000, (0.05, 0.2))]
    res = run_coverage(draws=3, tasks=tasks, progress=False)
    rows = {(r["name"], r["grid_side"]): r for r in res.rows}
    assert rows[("budget:theorem_n", 0.05)]["kind"] == "certified" and ("budget:best:theorem_n", None) in rows
    for name in ("stability_b", "stability_a", "unstable_fraction", "robust_train_error"):
        r = rows[("subsample:" + name, 0.2)]
        assert r["kind"] == "sampling" and r["delta"] == DELTA_S and "mean_full_sample_value" in r
    d = one_draw(tasks[0], 0, 0.05)
    sub, full = d["sampling"][("subsample:stability_b", 0.05)]
    assert isinstance(sub, float) and isinstance(full, float)
    assert d["values"][("budget:theorem_n", 0.05)][2] >= d["true_error"]
    # the verdict reads the sampling rows too
    bad = dict(rows[("subsample:stability_b", 0.2)], failures=3, failure_rate=1.0, ci_low=0.3)
    assert not CoverageResult([bad], res.tasks, 3, 0.05, True).passed


def test_clopper_pearson_interval_edges():
    assert clopper_pearson_interval(0, 20)[0] == 0.0 and clopper_pearson_interval(20, 20)[1] == 1.0
    lo, hi = clopper_pearson_interval(5, 100)
    assert lo < 0.05 < hi


def test_memorization_check_passes(tmp_path):
    out = tmp_path / "mem.json"
    assert main(["check", "memorization", "--quick", "--json", str(out), "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert doc["passed"] and doc["train_error"] < 0.05 and doc["heldout_error"] > 0.4
    he = doc["heldout_error"]
    assert all(r["value"] is None or r["value"] >= he for r in doc["results"] if r["kind"] == "certified")
    assert doc["diagnostics_below"], "the literature's diagnostics should miss a memorizer somewhere"
    assert any(s["flag"] == "RED FLAG" for s in doc["sanity_kappa_to_zero"])


@pytest.mark.parametrize("argv", [
    ["study", "nope", "--out", "x"],
    ["study", "certified-lowdim", "--out", "/nonexistent-folder/x"],
    ["study", "certified-lowdim", "--quick", "--out", "x", "--delta", "2"],
    ["check", "nope"],
    ["check", "coverage", "--draws", "0"],
    ["check", "coverage", "--draws", "two"],
    ["check", "memorization", "--draws", "5"],
    ["check", "coverage", "--json", "/nonexistent-folder/x.json"],
    ["check", "coverage", "--delta", "0"],
])
def test_cli_user_mistakes_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]


def test_study_needs_out(capsys):
    assert main(["study", "certified-lowdim"]) == 2
    assert "--out" in capsys.readouterr().err
