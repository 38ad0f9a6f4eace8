"""Curvature in float32 at a saturated softmax (1 - p_max ~ 1e-10) against float64 exact values.

The network is constructed: a conv + eval-mode BatchNorm + ReLU net whose last layer carries a
bias of 23 on one class, so every example is predicted with ``1 - p_max`` between about 1e-12 and
1e-8 (the regime of adversarial examples of a trained network). The reference is the same network
cast to float64 with :func:`exact` (``torch.func.hessian`` blocks). A plain float32 cross-entropy
gets these traces wrong by a factor of order 2 (checked below, so the tests can fail).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from genbound.curvature import exact, fisher, gradient_noise_trace, hutchinson, hutchpp, top_eigenvalues, wci
from tests.curvature.models import ResBlock


def _saturated_net() -> nn.Module:
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(27, 4),
    )
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
        net[5].bias[2] += 23.0  # every example goes to class 2 with 1 - p_max ~ 1e-10
    return net.eval()


@pytest.fixture(scope="module")
def saturated():
    model = _saturated_net()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 6, 6, generator=g)
    y = torch.randint(0, 4, (24,), generator=g)
    y[:6] = 2  # a few correctly classified, saturated examples as well
    m64 = copy.deepcopy(model).double()
    ref = exact(m64, (x.double(), y), params="all", batch_size=None)
    return model, (x, y), m64, ref


def test_the_case_is_saturated(saturated):
    model, (x, y), m64, _ = saturated
    with torch.no_grad():
        p = torch.softmax(m64(x.double()), dim=1)
    one_minus = 1 - p.max(dim=1).values
    assert float(one_minus.max()) < 1e-8 and float(one_minus.min()) > 1e-13
    assert int((p.argmax(1) != y).sum()) >= 12  # most examples confidently wrong, as adversarial ones


def test_plain_float32_cross_entropy_is_wrong_here(saturated):
    """What the stable loss fixes: float32 double backward of the plain cross-entropy."""
    model, (x, y), _, ref = saturated
    w = model[5].weight
    g = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), w, create_graph=True)[0]
    diag = [torch.autograd.grad(g.reshape(-1)[i], w, retain_graph=True)[0].reshape(-1)[i] for i in range(w.numel())]
    naive = float(torch.stack(diag).double().sum())
    assert abs(naive / ref["5.weight"].trace - 1) > 0.2


def test_exact_float32_matches_float64(saturated):
    model, data, _, ref = saturated
    est = exact(model, data, params="all", batch_size=None)
    for e, r in zip(est.layers, ref.layers):
        assert e.trace == pytest.approx(r.trace, rel=1e-4), e.name


def test_fisher_and_trace_c_float32_match_float64(saturated):
    model, (x, y), m64, ref = saturated
    f = fisher(model, (x, y), params="all", batch_size=None)
    for e, r in zip(f.layers, ref.layers):
        assert e.trace == pytest.approx(r.trace, rel=1e-4), e.name
    c32 = gradient_noise_trace(model, (x, y), params="all")
    c64 = gradient_noise_trace(m64, (x.double(), y), params="all")
    for a, b in zip(c32.layers, c64.layers):
        assert a.trace == pytest.approx(b.trace, rel=1e-4), a.name


@pytest.mark.parametrize(
    ("estimator", "kwargs"),
    [
        ("hutchpp", dict(sketch=4, rel_se=0.05)),
        ("hutchpp", dict(sketch=0, rel_se=0.05)),
        ("hutchinson", dict(probe_mode="layer", n_probes=300)),
        ("hutchinson", dict(probe_mode="joint", n_probes=300, products="hessian")),
        ("hutchinson", dict(probe_mode="joint", n_probes=300, products="ggn")),
    ],
)
def test_stochastic_estimates_within_4_se_of_float64_exact(saturated, estimator, kwargs):
    model, data, _, ref = saturated
    fn = hutchpp if estimator == "hutchpp" else hutchinson
    est = fn(model, data, params="all", batch_size=None, seed=0, **kwargs)
    for e, r in zip(est.layers, ref.layers):
        # 1e-4: a tensor no larger than the sketch is computed exactly (se 0), to float32 rounding
        assert abs(e.trace - r.trace) <= 4 * e.se + 1e-4 * abs(r.trace), (estimator, kwargs, e.name, e.trace, e.se, r.trace)
        if kwargs.get("probe_mode") != "joint":
            # and the error bar is informative. Not so for joint probes here: the cross blocks of the
            # Hessian carry (p - e_y) * d2z/dW_k dW_j, of order 1 for a misclassified example, where
            # the diagonal blocks are of order 1 - p_max
            assert e.se <= 0.25 * abs(r.trace), e.name
    if kwargs.get("rel_se"):
        assert all(est.info["converged"].values())


def test_top_eigenvalue_float32_matches_float64(saturated):
    model, (x, y), m64, _ = saturated
    params = ["5.weight"]
    a = top_eigenvalues(model, (x, y), params=params, method="lanczos", tol=1e-8)
    b = top_eigenvalues(m64, (x.double(), y), params=params, method="lanczos", tol=1e-10)
    assert a.eigenvalues[0] == pytest.approx(b.eigenvalues[0], rel=1e-3)


def _frozen(model, x, y):
    return x


def test_wci_float32_matches_float64(saturated):
    model, (x, y), m64, _ = saturated
    common = dict(subset_size=None, attack=_frozen, n_train=1000, batch_size=24)
    w64 = wci(m64, (x.double(), y), estimator="exact", **common)
    w32 = wci(model, (x, y), estimator="exact", **common)
    assert w32.wci == pytest.approx(w64.wci, rel=1e-4)
    for est in ("hutchpp", "hutchinson"):
        r = wci(model, (x, y), estimator=est, rel_se=0.05, seed=0, **common)
        assert abs(r.wci - w64.wci) <= 4 * r.wci_se, (est, r.wci, r.wci_se, w64.wci)
        for a, b in zip(r.layers, w64.layers):
            assert abs(a.trace_h - b.trace_h) <= 4 * a.trace_h_se, (est, a.name)
        assert r.protocol["rel_se"] == 0.05 and all(r.protocol["converged"].values())


class _ResNetBN(nn.Module):
    """Stem conv + BN, two residual blocks with BN, a strided block with a 1x1 shortcut, BN eval."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.block1 = ResBlock(4)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.bn_down = nn.BatchNorm2d(6)
        self.short = nn.Sequential(nn.Conv2d(4, 6, 1, stride=2, bias=False), nn.BatchNorm2d(6))
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block1(self.stem(x))
        h = torch.relu(self.bn_down(self.down(h)) + self.short(h))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


def test_small_resnet_with_eval_batchnorm_float32():
    torch.manual_seed(11)
    model = _ResNetBN()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.3, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.fc.weight.mul_(12.0)  # confident predictions, as a trained net
    model.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, 8, 8, generator=g)
    y = torch.randint(0, 5, (16,), generator=g)
    m64 = copy.deepcopy(model).double()
    ref = exact(m64, (x.double(), y), batch_size=None)
    assert [lt.name for lt in ref.layers] == [
        "stem.0.weight", "block1.conv1.weight", "block1.conv2.weight", "down.weight", "short.0.weight", "fc.weight"]
    # the Fisher identity holds for this piecewise-linear net with eval-mode BN (float64)
    f64 = fisher(m64, (x.double(), y), batch_size=None)
    for a, b in zip(f64.layers, ref.layers):
        assert a.trace == pytest.approx(b.trace, rel=1e-8), a.name
    e32 = exact(model, (x, y), batch_size=None)
    for a, b in zip(e32.layers, ref.layers):
        assert a.trace == pytest.approx(b.trace, rel=1e-4), a.name
    est = hutchpp(model, (x, y), sketch=8, rel_se=0.05, batch_size=8, seed=0)
    for a, b in zip(est.layers, ref.layers):
        assert abs(a.trace - b.trace) <= 4 * a.se, (a.name, a.trace, a.se, b.trace)
        assert math.isfinite(a.se) and a.se <= 0.05 * abs(a.trace) * 1.0001
    assert all(m.training is False for m in model.modules())
