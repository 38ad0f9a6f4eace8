"""The pipeline end to end on small data: every result, files, resume, held-out centroids."""

import json
import os

import pytest

from genbound.bounds import RESULT_NAMES, load_stats_npz
from genbound.config import Config
from genbound.pipeline import evaluate


@pytest.fixture(scope="module")
def setup(digits_mlp):
    return digits_mlp


CFG = dict(kappas=(0.02, 0.1, 0.4), K=(5, 20), pgd_steps=3, progress=False)


def test_every_result_and_files(setup, tmp_path):
    model, train, held = setup
    ev = evaluate({"m": model}, train, held, Config(**CFG))
    names = {r.name for r in ev.report.results}
    assert names == set(RESULT_NAMES)
    assert len(ev.stats) == 2 and {s.K for s in ev.stats} == {5, 20}
    assert {b["name"] for b in ev.best_over_grid} == {"xu_mannor", "kawaguchi", "theorem_n", "theorem_h"}
    assert all(b["delta_per_partition"] == pytest.approx(0.025) for b in ev.best_over_grid)
    paths = ev.save(tmp_path / "run")
    for key in ("result", "samples", "config", "versions", "html"):
        assert os.path.getsize(paths[key]) > 0, key
    doc = json.loads(open(paths["result"]).read())
    assert doc["schema"] == "genbound.result/1" and doc["config"]["K"] == [5, 20]
    # samples.npz recomputes the same bounds
    from genbound.bounds import compute_bounds
    again = [compute_bounds(s, 0.05) for s in load_stats_npz(paths["samples"])]
    assert [r.value for rep in again for r in rep.results] == [r.value for r in ev.report.results]
    import tomllib
    assert tomllib.loads(open(paths["config"]).read())["bounds"]["kappas"] == [0.02, 0.1, 0.4]


def test_certified_never_below_heldout_on_this_model(setup):
    model, train, held = setup
    ev = evaluate({"m": model}, train, held, Config(**CFG))
    for r in ev.report.results:
        if r.kind == "certified" and r.value is not None:
            assert r.value >= r.heldout_error, (r.name, r.value, r.heldout_error)


def test_resume_reuses_cached_steps(setup, tmp_path, monkeypatch):
    model, train, held = setup
    cache = str(tmp_path / "cache")
    first = evaluate({"m": model}, train, held, Config(**CFG), cache_dir=cache)
    import genbound.pipeline as pl

    def boom(*a, **k):
        raise AssertionError("recomputed a cached step")

    monkeypatch.setattr(pl, "stability_flags", boom)
    from genbound.partition import Partition
    monkeypatch.setattr(Partition, "assigner", boom)  # the one pass builds no cell assigner when the cells are cached
    second = evaluate({"m": model}, train, held, Config(**CFG), cache_dir=cache)
    assert [r.value for r in first.report.results] == [r.value for r in second.report.results]


def test_heldout_centroids_leave_heldout_statistics(setup):
    model, train, held = setup
    ev = evaluate({"m": model}, train, held, Config(**{**CFG, "partition": "heldout", "K": (10,)}))
    assert ev.stats[0].m == len(held) - 10
    th = ev.report.select("theorem_h")[0]
    assert th.kind == "diagnostic" and any("held-out set helped build" in a for a in th.assumptions)


def test_label_pure_partition_K(setup):
    model, train, held = setup
    ev = evaluate({"m": model}, train, held, Config(**{**CFG, "label_pure": True, "K": (4,)}))
    assert ev.stats[0].K == 40 and ev.report.models[0]["partition"]["label_pure"] is True
