"""Sound pre-screen of the PGD engine: it certifies only pairs no attack can flip (closed-form
distance of a linear model), leaves the flags unchanged, saves attack evaluations, and screens
nothing on a model the verifier cannot bound."""

import numpy as np
import pytest
import torch
from torch import nn

from genbound.models import mlp, small_cnn
from genbound.stability import pgd_stability
from genbound.stability.sound.prescreen import PRESCREEN_RTOL, PGDPrescreen, head_start
from genbound.errors import UserInputError
from genbound.stability.sound import compile_network

from tests.test_torch_stability import KAPPAS, distances, interior_points, linear_binary


def _digits(n=48):
    from genbound.data import load_dataset
    return load_dataset("digits").subset(np.arange(n))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_certified_only_inside_the_closed_form_distance(norm):
    model, w, b = linear_binary()
    src = interior_points(80)
    x, _ = src.tensors()
    with torch.no_grad():
        logits = model(x)
    kappas = KAPPAS if norm == "linf" else KAPPAS * 4
    screen = PGDPrescreen(model, norm, kappas, torch.device("cpu"))
    cert = screen.certify(x, logits).numpy()
    dist = distances(src, w, b, norm)
    # the box [0,1]^d only shrinks the ball: a certified pair has no flip within its radius
    assert not (cert & (kappas[None, :] >= dist[:, None])).any()
    assert cert.any(), "a linear model's margins are bounded exactly: small radii must be certified"
    # monotone: a proof at kappa_j carries to every smaller kappa
    assert (cert[:, :-1] >= cert[:, 1:]).all()
    ev = screen.evidence()
    assert ev["status"] == "verified" and ev["sound"] is True and ev["pairs_certified"] == int(cert.sum())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_certifies_whenever_the_margin_clears_the_tolerance(norm):
    model, w, b = linear_binary(seed=3)
    src = interior_points(80, seed=2)
    x, _ = src.tensors()
    with torch.no_grad():
        logits = model(x)
    kappa = np.array([0.01])
    cert = PGDPrescreen(model, norm, kappa, torch.device("cpu")).certify(x, logits).numpy()[:, 0]
    dist = distances(src, w, b, norm)
    # for a linear model IBP is exact on the box: everything clearly inside the distance is proven
    scale = 1 + logits.abs().max(1).values.numpy()
    wn = w.abs().sum().item() if norm == "linf" else w.norm().item()
    clear = dist - kappa[0] > 10 * PRESCREEN_RTOL * scale / wn
    if norm == "linf":
        assert cert[clear].all()
    else:  # the l2 ball is bounded by its enclosing box or by ||A||_2: looser, still sound
        assert cert[clear].mean() > 0.5


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_flags_unchanged_and_attack_evaluations_saved_on_a_cnn(norm):
    src = _digits(48)
    model = small_cnn(in_channels=1, width=4, hidden=16, pool=2, seed=1).eval()
    kappas = [0.002, 0.005, 0.02, 0.1, 0.3] if norm == "linf" else [0.01, 0.03, 0.1, 0.5, 2.0]
    kw = dict(norm=norm, steps=4, seed=2, device="cpu", progress_bar=False, batch_size=16)
    plain = pgd_stability(model, src, kappas, prescreen=False, **kw)
    screened = pgd_stability(model, src, kappas, prescreen=True, **kw)
    auto = pgd_stability(model, src, kappas, **kw)  # default "auto": float32 bounds apply on CPU
    full = pgd_stability(model, src, kappas, early_exit=False, carry_flips=False, **kw)
    assert full.evidence["prescreen"] is None  # "auto" only goes with early exit
    assert np.array_equal(plain.stable, screened.stable) and np.array_equal(auto.stable, screened.stable)
    assert auto.evidence["model_evals"] == screened.evidence["model_evals"]
    assert auto.evidence["prescreen"]["body_bounds"].startswith("float32")
    assert not (~full.stable & screened.stable).any()
    pre = screened.evidence["prescreen"]
    assert pre["status"] == "verified" and pre["pairs_certified"] > 0
    saved = plain.evidence["model_evals"]["total"] - screened.evidence["model_evals"]["total"]
    assert saved == pre["pairs_certified"] * (2 * 4 + 1)  # each certified stable pair skips its whole attack
    assert plain.evidence["prescreen"] is None


def test_mlp_head_is_the_whole_network():
    model = mlp((1, 8, 8), 10, hidden=(16,), seed=0).eval()
    assert head_start(compile_network(model)) is None
    src = _digits(32)
    kw = dict(steps=3, seed=0, device="cpu", progress_bar=False)
    a = pgd_stability(model, src, [0.001, 0.01, 0.1], **kw)
    s = pgd_stability(model, src, [0.001, 0.01, 0.1], prescreen=True, **kw)
    assert np.array_equal(a.stable, s.stable) and s.evidence["prescreen"]["pairs_certified"] > 0
    # "auto" screens only with float32 bounds, which need a body: off for an MLP
    off = a.evidence["prescreen"]
    assert off["status"] == "off" and off["pairs_certified"] == 0 and "no body" in off["body_float64_reason"]
    assert s.evidence["prescreen"]["body_bounds"] == "float64"


def test_auto_is_off_where_float32_bounds_do_not_apply():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(64, 10)).eval()
    src = _digits(24)
    kw = dict(steps=3, seed=0, device="cpu", progress_bar=False)
    a = pgd_stability(model, src, [0.002, 0.02], **kw)
    s = pgd_stability(model, src, [0.002, 0.02], prescreen=True, **kw)
    assert np.array_equal(a.stable, s.stable)
    assert a.evidence["prescreen"]["status"] == "off" and "BatchNorm2d" in a.evidence["prescreen"]["body_float64_reason"]
    assert s.evidence["prescreen"]["status"] == "verified" and s.evidence["prescreen"]["body_bounds"] == "float64"
    with pytest.raises(UserInputError, match="prescreen"):
        pgd_stability(model, src, [0.01], prescreen="yes", **kw)


def test_unsupported_model_is_screened_by_nothing():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    src = interior_points(30)
    kw = dict(steps=2, seed=0, device="cpu", progress_bar=False)
    a = pgd_stability(model, src, [0.01, 0.1], **kw)
    s = pgd_stability(model, src, [0.01, 0.1], prescreen=True, **kw)
    pre = s.evidence["prescreen"]
    assert pre["status"] == "unverified" and "Tanh" in pre["unsupported_reason"] and pre["pairs_certified"] == 0
    assert np.array_equal(a.stable, s.stable)
    assert a.evidence["model_evals"] == s.evidence["model_evals"]


def test_custom_forward_fails_the_structure_check_and_is_not_screened():
    base = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))

    class Doubled(nn.Module):
        def __init__(self):
            super().__init__()
            self.genbound_layers = base  # claims to be `base`, computes 3 * base(x) - 1

        def forward(self, x):
            return 3 * base(x) - torch.tensor([0.0, 1.0])

    src = interior_points(20)
    s = pgd_stability(Doubled().eval(), src, [0.01], steps=2, device="cpu", progress_bar=False, prescreen=True)
    pre = s.evidence["prescreen"]
    assert pre["status"] == "unverified" and "does not reproduce" in pre["unsupported_reason"]
    assert pre["pairs_certified"] == 0


def test_config_flag_reaches_the_engine(tmp_path):
    from genbound import Config
    with pytest.raises(UserInputError, match="prescreen"):
        Config(pgd_prescreen="yes")
    assert Config(pgd_prescreen=True).pgd_prescreen is True
    assert Config().pgd_prescreen == "auto"


def _cnn_case(n=48):
    src = _digits(n)
    model = small_cnn(in_channels=1, width=4, hidden=16, pool=2, seed=1).eval()
    x, _ = src.tensors()
    with torch.no_grad():
        logits = model(x)
    return model, x, logits


def test_float32_arithmetic_certifies_what_float64_does(monkeypatch):
    model, x, logits = _cnn_case()
    kappas = np.array([0.002, 0.005, 0.02])
    s32 = PGDPrescreen(model, "linf", kappas, torch.device("cpu"))
    c32 = s32.certify(x, logits)
    ev = s32.evidence()
    assert ev["body_bounds"].startswith("float32") and "float32" in ev["head_bounds"]
    from genbound.stability.sound import float32 as interval32
    monkeypatch.setattr(interval32, "unavailable", lambda device: "forced by the test")
    s64 = PGDPrescreen(model, "linf", kappas, torch.device("cpu"))
    c64 = s64.certify(x, logits)
    ev64 = s64.evidence()
    assert ev64["body_bounds"] == "float64" and ev64["body_float64_reason"] == "forced by the test"
    assert ev64["head_bounds"] == "float64"
    assert c64.sum() > 0 and abs(int(c32.sum()) - int(c64.sum())) <= max(1, int(0.05 * c64.sum()))


def test_float32_head_product_bounds_the_float64_one_from_below():
    model, x, logits = _cnn_case()
    screen = PGDPrescreen(model, "linf", np.array([0.01]), torch.device("cpu"))
    screen.certify(x, logits)
    assert screen.split is not None
    x64, pred = x.double(), logits.argmax(1)
    for kappa in (0.002, 0.02, 0.1):
        lb32 = screen._bounds(x64, pred, kappa)
        split, screen.split = screen.split, None
        lb64 = screen._bounds(x64, pred, kappa)
        screen.split = split
        assert (lb32 <= lb64 + 1e-9).all()
        assert ((lb64 - lb32) <= 1e-3 * (1 + lb64.abs())).all()


def test_float32_head_product_accounts_for_underflow():
    # A = C W3 W2 = 6.8e-46 is below float32's range: fl(A) = 0, yet |A W1| r is ~1e-3 and a corner
    # of the ball flips the prediction; the bound must not certify it
    d, k = 100, 10_000
    g = torch.Generator().manual_seed(0)
    sign = torch.ones(d)
    sign[torch.randperm(d, generator=g)[: d // 2]] = -1.0
    lin1, lin2, lin3 = nn.Linear(d, k, bias=False), nn.Linear(k, 1, bias=False), nn.Linear(1, 2)
    with torch.no_grad():
        lin1.weight.copy_(2e37 * sign.expand(k, d))
        lin2.weight.fill_(1e-23)
        lin3.weight.copy_(torch.tensor([[6.8e-23], [0.0]]))
        lin3.bias.copy_(torch.tensor([3e-4, 0.0]))
    from genbound.models.normalize import Normalize
    model = nn.Sequential(Normalize((0.0,), (1.0,)), nn.Flatten(), lin1, lin2, lin3).eval()
    x = torch.full((1, 1, 10, 10), 0.5)
    with torch.no_grad():
        logits = model(x)
        flipped = model((x - 0.1 * sign.reshape(1, 1, 10, 10)).clamp(0, 1))
    assert flipped.argmax(1) != logits.argmax(1)
    screen = PGDPrescreen(model, "linf", np.array([0.1]), torch.device("cpu"))
    assert not screen.certify(x, logits).any()
    assert screen.split is not None  # the float32 product was used, and accounted for


def test_unreadable_matmul_precision_falls_back_to_float64():
    from genbound.stability.sound import float32 as interval32
    mm = getattr(torch.backends.mkldnn, "matmul", None)
    if mm is None or not hasattr(mm, "fp32_precision"):
        pytest.skip("this torch has no per-backend float32 precision")
    old = mm.fp32_precision
    try:
        mm.fp32_precision = "bf16"
        assert interval32.unavailable(torch.device("cpu")) is not None
    finally:
        mm.fp32_precision = old
    assert interval32.unavailable(torch.device("cpu")) is None
