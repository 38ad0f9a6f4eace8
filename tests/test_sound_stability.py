"""Soundness tests for genbound.stability.sound on tiny networks.

A certificate is checked against an exhaustive search of the ball: a fine grid (d <= 4), random
points and corners (and a few PGD steps for the 1x4x4 conv net). No certified sample may flip,
and every margin lower bound must lie below every sampled margin.
"""

import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

from genbound.errors import UserInputError
from genbound.stability.sound import (
    Normalize,
    Residual,
    InputSet,
    compile_network,
    margin_lower_bounds,
    sound_stability,
)

torch.set_num_threads(1)


# ------------------------------------------------------------------ networks


def mlp(d=2, h=12, c=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, c)).eval()


def _set_bn(bn, seed):
    g = torch.Generator().manual_seed(seed)
    bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
    bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    bn.weight.data.copy_(torch.randn(bn.num_features, generator=g))
    bn.bias.data.copy_(torch.randn(bn.num_features, generator=g) * 0.2)


def residual_mlp(seed=1):
    torch.manual_seed(seed)
    bn = nn.BatchNorm1d(8)
    _set_bn(bn, seed)
    net = nn.Sequential(
        Normalize([0.4, 0.5, 0.6, 0.5], [0.3, 0.2, 0.25, 0.3]),
        nn.Linear(4, 8),
        nn.ReLU(),
        Residual(nn.Sequential(nn.Linear(8, 8), bn, nn.ReLU(), nn.Linear(8, 8)), post=nn.ReLU()),
        nn.Linear(8, 3),
    )
    return net.eval()


def conv_net(seed=2):
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(3)
    _set_bn(bn, seed)
    bn2 = nn.BatchNorm2d(3)
    _set_bn(bn2, seed + 1)
    net = nn.Sequential(
        Normalize([0.5], [0.25]),
        nn.Conv2d(1, 3, 3, padding=1),
        bn,
        nn.ReLU(),
        Residual(
            nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), bn2, nn.ReLU(), nn.Conv2d(3, 3, 1)),
            shortcut=nn.Conv2d(3, 3, 1),
            post=nn.ReLU(),
        ),
        nn.AvgPool2d(2),
        nn.Sequential(nn.Flatten(), nn.Linear(12, 3)),
    )
    return net.eval()


def gap_net(seed=3):
    """Conv + adaptive average pooling head (the small-ResNet pattern)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


@pytest.fixture(scope="module")
def trained():
    """A briefly trained 2-d classifier on three blobs, and its training inputs."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.25, 0.25], [0.75, 0.3], [0.5, 0.8]])
    y = torch.arange(3).repeat_interleave(20)
    x = (centers[y] + 0.08 * torch.randn(60, 2, generator=g)).clamp(0, 1)
    net = mlp(2, 10, 3, seed=5).train()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), x


# ------------------------------------------------------------------ ground truth by search


def _f64(net):
    import copy

    return copy.deepcopy(net).double().eval()


def ball_points(x, kappa, norm, per_dim=11, n_random=400, seed=0):
    """Grid (d <= 4), corners, and random points of the ball around x, inside [0, 1]^d."""
    x = x.double().reshape(-1)
    d = x.numel()
    g = torch.Generator().manual_seed(seed)
    pts = []
    if d <= 4:
        t = torch.linspace(-1, 1, per_dim, dtype=torch.float64)
        pts.append(torch.cartesian_prod(*([t] * d)).reshape(-1, d))
    if d <= 10:
        pts.append(torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64))
    else:  # a random subset of the 2^d corners
        pts.append(torch.randint(0, 2, (n_random, d), generator=g).double() * 2 - 1)
    pts.append(2 * torch.rand(n_random, d, generator=g, dtype=torch.float64) - 1)
    u = torch.cat(pts)
    if norm == "linf":
        p = x + kappa * u
    else:
        # box points inside the l2 ball, plus points on the sphere
        inside = u[u.norm(dim=1) <= 1]
        sph = torch.randn(n_random, d, generator=g, dtype=torch.float64)
        sph = sph / sph.norm(dim=1, keepdim=True)
        p = torch.cat([x + kappa * inside, x + kappa * sph, x + kappa * sph * 0.5])
    return p.clamp(0, 1)


def pgd_min_margin(net64, x, c, kappa, steps=10, restarts=2, seed=0):
    """A few steps of l_inf PGD on the worst margin, for inputs too big for a grid."""
    g = torch.Generator().manual_seed(seed)
    x = x.double()
    best = float("inf")
    for _ in range(restarts):
        xa = (x + kappa * (2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1)).clamp(0, 1)
        for _ in range(steps):
            xa.requires_grad_(True)
            z = net64(xa.unsqueeze(0))[0]
            other = torch.cat([z[:c], z[c + 1 :]])
            m = z[c] - other.max()
            best = min(best, m.item())
            (gr,) = torch.autograd.grad(m, xa)
            with torch.no_grad():
                xa = xa - 0.25 * kappa * gr.sign()
                xa = torch.max(torch.min(xa, x + kappa), x - kappa).clamp(0, 1)
    return best


def sampled_margins(net64, x, kappa, norm):
    """Per-sample (min over sampled ball points) of each margin z_c - z_j: [n, C-1] and pred."""
    with torch.no_grad():
        z0 = net64(x.double())
        pred = z0.argmax(1)
        out = []
        for i in range(x.shape[0]):
            p = ball_points(x[i], kappa, norm).reshape(-1, *x.shape[1:])
            z = net64(p)
            c = pred[i]
            m = z[:, c : c + 1] - z
            m = torch.cat([m[:, :c], m[:, c + 1 :]], 1)
            out.append(m.min(0).values)
    return torch.stack(out), pred


def check_sound(net, x, kappas, norm, method, pgd=False, **kw):
    res = sound_stability(net, x, kappas, norm=norm, method=method, progress=False, **kw)
    net64 = _f64(net)
    for j, k in enumerate(kappas):
        mins, pred = sampled_margins(net64, x, k, norm)
        flips = (mins.min(1).values <= 0).numpy()
        assert not np.any(res.stable[:, j] & flips), f"{method} certified a sample that flips at kappa={k}"
        if pgd and norm == "linf":
            for i in np.nonzero(res.stable[:, j])[0]:
                assert pgd_min_margin(net64, x[i], int(pred[i]), k) > 0
    return res


def check_bounds_below_samples(net, x, kappa, norm):
    net64 = _f64(net)
    cnet = compile_network(net)
    x64 = x.double()
    k = kappa * (1 + 1e-9)
    inset = InputSet(x64, (x64 - k).clamp(0, 1), (x64 + k).clamp(0, 1), norm, torch.full((x.shape[0],), k, dtype=torch.float64))
    mins, pred = sampled_margins(net64, x, kappa, norm)
    cnet.forward(x64)
    ibp, crown = margin_lower_bounds(cnet, x64, pred, inset, "crown")
    assert torch.all(ibp <= mins + 1e-9), "IBP margin bound above a sampled margin"
    assert torch.all(crown <= mins + 1e-9), "CROWN margin bound above a sampled margin"
    return ibp, crown


# ------------------------------------------------------------------ tests: soundness

KAPPAS = [0.005, 0.02, 0.05, 0.1]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_random_mlp_sound(method, norm):
    net = mlp(2, 12, 3, seed=0)
    x = torch.rand(25, 2, generator=torch.Generator().manual_seed(1))
    check_sound(net, x, KAPPAS, norm, method)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_margin_bounds_below_sampled_margins(norm):
    for net, d in [(mlp(3, 10, 4, seed=3), 3), (residual_mlp(), 4)]:
        x = torch.rand(12, d, generator=torch.Generator().manual_seed(2))
        check_bounds_below_samples(net, x, 0.05, norm)


def test_conv_net_bounds_below_samples():
    net = conv_net()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    check_bounds_below_samples(net, x, 0.03, "linf")
    check_bounds_below_samples(gap_net(), x, 0.03, "linf")


def test_trained_net_sound_and_counts(trained):
    net, x = trained
    kappas = [0.01, 0.03, 0.06, 0.1]
    res_i = check_sound(net, x, kappas, "linf", "ibp")
    res_c = check_sound(net, x, kappas, "linf", "crown")
    res_e = check_sound(net, x, kappas, "linf", "exact")
    ci = res_i.stable.sum(0)
    cc = res_c.stable.sum(0)
    ce = res_e.stable.sum(0)
    assert np.all(cc >= ci) and np.all(ce >= cc)
    print("trained 2-d MLP linf counts ibp/crown/exact:", ci.tolist(), cc.tolist(), ce.tolist())


def test_residual_mlp_sound_all_methods():
    net = residual_mlp()
    x = torch.rand(15, 4, generator=torch.Generator().manual_seed(4))
    kappas = [0.01, 0.04, 0.1]
    for norm in ["linf", "l2"]:
        ri = check_sound(net, x, kappas, norm, "ibp")
        rc = check_sound(net, x, kappas, norm, "crown")
        assert np.all(rc.stable >= ri.stable)
    rc = check_sound(net, x, kappas, "linf", "crown")
    re = check_sound(net, x, kappas, "linf", "exact")
    assert np.all(re.stable >= rc.stable)


@pytest.fixture(scope="module")
def trained_conv():
    """conv_net briefly trained on 4x4 images: which of three regions is brightest."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(90, 1, 4, 4, generator=g)
    y = torch.stack([x[:, 0, :2, :].mean((1, 2)), x[:, 0, 2:, :2].mean((1, 2)), x[:, 0, 2:, 2:].mean((1, 2))], 1).argmax(1)
    net = conv_net().train()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), x[:12]


def test_conv_net_sound_pgd_corners(trained_conv):
    """1x4x4 conv + eval BN + residual + avg pool: no certified sample flips (random, corners, PGD)."""
    net, x = trained_conv
    kappas = [0.005, 0.01, 0.02, 0.04, 0.08]
    ri = check_sound(net, x, kappas, "linf", "ibp", pgd=True)
    rc = check_sound(net, x, kappas, "linf", "crown", pgd=True)
    assert np.all(rc.stable >= ri.stable)
    assert rc.stable.sum() > ri.stable.sum()
    r2 = check_sound(net, x, kappas, "l2", "crown")
    # IBP-only intermediates (the cheap mode for large conv nets) and tiny back-substitution chunks
    rci = check_sound(net, x, kappas, "linf", "crown", intermediate="ibp")
    rcs = check_sound(net, x, kappas, "linf", "crown", max_rows=2, batch_size=3)
    assert np.all(rci.stable >= ri.stable) and np.array_equal(rcs.stable, rc.stable)
    print("trained conv 1x4x4 linf counts ibp/crown:", ri.stable.sum(0).tolist(), rc.stable.sum(0).tolist(),
          "l2 crown:", r2.stable.sum(0).tolist())


def test_conv_bounds_below_pgd(trained_conv):
    """CROWN margin bounds lie below the margins PGD reaches (a direct check of the bound values)."""
    net, x = trained_conv
    check_bounds_below_samples(net, x, 0.04, "linf")


def test_crown_strictly_beats_ibp():
    net = mlp(2, 12, 3, seed=0)
    x = torch.rand(25, 2, generator=torch.Generator().manual_seed(1))
    ri = sound_stability(net, x, KAPPAS, method="ibp", progress=False)
    rc = sound_stability(net, x, KAPPAS, method="crown", progress=False)
    assert np.all(rc.stable >= ri.stable)  # combined certificate dominates IBP sample-wise
    assert rc.stable.sum() > ri.stable.sum()
    print("random MLP linf counts ibp/crown:", ri.stable.sum(0).tolist(), rc.stable.sum(0).tolist())


def test_exact_agrees_with_search(trained):
    """exact: 'stable' never flips; a flip found by the grid is always 'unstable' (complete here)."""
    net, x = trained
    x = x[::3]
    kappas = [0.03, 0.1, 0.2]
    rc = sound_stability(net, x, kappas, method="crown", progress=False)
    re = sound_stability(net, x, kappas, method="exact", progress=False)
    assert np.all(re.stable >= rc.stable)
    net64 = _f64(net)
    n_flip = 0
    for j, k in enumerate(kappas):
        mins, _ = sampled_margins(net64, x, k, "linf")
        flips = (mins.min(1).values <= 0).numpy()
        st = re.status[:, j]
        tried = st != "untried"
        assert not np.any(re.stable[:, j] & flips)
        # on this tiny net the search decides everything it tries
        assert not np.any(st[tried] == "undecided")
        # where the grid finds a flip, exact must say unstable
        assert np.all(st[tried & flips] == "unstable")
        n_flip += int(np.sum(tried & flips))
    assert n_flip > 0
    print("trained 2-d MLP (20 samples) counts crown/exact:", rc.stable.sum(0).tolist(), re.stable.sum(0).tolist())


def test_exact_counterexample_is_real(trained):
    from genbound.stability.sound import ExactSearch

    net, x = trained
    x = x[::3]
    net64 = _f64(net)
    cnet = compile_network(net)
    x64 = x.double()
    z = cnet.forward(x64)[-1]
    k = 0.2
    found = 0
    for i in range(x.shape[0]):
        lo = (x64[i] - k).clamp(0, 1).numpy()
        hi = (x64[i] + k).clamp(0, 1).numpy()
        c = int(z[i].argmax())
        s = ExactSearch(cnet, x64[i : i + 1], c, lo, hi, 1e-9, 20000, 1e-9)
        if s.run() == "unstable":
            found += 1
            xc = torch.from_numpy(s.counterexample)
            assert np.all(s.counterexample >= lo) and np.all(s.counterexample <= hi)
            zc = net64(xc.unsqueeze(0))[0]
            assert (zc[c] - torch.cat([zc[:c], zc[c + 1 :]]).max()).item() <= 0
    assert found > 0


# ------------------------------------------------------------------ API contract


def test_monotone_and_evidence():
    net = mlp(2, 12, 3, seed=0)
    x = torch.rand(25, 2, generator=torch.Generator().manual_seed(1))
    res = sound_stability(net, x, [0.0, 0.01, 0.05, 0.2, 0.5], method="crown", progress=False)
    s = res.stable
    assert s.dtype == bool and s.shape == (25, 5)
    assert np.all(s[:, 1:] <= s[:, :-1])
    ev = res.evidence
    assert ev["sound"] is True and ev["method"] == "crown" and ev["norm"] == "linf"
    assert ev["status"] == "verified" and ev["unsupported_reason"] is None
    assert ev["proven_stable_per_kappa"] == s.sum(0).tolist()
    assert ev["tolerance"]["rtol"] == 1e-9
    # early stop: never tries more samples than were proven at the previous kappa
    for j in range(1, 5):
        assert ev["tried_per_kappa"][j] <= ev["proven_stable_per_kappa"][j - 1]


class Custom(nn.Module):
    def forward(self, x):
        return x * 2


class SeqWithForward(nn.Sequential):
    def forward(self, x):
        return super().forward(x).clamp(max=0.1)


class LyingResidual(nn.Module):
    genbound_residual = True

    def __init__(self):
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.shortcut = None
        self.post = None

    def forward(self, x):
        return torch.tanh(self.block(x)) + x


@pytest.mark.parametrize(
    "bad",
    [
        lambda: nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3)),
        lambda: nn.Sequential(nn.Linear(4, 4), Custom(), nn.Linear(4, 3)),
        lambda: SeqWithForward(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)),
        lambda: nn.Sequential(LyingResidual(), nn.Linear(4, 3)),
        lambda: nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 3)),
    ],
)
def test_unsupported_is_unverified(bad):
    net = bad().eval()
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0))
    for method in ["ibp", "crown"]:
        res = sound_stability(net, x, [0.001, 0.01], method=method, progress=False)
        assert not res.stable.any()
        assert res.evidence["status"] == "unverified"
        assert res.evidence["unsupported_reason"]
        assert np.all(res.status == "unverified")


def test_maxpool_unverified():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.rand(4, 1, 4, 4)
    res = sound_stability(net, x, [0.001], progress=False)
    assert res.evidence["status"] == "unverified" and "MaxPool2d" in res.evidence["unsupported_reason"]
    assert not res.stable.any()


def test_train_mode_refused():
    net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(UserInputError, match="eval"):
        sound_stability(net.train(), torch.rand(3, 2), [0.01], progress=False)
    net2 = nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.5), nn.Linear(4, 2)).train()
    with pytest.raises(UserInputError, match="eval"):
        sound_stability(net2, torch.rand(3, 2), [0.01], progress=False)
    # eval-mode dropout is the identity and supported
    res = sound_stability(net2.eval(), torch.rand(3, 2), [0.01], progress=False)
    assert res.evidence["status"] == "verified"


def test_user_errors():
    net = mlp()
    x = torch.rand(3, 2)
    with pytest.raises(UserInputError, match="ascending"):
        sound_stability(net, x, [0.1, 0.01], progress=False)
    with pytest.raises(UserInputError, match="method"):
        sound_stability(net, x, [0.1], method="pgd", progress=False)
    with pytest.raises(UserInputError, match="domain"):
        sound_stability(net, x + 2, [0.1], progress=False)
    with pytest.raises(UserInputError, match="linf"):
        sound_stability(net, x, [0.1], method="exact", norm="l2", progress=False)
    with pytest.raises(UserInputError, match="tiny"):
        sound_stability(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval(), torch.rand(2, 1, 4, 4), [0.1], method="exact", progress=False)


def test_genbound_layers_protocol_and_gap():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = gap_net()
            self.genbound_layers = [self.features]

        def forward(self, x):
            return self.features(x)

    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(9))
    res = check_sound(Wrapper().eval(), x, [0.005, 0.02], "linf", "crown", pgd=True)
    assert res.evidence["status"] == "verified"


def test_zero_kappa_and_empty():
    net = mlp()
    x = torch.rand(10, 2, generator=torch.Generator().manual_seed(0))
    res = sound_stability(net, x, [0.0], progress=False)
    assert res.stable[:, 0].all()  # random float inputs: no exact ties
    res = sound_stability(net, torch.zeros(0, 2), [0.1], progress=False)
    assert res.stable.shape == (0, 1)


def test_reference_architectures_are_verifiable():
    """The models layer's MLP, CNN and ResNet (with Normalize in front) follow the verifier's protocol:
    a tiny radius is certified for most samples, never 'unverified'."""
    from genbound.models import mlp, small_cnn, small_resnet, with_normalization
    from genbound.data import Normalization

    torch.manual_seed(0)
    norm = Normalization(mean=(0.5,), std=(0.25,))
    x = torch.rand(6, 1, 8, 8)
    for net in (mlp(input_shape=(1, 8, 8), hidden=(16,)), small_cnn(width=4, hidden=8),
                small_resnet(width=4, blocks=(1, 1), batchnorm=True)):
        model = with_normalization(net, norm).eval()
        res = sound_stability(model, x, [1e-5], method="crown", progress=False)
        assert res.evidence["status"] == "verified", res.evidence.get("unsupported_reason")
        assert res.stable[:, 0].mean() > 0.5
