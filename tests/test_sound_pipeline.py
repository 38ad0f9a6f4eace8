"""Sound stability and kappa-fine grids through the pipeline (`evaluate`, the CLI), checked against
the route the certified-lowdim study took before it ran through the pipeline: the verifier on an
in-memory tensor (`sound_stability`) and grids built from arrays (`kappa_fine_bounds`)."""

import json
import os

import numpy as np
import pytest
import torch

from genbound.cli import main
from genbound.config import Config
from genbound.data import TensorSource, load_dataset, split_source
from genbound.data.lowdim import sample_lowdim
from genbound.errors import UserInputError
from genbound.kappa_fine import kappa_fine_bounds
from genbound.models import load_model, mlp, train_classifier
from genbound.models.normalize import with_normalization
from genbound.pipeline import evaluate
from genbound.stability.sound import sound_stability
from tests.conftest import EXAMPLE_WEIGHTS, example_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _by_name(results):
    return {(r.name, r.kappa, r.log_K): r.value for r in results}


def _array_route(model, x, y, hx, hy, kappas, num_classes, delta, *, name, batch_size=64):
    """What the study computed before: predictions, crown on the tensor, grids from arrays."""
    with torch.no_grad():
        pred = model(torch.as_tensor(x)).argmax(1).numpy()
        hpred = model(torch.as_tensor(hx)).argmax(1).numpy()
    st = sound_stability(model, torch.as_tensor(x), list(kappas), method="crown", batch_size=batch_size, progress=False)
    assert st.evidence["status"] == "verified"
    n = x.shape[0]
    return kappa_fine_bounds(model=name, train_x=x.reshape(n, -1), train_y=y, train_loss=(pred != y).astype(np.uint8),
                             stable=st.stable, kappas=kappas, num_classes=num_classes, delta=delta,
                             heldout_x=hx.reshape(hx.shape[0], -1), heldout_y=hy,
                             heldout_loss=(hpred != hy).astype(np.uint8), stability_method="crown",
                             stability_sound=True, partition_note={"source_data": "none (data-independent grid over [0,1]^d)"})


def test_evaluate_crown_on_kappa_fine_grids_matches_the_study_route():
    x, y, _ = sample_lowdim(3000, 2, "circle", 0.05, 0)
    hx, hy, _ = sample_lowdim(1000, 2, "circle", 0.05, 1)
    model = mlp(input_shape=[2], num_classes=2, hidden=(16, 16), seed=0).eval()
    train = TensorSource(x, y, name="circle", num_classes=2)
    train_classifier(model, train, epochs=3, batch_size=128, lr=1e-2, seed=0, progress_bar=False)
    model.eval()
    kappas = (0.02, 0.05, 0.1)
    cfg = Config(kappas=kappas, partition="grid", stability="crown", delta=0.05, batch_size=512, progress=False)
    ev = evaluate({"circle": model}, train, TensorSource(hx, hy, name="circle-ho", num_classes=2), cfg)
    ref = _array_route(model, x, y, hx, hy, kappas, 2, 0.05, name="circle")

    # the result is sound, and says how
    stab = ev.records["stability"]["circle"]
    assert stab["sound"] is True and stab["method"] == "crown" and stab["status"] == "verified"
    assert all(s.stability_sound for s in ev.stats) and len(ev.stats) == len(kappas)
    tn = [r for r in ev.report.results if r.name == "theorem_n"]
    assert len(tn) == len(kappas) and all(r.kind == "certified" for r in tn)
    assert any(r.terms["proven_fraction"] > 0.5 for r in tn)  # cells were proven, not just counted
    # every value, theorem_n included, equals the study's route, per kappa-fine grid
    got, want = _by_name(ev.report.results), _by_name(ref.report.results)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key
    assert [b["value"] for b in ev.best_over_grid] == [b["value"] for b in ref.best]
    assert [p["n_occupied"] for p in ev.grids["circle"].partitions] == [p["n_occupied"] for p in ref.partitions]


def test_cli_evaluate_crown_and_grid(tmp_path):
    cfg = example_config(tmp_path, """
[bounds]
kappas = [0.005, 0.02]
partition = "grid"
[stability]
method = "crown"
intermediate = "ibp"
""", data="heldout_fraction = 0.25\n")
    assert main(["evaluate", cfg, "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    stab = doc["run"]["stability"]["m"]
    assert stab["sound"] is True and stab["method"] == "crown" and stab["intermediate_bounds"] == "ibp"
    tn = [r for r in doc["results"] if r["name"] == "theorem_n"]
    assert sorted(r["kappa"] for r in tn) == [0.005, 0.02] and all(r["kind"] == "certified" for r in tn)
    # the same numbers as the array route on the same model and split
    source = load_dataset("digits")
    train, held, _ = split_source(source, 0.25, seed=0)
    model = with_normalization(load_model("mlp", EXAMPLE_WEIGHTS, input_shape=[1, 8, 8], num_classes=10, hidden=[64]),
                               source.normalization).eval()
    x, y = train.get(np.arange(len(train)))
    hx, hy = held.get(np.arange(len(held)))
    ref = _array_route(model, x.numpy(), y.numpy(), hx.numpy(), hy.numpy(), (0.005, 0.02), 10, 0.05, name="m")
    want = {r.kappa: r.value for r in ref.report.results if r.name == "theorem_n"}
    assert {r["kappa"]: r["value"] for r in tn} == want


def test_config_names_and_mistakes():
    assert Config(stability="exact").stability == "exact"
    for bad in (dict(stability="fgsm"), dict(partition="grids"), dict(sound_intermediate="lp"),
                dict(stability="exact", norm="l2"), dict(partition="grid", norm="l2")):
        with pytest.raises(UserInputError):
            Config(**bad)


def test_layout_rules():
    """Checks never import studies; no verifier module above about 400 lines; one projection."""
    import pathlib

    root = pathlib.Path(ROOT) / "genbound"
    for f in (root / "checks").glob("*.py"):
        assert "genbound.studies" not in f.read_text(), f
    for f in (root / "stability" / "sound").glob("*.py"):
        assert len(f.read_text().splitlines()) <= 400, f
    for f in root.rglob("*.py"):
        if f.name != "attacks.py":
            assert ".clamp(-eps, eps)" not in f.read_text() and "grad.sign()" not in f.read_text(), f
