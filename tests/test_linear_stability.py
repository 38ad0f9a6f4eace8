"""Exact stability of linear rules and exact true errors (used by the coverage check)."""

import numpy as np
import pytest
import torch

from genbound.checks.geometry import disagreement_area, linear_true_error
from genbound.errors import UserInputError
from genbound.stability.linear import linear_rule_predict, linear_rule_stability
from genbound.stability.sound import sound_stability


def test_linear_stability_matches_crown_and_brute_force():
    rng = np.random.default_rng(0)
    w, b = np.array([1.3, -0.7]), 0.1
    x = rng.random((400, 2))
    kappas = [0.01, 0.05, 0.1]
    st, ev = linear_rule_stability(w, b, x, kappas)
    assert ev["sound"] and ev["method"] == "exact"
    # the same rule as a 2-logit network: logit_1 - logit_0 = w.x + b; crown is exact for an affine map
    lin = torch.nn.Linear(2, 2).double()
    with torch.no_grad():
        lin.weight[:] = torch.tensor([[0.0, 0.0], list(w)])
        lin.bias[:] = torch.tensor([0.0, b])
    net = torch.nn.Sequential(lin).float().eval()
    crown = sound_stability(net, torch.tensor(x, dtype=torch.float32), kappas, method="crown", progress=False)
    agree = (crown.stable == st).mean()
    assert agree > 0.99  # float32 weights of the net vs float64 rule: differences only within rounding of the margin
    # brute force on the corners of the domain-clipped box: no corner flips a stable sample
    for j, k in enumerate(kappas):
        lo, hi = np.maximum(0, x - k), np.minimum(1, x + k)
        corners = [np.stack([a[:, 0], c[:, 1]], 1) for a in (lo, hi) for c in (lo, hi)]
        p = linear_rule_predict(w, b, x)
        same = np.all([linear_rule_predict(w, b, c) == p for c in corners], axis=0)
        assert np.all(same[st[:, j]])
        assert np.array_equal(st[:, j], same & (np.abs(x @ w + b) > 1e-9))


def test_linear_stability_distance_form_without_domain_effects():
    w, b = np.array([1.0, 1.0]), -1.0
    x = np.array([[0.5, 0.3], [0.5, 0.44], [0.5, 0.46]])  # l_inf distances to the line: 0.1, 0.03, 0.02
    st, _ = linear_rule_stability(w, b, x, [0.025, 0.05])
    assert st.tolist() == [[True, True], [True, False], [False, False]]
    with pytest.raises(UserInputError):
        linear_rule_stability(w, b, x + 1, [0.1])


def test_true_error_area_is_exact():
    ws, bs = np.array([1.0, 0.5]), -0.75
    assert disagreement_area(ws, bs, ws, bs) == pytest.approx(0.0, abs=1e-12)
    assert disagreement_area(-ws, -bs, ws, bs) == pytest.approx(1.0)  # the opposite rule disagrees everywhere
    w, b = np.array([1.0, 0.0]), -0.5  # x1 > 0.5 vs x2 > 0.5: two quarter squares
    assert disagreement_area(w, b, np.array([0.0, 1.0]), -0.5) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    x = rng.random((400_000, 2))
    w2, b2 = np.array([0.9, 0.6]), -0.8
    mc = np.mean(linear_rule_predict(w2, b2, x) != linear_rule_predict(ws, bs, x))
    assert disagreement_area(w2, b2, ws, bs) == pytest.approx(mc, abs=3e-3)
    assert linear_true_error(w2, b2, ws, bs, 0.1) == pytest.approx(0.1 + 0.8 * mc, abs=3e-3)
