"""WCI formula, readout and result object."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from genbound.curvature import LayerTrace, TraceResult, readout, wci, wci_parameters
from genbound.curvature.wci import combine
from genbound.errors import UserInputError
from tests.curvature.models import resnet_tiny, toy_data


def _equal_rows_linear(c: int = 3, d: int = 4) -> tuple[nn.Module, torch.Tensor]:
    """z = W x with all rows of W equal: logits tie, p = 1/C for every input."""
    lin = nn.Linear(d, c, bias=False).double()
    a = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(a.expand(c, d))
    return nn.Sequential(nn.Flatten(), lin).eval(), a


@pytest.mark.parametrize("estimator", ["exact", "fisher"])
def test_wci_hand_checkable_linear_model(estimator):
    # H_W = mean_i (diag p - p p^T) (x) x_i x_i^T, so Tr H = (1 - 1/C) * mean_i ||x_i||^2;
    # ||W||_F = sqrt(C) ||a||; WCI = ||W||_F sqrt(Tr H).
    c = 3
    model, a = _equal_rows_linear(c)
    x = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    res = wci(model, (x, y), eps=0.0, estimator=estimator, subset_size=None, n_train=100, delta=0.1, clip=None)
    tr = (1 - 1 / c) * (5.0 + 3.0) / 2  # = 8/3
    fro = math.sqrt(c) * float(a.norm())  # = sqrt(3 * 5.3125)
    assert res.layers[0].trace_h == pytest.approx(tr, rel=1e-10)
    assert res.layers[0].fro_norm == pytest.approx(fro, rel=1e-12)
    assert res.wci == pytest.approx(fro * math.sqrt(tr), rel=1e-10)
    # ties: argmax is class 0, so one of the two examples is misclassified
    assert res.robust_train_error == 0.5
    expect = 2 * 0.5 + 2 * res.wci * math.sqrt(1 / 100) + 2 * math.log(10) / 100
    assert res.readout["value"] == pytest.approx(expect, rel=1e-12)
    assert res.readout["kind"] == "diagnostic" and res.readout["provenance"] == "reconstructed"


def test_combine_clamps_negative_traces_and_separates_groups():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # ||W||_F = 5
        model[1].weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 1.0]]))  # ||W||_F = 2
    tr = TraceResult(
        [LayerTrace("0.weight", "weight", 4, 4.0, 0.4), LayerTrace("1.weight", "weight", 4, -0.1, 0.2),
         LayerTrace("0.bias", "bias", 2, 9.0, 0.0)], 0.0, 0.0)
    layers, groups, value, se = combine(model, tr)
    assert [r.wci_term for r in layers] == [pytest.approx(10.0), 0.0]
    assert value == pytest.approx(10.0)
    assert se == pytest.approx(5 * 0.4 / (2 * 2.0))  # the clamped layer adds nothing
    assert groups[0].name == "0.bias" and groups[0].wci_term == pytest.approx(math.sqrt(float(model[0].bias.detach().norm() ** 2) * 9.0))


def test_wci_layers_and_groups_selection():
    model = resnet_tiny()
    names = [p.name for p in wci_parameters(model)]
    assert names == ["stem.weight", "block.conv1.weight", "block.conv2.weight", "fc.weight"]
    groups = {p.name: p.group for p in wci_parameters(model, include_biases=True, include_norm=True)}
    assert groups["stem.bias"] == "bias" and groups["block.bn1.weight"] == "norm"


def test_wci_result_records_protocol_and_serializes(tmp_path):
    model = resnet_tiny()
    x, y = toy_data(40)
    res = wci(model, (x, y), eps=0.1, steps=3, subset_size=16, batch_size=8, n_probes=4, rel_se=None, sketch=2,
              seed=5, include_biases=True)
    d = json.loads(res.to_json(tmp_path / "w.json"))
    assert json.loads((tmp_path / "w.json").read_text()) == d
    assert d["provenance"] == "reconstructed" and d["schema"] == "genbound.wci/1"
    p = d["protocol"]
    for key, val in dict(eps=0.1, norm="linf", steps=3, step_size=2.5 * 0.1 / 3, subset_size=16, seed=5,
                         bn_mode="eval", estimator="hutchpp", probes=4, sketch=2, rel_se=None,
                         include_biases=True).items():
        assert p[key] == val, key
    assert d["readout"]["n"] == 40
    assert {r["name"] for r in d["groups"]} == {"stem.bias", "fc.bias"}
    assert d["wci"] == pytest.approx(sum(r["wci_term"] for r in d["layers"]))
    assert "WCI" in res.table() and "readout" in res.table()
    # the same seed gives the same subset, attack and probes
    again = wci(model, (x, y), eps=0.1, steps=3, subset_size=16, batch_size=8, n_probes=4, rel_se=None, sketch=2,
                seed=5, include_biases=True)
    assert again.wci == res.wci


def test_wci_user_errors():
    model = resnet_tiny()
    x, y = toy_data(8)
    with pytest.raises(UserInputError, match="estimator"):
        wci(model, (x, y), estimator="pyhessian")
    with pytest.raises(UserInputError, match="delta"):
        readout(1.0, 0.1, 10, 1.5)
    with pytest.raises(UserInputError, match="inputs but"):
        wci(model, (x, y[:3]))
