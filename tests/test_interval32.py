"""Float32 interval bounds with rounding errors enclosed: they contain every exact value (sampled
points, the float64 interval bounds, and sums that plain float32 gets wrong), stay tight, refuse what
they cannot bound, and refuse settings under which float32 products are not plain sums."""

import numpy as np
import pytest
import torch
from torch import nn

from genbound.models import small_cnn
from genbound.models.architectures import Residual
from genbound.models.normalize import Normalize
from genbound.stability.sound import float32 as i32
from genbound.stability import sound


def _compiled(model, shape):
    net = sound.compile_network(model.eval())
    net.forward(torch.zeros((1, *shape), dtype=torch.float64))  # records the shapes
    return net


def _body_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize((0.3,), (0.2,)),
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        Residual(nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1)), post=nn.ReLU()),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 5),
    )


def _ibp64(net, lo, hi):
    return sound.ibp_pass(net, [(lo, hi)] + [None] * (len(net.nodes) - 1))


@pytest.mark.parametrize("kappa", [0.0, 0.01, 0.1])
def test_intervals_contain_sampled_exact_values_and_the_float64_bounds(kappa):
    model = _body_model()
    net = _compiled(model, (1, 8, 8))
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((6, 1, 8, 8), generator=gen, dtype=torch.float64)
    lo, hi = (x - kappa).clamp(0, 1), (x + kappa).clamp(0, 1)
    got = i32.Float32Intervals(net, len(net.nodes) - 1)(lo, hi)
    ref = _ibp64(net, lo, hi)
    for _ in range(20):  # random points of the boxes, corners included
        u = torch.rand(lo.shape, generator=gen, dtype=torch.float64)
        u = torch.where(u < 0.2, 0.0, torch.where(u > 0.8, 1.0, u))
        vals = net.forward(lo + u * (hi - lo))
        for (l32, h32), v in zip(got, vals):
            assert (l32.double() <= v).all() and (v <= h32.double()).all()
    for (l32, h32), (l64, h64) in zip(got, ref):
        scale = 1e-12 * (1 + h64.abs().max())
        assert (l32.double() <= l64 + scale).all() and (h32.double() >= h64 - scale).all()
        # and tight: the worst-case widening is ~n u of the terms per layer (1e-4 relative here)
        extra = (h32.double() - l32.double()) - (h64 - l64)
        assert extra.max() <= 1e-3 * (1 + h64.abs().max() + l64.abs().max())


def test_sums_float32_gets_wrong_are_enclosed():
    # 2^24 + 1 - 2^24 = 1 exactly; summed left to right, float32 rounds 2^24 + 1 to 2^24 and returns
    # 0 (scalar IEEE additions: the same on every CPU). A BLAS or oneDNN kernel may sum in another
    # order and return 1 (MKL on AVX-512 does), so the enclosure must hold whatever the kernel's
    # order: it must contain the exact value and the kernel's own float32 result.
    big = torch.tensor(2.0 ** 24, dtype=torch.float32)
    assert ((big + 1.0) - big).item() == 0.0
    lin = nn.Linear(3, 1, bias=False)
    conv = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0, -1.0]]))
        conv.weight.copy_(torch.tensor([1.0, 1.0, -1.0]).reshape(1, 3, 1, 1))
    for model, shape in ((nn.Sequential(lin), (3,)), (nn.Sequential(conv), (3, 1, 1))):
        x = torch.tensor([2.0 ** 24, 1.0, 2.0 ** 24], dtype=torch.float64).reshape(1, *shape)
        with torch.no_grad():
            kernel = model(x.float()).item()  # 0 or 1, depending on the kernel's summation order
        net = _compiled(model, shape)
        lo, hi = i32.Float32Intervals(net, len(net.nodes) - 1)(x, x)[-1]
        assert lo.item() <= 1.0 <= hi.item()
        assert lo.item() <= kernel <= hi.item()
        assert hi.item() - lo.item() >= 1.0  # wide enough for every order: 0 and 1 are both possible
    # a residual sum: swap(x) + x = 2^24 + 1 in both coordinates; float32 rounds it to 2^24
    swap = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        swap.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    net = _compiled(nn.Sequential(Residual(swap)), (2,))
    x = torch.tensor([[2.0 ** 24, 1.0]], dtype=torch.float64)
    lo, hi = i32.Float32Intervals(net, len(net.nodes) - 1)(x, x)[-1]
    assert (lo.double() <= 2.0 ** 24 + 1).all() and (2.0 ** 24 + 1 <= hi.double()).all()
    assert (lo.double() < 2.0 ** 24 + 1).any() or (hi.double() > 2.0 ** 24 + 1).any()


def test_inputs_are_rounded_outward():
    x = torch.tensor([[0.1, 1 / 3, 2.0 ** -140]], dtype=torch.float64)  # none exact in float32
    net = _compiled(nn.Sequential(nn.Identity()), (3,))
    lo, hi = i32.Float32Intervals(net, 0)(x, x)[0]
    assert lo.dtype == torch.float32 and (lo.double() <= x).all() and (x <= hi.double()).all()
    assert ((hi.double() - lo.double()) <= 2 * 2.0 ** -24 * x.abs() + 2.0 ** -148).all()


@pytest.mark.parametrize("layer, why", [
    (nn.BatchNorm2d(1), "BatchNorm2d"),
    (nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"), "padding_mode"),
    (nn.AvgPool2d(3, stride=1, padding=1), "windows"),
])
def test_unbounded_modules_are_refused(layer, why):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 1), layer).eval()
    net = _compiled(model, (1, 6, 6))
    with pytest.raises(i32.Unsupported, match=why):
        i32.Float32Intervals(net, len(net.nodes) - 1)


def test_grouped_conv_and_float64_weights_are_refused():
    net = _compiled(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), (2, 5, 5))
    with pytest.raises(i32.Unsupported, match="groups"):
        i32.Float32Intervals(net, len(net.nodes) - 1)
    net = _compiled(nn.Sequential(nn.Linear(3, 2).double()), (3,))
    with pytest.raises(i32.Unsupported, match="float64"):
        i32.Float32Intervals(net, len(net.nodes) - 1)


def test_settings_that_round_float32_products_disable_it(monkeypatch):
    assert i32.unavailable(torch.device("cpu")) is None
    assert "CPU only" in i32.unavailable(torch.device("meta"))
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert "precision" in i32.unavailable(torch.device("cpu"))
    finally:
        torch.set_float32_matmul_precision(old)
    monkeypatch.setenv("ONEDNN_DEFAULT_FPMATH_MODE", "BF16")
    assert "ONEDNN_DEFAULT_FPMATH_MODE" in i32.unavailable(torch.device("cpu"))


def test_gamma_is_highams():
    assert i32.gamma(1) == pytest.approx(2.0 ** -24, rel=1e-6)
    assert i32.gamma(1000) > 1000 * 2.0 ** -24


def test_demo_cnn_body_is_supported():
    model = small_cnn(in_channels=1, width=4, hidden=8, pool=2, seed=0).eval()
    net = _compiled(model, (1, 8, 8))
    bounds = i32.Float32Intervals(net, len(net.nodes) - 1)(torch.zeros(2, 1, 8, 8, dtype=torch.float64),
                                                            torch.full((2, 1, 8, 8), 0.5, dtype=torch.float64))
    assert len(bounds) == len(net.nodes) and all(np.isfinite(b[0].numpy()).all() for b in bounds)


def test_too_many_terms_per_sum_are_refused():
    assert i32.gamma_ok(2 ** 20) and not i32.gamma_ok(2 ** 23)
    with pytest.raises(i32.Unsupported, match="terms"):
        i32.gamma(2 ** 24 - 1)


def test_flatten_keeps_its_own_shape():
    net = _compiled(nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(1, 2)), (1, 3, 4))
    lo, hi = i32.Float32Intervals(net, len(net.nodes) - 1)(torch.zeros(2, 1, 3, 4, dtype=torch.float64),
                                                          torch.ones(2, 1, 3, 4, dtype=torch.float64))[-1]
    assert lo.shape == (2, 6, 4) == hi.shape
