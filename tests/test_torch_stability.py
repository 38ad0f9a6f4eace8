"""Stability engines: PGD finds the flips a linear model has (closed-form distance to its boundary),
noise-engine sampling statistics, monotone flags, clipping, predicted-label targeting."""

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from genbound.data import TensorSource
from genbound.errors import UserInputError
from genbound.stability import noise_stability, pgd_stability, sample_ball, stability_flags
from genbound.torch_utils import generator


D = 16
KAPPAS = np.geomspace(0.004, 0.3, 14)


def linear_binary(seed=0):
    """logits = [0, w.x + b] on flattened (1, 4, 4) inputs; w, b known."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(D, generator=g)
    b = -float(w @ torch.full((D,), 0.5))
    lin = nn.Linear(D, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1] = w
        lin.bias.copy_(torch.tensor([0.0, b]))
    return nn.Sequential(nn.Flatten(), lin).eval(), w, b


def interior_points(n=120, seed=1):
    x = torch.from_numpy(np.random.default_rng(seed).uniform(0.3, 0.7, (n, 1, 4, 4)).astype(np.float32))
    return TensorSource(x, np.zeros(n, np.int64), num_classes=2)


def distances(src, w, b, norm):
    x, _ = src.tensors()
    margin = (x.reshape(len(src), -1).double() @ w.double() + b).abs().numpy()
    return margin / (w.abs().sum().item() if norm == "linf" else w.norm().item())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_flips_exactly_beyond_the_closed_form_distance(norm):
    model, w, b = linear_binary()
    src = interior_points()
    dist = distances(src, w, b, norm)  # box constraint inactive: x in [0.3,0.7], kappa <= 0.3
    res = pgd_stability(model, src, KAPPAS, norm=norm, steps=10, seed=0, device="cpu", progress_bar=False)
    assert res.stable.shape == (len(src), KAPPAS.size) and res.stable.dtype == bool
    ratio = KAPPAS[None, :] / dist[:, None]
    must_flip, must_hold = ratio > 1.1, ratio < 0.999  # tolerance band: PGD-l2 reaches cos >= 0.98 in 10 steps
    assert must_flip.sum() > 100 and must_hold.sum() > 100
    assert not res.stable[must_flip].any(), "PGD missed a flip that exists"
    assert res.stable[must_hold].all(), "PGD reported a flip inside the distance to the boundary"
    assert res.evidence["sound"] is False and res.evidence["method"] == "pgd"


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_flags_monotone_and_early_exit_finds_every_full_flip(norm):
    model, w, b = linear_binary(seed=3)
    src = interior_points(80, seed=4)
    kw = dict(norm=norm, steps=5, restarts=2, seed=11, device="cpu", progress_bar=False, batch_size=32)
    fast = pgd_stability(model, src, KAPPAS, **kw)
    full = pgd_stability(model, src, KAPPAS, early_exit=False, carry_flips=False, **kw)
    assert np.all(np.diff(fast.stable.astype(int), axis=1) <= 0)
    assert not (~full.stable & fast.stable).any()
    fe, ff = fast.evidence["model_evals"], full.evidence["model_evals"]
    assert ff["forward"] == 80 + 80 * KAPPAS.size * 2 * 6 and ff["backward"] == 80 * KAPPAS.size * 2 * 5
    assert fe["forward"] < ff["forward"] and fe["backward"] < ff["backward"]


def test_pgd_attacks_the_predicted_label_not_the_true_one():
    model, w, b = linear_binary()
    src = interior_points(60)
    other = TensorSource(src.x, np.ones(60, np.int64), num_classes=2)
    kw = dict(steps=5, seed=0, device="cpu", progress_bar=False)
    a, c = pgd_stability(model, src, KAPPAS, **kw), pgd_stability(model, other, KAPPAS, **kw)
    assert np.array_equal(a.stable, c.stable) and np.array_equal(a.pred, c.pred)


class RangeRecorder(nn.Module):
    """Wraps a model and records how far its inputs stray from x0 and from [0, 1]."""

    def __init__(self, inner, x0):
        super().__init__()
        self.inner, self.x0 = inner, x0
        self.max_linf = self.max_l2 = 0.0
        self.lo, self.hi = 0.0, 1.0

    def forward(self, x):
        d = (x.detach() - self.x0).reshape(x.shape[0], -1)
        self.max_linf = max(self.max_linf, float(d.abs().max()))
        self.max_l2 = max(self.max_l2, float(d.norm(dim=1).max()))
        self.lo, self.hi = min(self.lo, float(x.detach().min())), max(self.hi, float(x.detach().max()))
        return self.inner(x)


@pytest.mark.parametrize("engine,norm", [("pgd", "linf"), ("pgd", "l2"), ("noise", "linf"), ("noise", "l2"),
                                         ("noise", "gaussian")])
def test_every_evaluated_input_stays_in_cube_and_ball(engine, norm):
    x0 = torch.tensor([0.0, 1.0, 0.02, 0.98] * 4).reshape(1, 1, 4, 4)  # clipping is active
    src = TensorSource(x0.repeat(8, 1, 1, 1), np.zeros(8, np.int64), num_classes=2)
    model, _, _ = linear_binary()
    rec = RangeRecorder(model, x0).eval()
    kappas = [0.01, 0.05]
    if engine == "pgd":
        pgd_stability(rec, src, kappas, norm=norm, steps=4, device="cpu", progress_bar=False, early_exit=False,
                      carry_flips=False)
    else:
        noise_stability(rec, src, kappas, kind=norm, draws=16, device="cpu", progress_bar=False)
    assert rec.lo >= 0.0 and rec.hi <= 1.0
    if norm == "linf":
        assert rec.max_linf <= 0.05 + 1e-6
    elif norm == "l2":
        assert rec.max_l2 <= 0.05 + 1e-6


def test_uniform_l2_ball_radius_and_direction_law():
    d, kappa = 5, 0.3
    delta = sample_ball("l2", kappa, 4000, (d,), generator(0, 1))
    r = delta.norm(dim=1).double().numpy()
    assert r.max() <= kappa * (1 + 1e-6)
    # uniform in the ball <=> (r / kappa)^d ~ Uniform(0, 1)
    assert stats.kstest((r / kappa) ** d, "uniform").pvalue > 1e-3
    u = (delta / delta.norm(dim=1, keepdim=True)).double()
    assert u.mean(0).abs().max() < 0.06  # isotropic direction


def test_uniform_linf_ball_and_gaussian_laws():
    kappa = 0.1
    delta = sample_ball("linf", kappa, 3000, (4,), generator(0, 2)).double()
    assert delta.abs().max() <= kappa and delta.abs().max() > 0.99 * kappa
    assert stats.kstest(((delta.flatten() + kappa) / (2 * kappa)).numpy(), "uniform").pvalue > 1e-3
    gauss = sample_ball("gaussian", kappa, 3000, (4,), generator(0, 3)).double()
    assert abs(gauss.std().item() - kappa) < 0.005
    with pytest.raises(UserInputError):
        sample_ball("l1", kappa, 1, (4,), generator(0, 0))


def test_noise_engine_flags_are_monotone_and_never_beyond_truth():
    model, w, b = linear_binary()
    src = interior_points(100)
    for kind in ("linf", "l2"):
        res = noise_stability(model, src, KAPPAS, kind=kind, draws=64, seed=2, device="cpu", progress_bar=False)
        assert res.stable.dtype == bool and res.stable.shape == (100, KAPPAS.size)
        assert np.all(np.diff(res.stable.astype(int), axis=1) <= 0)
        dist = distances(src, w, b, kind)
        # any flip found is real: it lies within the ball, so kappa >= distance to the boundary
        assert (KAPPAS[None, :] >= dist[:, None] * (1 - 1e-5))[~res.stable].all()
        assert (~res.stable[:, -1]).sum() > 0
        assert res.evidence["draws"] == 64 and res.evidence["kind"] == kind


def test_noise_engine_is_deterministic_and_batch_size_independent():
    model, _, _ = linear_binary()
    src = interior_points(50)
    a = noise_stability(model, src, KAPPAS, draws=8, seed=5, batch_size=7, device="cpu", progress_bar=False)
    c = noise_stability(model, src, KAPPAS, draws=8, seed=5, batch_size=50, device="cpu", progress_bar=False)
    assert np.array_equal(a.stable, c.stable)


def test_dispatch_and_kappa_validation():
    model, _, _ = linear_binary()
    src = interior_points(4)
    res = stability_flags(model, src, [0.0, 0.1], method="noise", draws=2, device="cpu", progress_bar=False)
    assert res.stable[:, 0].all()
    for bad in ([0.2, 0.1], [], [-0.1], [2.0], [0.1, 0.1]):
        with pytest.raises(UserInputError):
            stability_flags(model, src, bad, method="pgd", device="cpu", progress_bar=False)
    with pytest.raises(UserInputError):
        stability_flags(model, src, [0.1], method="fgsm")  # no such method
    with pytest.raises(UserInputError):  # a parameter the sound engines do not take
        stability_flags(model, src, [0.1], method="ibp", seed=0)


def test_sound_methods_are_engines_of_the_registry():
    """ibp / crown / exact run through the same registry and protocol as pgd, and say they are sound;
    their flags are those of the tensor API, and a proof never contradicts a PGD flip."""
    from genbound.stability.sound import sound_stability

    model, _, _ = linear_binary()
    src = interior_points(32)
    x, _ = src.get(np.arange(len(src)))
    pgd = stability_flags(model, src, [0.05, 0.2], method="pgd", device="cpu", progress_bar=False)
    with pytest.raises(UserInputError, match="tiny inputs"):  # d = 16
        stability_flags(model, src, [0.05], method="exact", device="cpu", progress_bar=False)
    for method in ("ibp", "crown"):
        res = stability_flags(model, src, [0.05, 0.2], method=method, device="cpu", progress_bar=False, batch_size=8)
        assert res.sound and res.evidence["method"] == method and res.evidence["status"] == "verified"
        ref = sound_stability(model, x, [0.05, 0.2], method=method, progress=False)
        assert np.array_equal(res.stable, ref.stable)
        assert res.evidence["proven_stable_per_kappa"] == res.stable.sum(0).tolist()
        assert not (res.stable & ~pgd.stable).any()
        assert np.array_equal(res.pred, pgd.pred)


def test_shards_merge_into_the_whole_run():
    """A run over disjoint shards of the indices, merged, equals the run over the whole source."""
    from genbound.stability import merge_batches
    from genbound.stability.engine import BatchResult

    model, _, _ = linear_binary()
    src = interior_points(20)
    whole = stability_flags(model, src, [0.05, 0.2], method="pgd", device="cpu", progress_bar=False, batch_size=6)
    parts = [stability_flags(model, src, [0.05, 0.2], method="pgd", device="cpu", progress_bar=False, batch_size=4,
                             indices=np.arange(s, 20, 3)) for s in (2, 0, 1)]
    idx, stable, pred, counts, _ = merge_batches([BatchResult(p.index, p.stable, p.pred, {"forward": 1}) for p in parts], 2)
    assert np.array_equal(idx, np.arange(20))
    assert np.array_equal(stable, whole.stable) and np.array_equal(pred, whole.pred)
    assert counts["forward"] == 3


def test_pgd_warns_and_restores_train_mode():
    model, _, _ = linear_binary()
    model.train()
    with pytest.warns(UserWarning, match="train mode"):
        pgd_stability(model, interior_points(4), [0.1], steps=2, device="cpu", progress_bar=False)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_small_cnn_early_exit_covers_full_attack_and_spec_arrays():
    """A real (tiny) network: early exit finds every flip of the full attack; the layer outputs are
    exactly the spec §1 arrays (int64 cells, uint8 losses, bool[n, J] stable flags)."""
    from genbound.collect import collect
    from genbound.data import load_dataset
    from genbound.models import small_cnn, with_normalization
    from genbound.partition import PartitionSpec, build_partition

    torch.manual_seed(0)
    digits = load_dataset("digits")
    train, held = digits.subset(np.arange(40)), digits.subset(np.arange(40, 70))
    model = with_normalization(small_cnn(width=4, hidden=16, batchnorm=True, seed=1), digits.normalization).eval()
    kappas = [0.02, 0.05, 0.1, 0.2]
    kw = dict(steps=3, seed=4, device="cpu", progress_bar=False, batch_size=16)
    fast = pgd_stability(model, train, kappas, **kw)
    full = pgd_stability(model, train, kappas, early_exit=False, carry_flips=False, **kw)
    assert not (~full.stable & fast.stable).any()
    part = build_partition(PartitionSpec("heldout", 5, seed=0, label_pure=True, num_classes=10), input_dim=64, heldout=held)
    arrays = {"train_cell": part.assign(train, device="cpu", progress_bar=False),
              "train_loss": collect(model, train, device="cpu", progress_bar=False).loss,
              "train_stable": fast.stable,
              "heldout_cell": part.assign(held, device="cpu", progress_bar=False),
              "heldout_loss": collect(model, held, device="cpu", progress_bar=False).loss}
    dtypes = {k: (v.dtype, v.shape) for k, v in arrays.items()}
    assert dtypes == {"train_cell": (np.int64, (40,)), "train_loss": (np.uint8, (40,)),
                      "train_stable": (np.bool_, (40, 4)), "heldout_cell": (np.int64, (30,)),
                      "heldout_loss": (np.uint8, (30,))}
    assert np.array_equal(fast.pred, collect(model, train, device="cpu", progress_bar=False).pred)


def test_random_draws_depend_on_the_radius_not_its_position_in_the_grid():
    model, _, _ = linear_binary()
    src = interior_points(60)
    kw = dict(steps=2, seed=3, device="cpu", progress_bar=False, carry_flips=False)
    wide = pgd_stability(model, src, [0.01, 0.03, 0.05], **kw)
    alone = pgd_stability(model, src, [0.03], **kw)
    assert np.array_equal(wide.stable[:, 1], alone.stable[:, 0])
    nw = noise_stability(model, src, [0.01, 0.05, 0.2], draws=4, seed=1, device="cpu", progress_bar=False)
    alone = noise_stability(model, src, [0.05], draws=4, seed=1, device="cpu", progress_bar=False)
    tested = nw.stable[:, 0]  # samples not already carried as unstable from 0.01 are drawn exactly as alone
    assert tested.sum() > 30
    assert np.array_equal(nw.stable[tested, 1], alone.stable[tested, 0])
