"""`genbound bounds`: happy path and every user mistake (one line, exit code 2, no output file)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from genbound.bounds import SampleStats, save_stats_npz
from genbound.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, **over):
    rng = np.random.default_rng(0)
    d = dict(train_cell=rng.integers(0, 8, 200), train_loss=(rng.random(200) < 0.1).astype(np.uint8),
             train_stable=rng.random((200, 2)) < 0.5, kappas=np.array([0.01, 0.02]),
             heldout_cell=rng.integers(0, 8, 50), heldout_loss=(rng.random(50) < 0.1).astype(np.uint8), K=np.int64(8))
    d.update(over)
    d = {k: v for k, v in d.items() if v is not None}
    np.savez(path, **d)
    return str(path)


def test_happy_path_writes_json(tmp_path, capsys):
    f = _write(tmp_path / "s.npz")
    out = tmp_path / "r.json"
    assert main(["bounds", f, "--json", str(out), "--delta", "0.1"]) == 0
    text = capsys.readouterr().out
    assert "holdout_cp" in text and "theorem_n" in text and "certified" in text
    doc = json.loads(out.read_text())
    assert doc["schema"] == "genbound.result/1" and doc["delta"] == 0.1
    assert {r["name"] for r in doc["results"]} >= {"holdout_cp", "xu_mannor", "kawaguchi", "theorem_n", "theorem_h",
                                                   "than_rob", "than_localrob", "than_localsen", "than_localavg",
                                                   "stability_a", "stability_b", "stability_c"}


def test_multi_model_file(tmp_path, capsys):
    rng = np.random.default_rng(1)
    mk = lambda name: SampleStats(train_cell=rng.integers(0, 5, 50), train_loss=np.zeros(50, np.uint8), K=5, model=name)  # noqa: E731
    save_stats_npz(tmp_path / "two.npz", [mk("a"), mk("b")])
    assert main(["bounds", str(tmp_path / "two.npz"), "--json", str(tmp_path / "o.json")]) == 0
    doc = json.loads((tmp_path / "o.json").read_text())
    assert {m["model"] for m in doc["models"]} == {"a", "b"}


def test_roundtrip_npz(tmp_path):
    from genbound.bounds import compute_bounds, load_stats_npz
    rng = np.random.default_rng(2)
    s = SampleStats(train_cell=rng.integers(0, 5, 50), train_loss=np.zeros(50, np.uint8), train_stable=np.ones((50, 1), bool),
                    kappas=[0.1], K=5, model="x", stability_method="ibp", stability_sound=True, label_pure=True,
                    max_cell_diameter=0.1, partition={"kind": "grid", "side": 0.1}, norm="linf")
    save_stats_npz(tmp_path / "x.npz", s)
    (t,) = load_stats_npz(tmp_path / "x.npz")
    assert t.partition == s.partition and t.max_cell_diameter == 0.1 and t.stability_sound and t.K == 5
    assert [r.value for r in compute_bounds(t).results] == [r.value for r in compute_bounds(s).results]


MISTAKES = [
    ("missing file", None, ["bounds", "{d}/nope.npz"], "not found"),
    ("not an npz", "garbage", ["bounds", "{f}"], "not a readable .npz"),
    ("missing array", dict(train_loss=None), ["bounds", "{f}"], "missing array(s) train_loss"),
    ("wrong shape", dict(train_stable=np.ones((200, 3), bool)), ["bounds", "{f}"], "3 columns but 2 kappas"),
    ("length mismatch", dict(train_loss=np.zeros(10, np.uint8)), ["bounds", "{f}"], "train_loss has 10 entries"),
    ("float cells", dict(train_cell=np.zeros(200)), ["bounds", "{f}"], "integer cell ids"),
    ("loss out of range", dict(train_loss=np.full(200, 2, np.uint8)), ["bounds", "{f}"], "0-1 losses"),
    ("delta out of range", {}, ["bounds", "{f}", "--delta", "1.5"], "delta must be in (0, 1)"),
    ("delta not a number", {}, ["bounds", "{f}", "--delta", "abc"], "delta must be a number"),
    ("kappa <= 0", dict(kappas=np.array([0.0, 0.1])), ["bounds", "{f}"], "kappas must be finite and > 0"),
    ("K too small", dict(K=np.int64(3)), ["bounds", "{f}"], "occupy 8 distinct cells"),
    ("no K", dict(K=None), ["bounds", "{f}"], "needs K"),
    ("unknown key", dict(extra=np.zeros(2)), ["bounds", "{f}"], "unknown array 'extra'"),
    ("sound flag on pgd", dict(stability_sound=np.bool_(True), stability_method=np.str_("pgd")), ["bounds", "{f}"],
     "only ['crown', 'exact', 'ibp'] are sound"),
    ("contradiction", dict(train_cell=np.zeros(200, np.int64), train_loss=np.r_[np.zeros(199), 1].astype(np.uint8),
                           train_stable=np.ones((200, 2), bool), heldout_cell=np.zeros(5, np.int64),
                           heldout_loss=np.zeros(5, np.uint8), stability_sound=np.bool_(True),
                           stability_method=np.str_("ibp"), label_pure=np.bool_(True), max_cell_diameter=np.float64(0.01)),
     ["bounds", "{f}"], "contradict the certificate"),
]


@pytest.mark.parametrize("label,over,argv,msg", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_user_mistakes(tmp_path, capsys, label, over, argv, msg):
    f = tmp_path / "s.npz"
    if over == "garbage":
        f.write_text("not a zip")
    elif over is not None:
        _write(f, **over)
    out = tmp_path / "r.json"
    args = [a.format(d=tmp_path, f=f) for a in argv] + ["--json", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genbound bounds: error:") and msg in err and "\n" not in err, err
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".genbound-")]


def test_subprocess_no_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "genbound", "bounds", str(tmp_path / "x.npz")], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    p = subprocess.run([sys.executable, "-m", "genbound", "bounds", os.path.join(ROOT, "examples", "example_stats.npz")],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "theorem_n" in p.stdout


def test_bounds_layer_never_imports_torch():
    code = ("import sys, genbound.bounds, genbound.commands.bounds; "
            "from genbound.cli import main; sys.exit(1 if 'torch' in sys.modules else 0)")
    p = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
    assert p.returncode == 0, "the bounds layer (or the CLI entry) imported torch"
