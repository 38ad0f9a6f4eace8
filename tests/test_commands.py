"""`genbound demo --quick` end to end, and `genbound evaluate` with its user mistakes."""

import json
import os

import pytest

from genbound.cli import main
from tests.conftest import example_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "mlp-memorize" in text and "theorem_n" in text
    doc = json.loads((out / "result.json").read_text())
    models = {m["model"] for m in doc["models"]}
    assert len(models) >= 4 and "mlp-memorize" in models
    names = {r["name"] for r in doc["results"]}
    assert names >= {"holdout_cp", "xu_mannor", "kawaguchi", "theorem_n", "theorem_h", "than_rob", "than_localrob",
                     "than_localsen", "than_localavg", "stability_a", "stability_b", "stability_c"}
    for r in doc["results"]:
        if r["kind"] == "certified" and r["value"] is not None:
            assert r["value"] >= r["heldout_error"], r
        if r["kind"] == "diagnostic":
            assert r["covers"] == (r["value"] >= r["heldout_error"])
    mem = [m for m in doc["models"] if m["model"] == "mlp-memorize"][0]
    assert mem["train_error"] < 0.05 and mem["heldout_error"] > 0.4  # it memorized
    for f in ("samples.npz", "config.toml", "versions.json", "report.html"):
        assert (out / f).exists(), f
    # the kappa grid spans almost-all-stable to almost-all-unstable
    uf = [m["unstable_fraction"] for m in doc["models"] if m["model"] == "mlp-wide"][0]
    assert uf[0] < 0.1 and uf[-1] > 0.9 and len(uf) >= 6


def _cfg(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


TABLES = """
[bounds]
kappas = [0.05, 0.2]
K = [5]
[stability]
steps = 2
"""


def test_evaluate_example_config(tmp_path, capsys, monkeypatch):
    assert main(["evaluate", example_config(tmp_path, TABLES), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    m = doc["models"][0]
    assert m["heldout_error"] < 0.15  # the shipped example weights are a real classifier
    # the run's config.toml reruns as it is, from another working directory, to the same numbers
    saved = tmp_path / "o" / "config.toml"
    monkeypatch.chdir(tmp_path / "o")
    assert main(["evaluate", str(saved), "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "result.json").read_text())
    assert [r["value"] for r in again["results"]] == [r["value"] for r in doc["results"]]
    assert again["config"] == doc["config"] and again["run"]["data"]["train"] == doc["run"]["data"]["train"]


def test_a_saved_config_finds_the_factory_module_beside_the_original(tmp_path, monkeypatch):
    # factory modules import from the config's folder; the rerun config lives in the run folder
    (tmp_path / "mymodels.py").write_text(
        "from genbound.models import mlp\n\ndef make():\n    return mlp(input_shape=(1, 8, 8), num_classes=10, hidden=[64])\n")
    cfg = example_config(tmp_path, TABLES, model='factory = "mymodels:make"\n')
    assert main(["evaluate", cfg, "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path / "o")
    assert main(["evaluate", "config.toml", "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    first, again = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("o", "again"))
    assert [r["value"] for r in again["results"]] == [r["value"] for r in first["results"]]


MISTAKES = [
    ("missing", None, "config file not found"),
    ("bad toml", "[data\ntrain=", "not valid TOML"),
    ("no train", "[data]\n[[models]]\nfactory='mlp'", "needs 'train'"),
    ("no models", "[data]\ntrain='digits'", "at least one [[models]]"),
    ("unknown section", "[data]\ntrain='digits'\n[[models]]\nfactory='mlp'\n[oops]", "unknown section"),
    ("unknown key", "[data]\ntrain='digits'\n[[models]]\nfactory='mlp'\n[bounds]\nkapas=[0.1]", "unknown key 'kapas'"),
    ("bad kappa", "[data]\ntrain='digits'\n[[models]]\nfactory='mlp'\n[bounds]\nkappas=[-1]", "kappas must be"),
    ("bad dataset", "[data]\ntrain='nope'\n[[models]]\nfactory='mlp'", "unknown dataset"),
    ("bad factory", "[data]\ntrain='digits'\n[[models]]\nfactory='nomodule:fn'", "cannot import module"),
    ("missing weights", "[data]\ntrain='digits'\n[[models]]\nfactory='mlp'\nweights='none.pt'", "none.pt"),
]


@pytest.mark.parametrize("label,text,msg", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_evaluate_user_mistakes(tmp_path, capsys, label, text, msg):
    path = str(tmp_path / "missing.toml") if text is None else _cfg(tmp_path, text)
    assert main(["evaluate", path, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genbound evaluate: error:") and msg in err and "\n" not in err, err
