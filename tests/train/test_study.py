"""A toy robust-overfitting study produces every record field for all three runs; CLI error paths."""

from __future__ import annotations

import json
import math

import pytest

from genbound.cli import main
from genbound.studies.robust_overfitting import quick_config, run_study
from genbound.studies.stats import binomial_half_width, correlations, robust_overfitting
from genbound.train import RECORD_FIELDS

LAYER_FIELDS = {"name", "fro_norm", "trace_h", "trace_h_se", "wci_term"}


def _toy_study():
    s = quick_config()
    s.n_train, s.n_val, s.n_test, s.hidden = 96, 48, 96, (32,)
    s.base.epochs, s.base.batch_size, s.base.attack_steps = 3, 48, 2
    s.base.schedule = {"name": "piecewise", "milestones": [1], "factor": 0.1}
    s.base.track.eval_train_size, s.base.track.eval_test_size = 64, 96
    s.base.track.wci_subset, s.base.track.trace_c_subset = 32, 16
    s.dynamics = {"k": 2, "subset": 32, "replicas": 2, "steps1": 3, "steps2": 3}
    return s


def test_toy_study_has_every_field(tmp_path):
    result = run_study(_toy_study(), tmp_path)
    on_disk = json.loads((tmp_path / "study.json").read_text())
    assert set(on_disk["runs"]) == {"pgd_piecewise", "awp", "pgd_wci_guarded"}
    for run in on_disk["runs"].values():
        assert {"config", "epochs", "best", "last"} <= set(run)
        assert len(run["epochs"]) == 3
        for rec in run["epochs"]:
            assert set(RECORD_FIELDS) <= set(rec), set(RECORD_FIELDS) - set(rec)
            assert rec["gap_acc"] == pytest.approx(rec["train_rob_acc"] - rec["test_rob_acc"])
            assert rec["gap_loss"] == pytest.approx(rec["test_rob_loss"] - rec["train_rob_loss"])
            assert rec["wci"] == pytest.approx(sum(lt["wci_term"] for lt in rec["layers"]))
            assert rec["weight_norm_sq"] == pytest.approx(sum(lt["fro_norm"] ** 2 for lt in rec["layers"]))
            assert all(set(lt) == LAYER_FIELDS for lt in rec["layers"])
        # expensive quantities: measured on some epochs (the first, around the decay, the last), null elsewhere
        measured = [r["top_eig"] is not None for r in run["epochs"]]
        assert measured[0] and measured[-1]
        assert all((r["top_eig"] is None) == (r["trace_c"] is None) for r in run["epochs"])
        assert run["robust_overfitting"]["observed"] in (True, False)
    assert {"run", "phase", "pearson", "spearman", "kendall"} <= set(on_disk["correlations"][0])
    assert {(c["run"], c["phase"]) for c in on_disk["correlations"]} >= {("awp", "all"), ("awp", 0), ("awp", 1)}
    d = on_disk["dynamics"]
    assert len(d["h"]) == 2 and len(d["ensemble_var_by_step"]) == 6
    assert (tmp_path / "plots" / "curves.png").stat().st_size > 0
    assert (tmp_path / "plots" / "dynamics.png").stat().st_size > 0
    assert "observed" in (tmp_path / "report.md").read_text()
    assert result["comparison"][0]["run"] == "pgd_piecewise"


def test_correlations_undefined_and_defined():
    assert correlations([1.0, 2.0], [1.0, 2.0])["pearson"] is None
    assert correlations([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])["spearman"] is None
    c = correlations([1.0, 2.0, 3.0, None], [2.0, 4.0, 7.0, 1.0])
    assert c["n"] == 3 and c["spearman"] == pytest.approx(1.0) and c["kendall"] == pytest.approx(1.0)


def _recs(test, train):
    return [{"epoch": i, "test_rob_acc": a, "train_rob_acc": b} for i, (a, b) in enumerate(zip(test, train))]


def test_robust_overfitting_verdict():
    hw = binomial_half_width(0.5, 1000)
    assert hw == pytest.approx(1.96 * math.sqrt(0.25 / 1000))
    yes = robust_overfitting(_recs([0.3, 0.4, 0.5, 0.45, 0.42], [0.3, 0.4, 0.55, 0.7, 0.8]), [2], 1000)
    assert yes["observed"] and yes["peak_epoch"] == 2 and yes["drop"] == pytest.approx(0.08)
    small = robust_overfitting(_recs([0.3, 0.4, 0.5, 0.49, 0.48], [0.3, 0.4, 0.55, 0.7, 0.8]), [2], 1000)
    assert not small["observed"]  # drop 0.02 < half-width 0.031
    before = robust_overfitting(_recs([0.3, 0.5, 0.45, 0.4, 0.4], [0.3, 0.4, 0.55, 0.7, 0.8]), [2], 1000)
    assert not before["observed"] and not before["peak_after_decay"]
    flat = robust_overfitting(_recs([0.3, 0.4, 0.5, 0.45, 0.42], [0.3, 0.4, 0.8, 0.7, 0.6]), [2], 1000)
    assert not flat["observed"] and not flat["train_rising"]


@pytest.mark.parametrize("argv, msg", [
    (["study", "robust-overfitting", "--out", "FILE"], "not a folder"),
    (["study", "robust-overfitting", "--out", "FILE/sub"], "cannot create"),
    (["study", "robust-overfitting", "--out", "DIR", "--epochs", "1"], "--epochs"),
    (["study", "robust-overfitting", "--out", "DIR", "--runs", "pgd,nope"], "unknown run"),
    (["study"], "name a study"),
])
def test_cli_errors(tmp_path, capsys, argv, msg):
    f = tmp_path / "file.txt"
    f.write_text("x")
    argv = [a.replace("FILE", str(f)).replace("DIR", str(tmp_path / "d")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_requires_out(capsys):
    assert main(["study", "robust-overfitting", "--quick"]) == 2
    assert "--out" in capsys.readouterr().err
