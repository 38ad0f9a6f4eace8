"""The AutoAttack engine (pyautoattack's APGD-CE + APGD-T) and the pgd+autoattack union.

Fast: a linear model whose distance to the boundary is known in closed form (AutoAttack flips
every pair beyond it and none inside it), flags independent of batch and shard, the caller's RNG
untouched, non-contiguous batches, the union's bookkeeping, the pipeline and the config file.
Slow: genbound's PGD against AutoAttack on pyautoattack's CIFAR-10 ResNet-18 and the 20 CIFAR-10
test images in foolbox's wheel, disagreements printed in both directions.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genbound.data import TensorSource
from genbound.errors import UserInputError
from genbound.stability import AutoAttackEngine, autoattack_stability, make_engine, stability_flags

pytest.importorskip("pyautoattack", reason="autoattack extra: pip install -c constraints.txt -e '.[test]'")

D = 16
KAPPAS = np.geomspace(0.004, 0.3, 10)
FAST = {"iters": 10}  # AutoAttack's own schedule, fewer iterations: enough for a linear model


def linear_model(classes: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """logits = W x + b on flattened (1, 4, 4) inputs; W, b known (row 0 of a binary model is 0)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(classes, D, generator=g)
    if classes == 2:
        w[0] = 0
    b = -(w @ torch.full((D,), 0.5)) + 0.3 * torch.randn(classes, generator=g)
    lin = nn.Linear(D, classes)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    return nn.Sequential(nn.Flatten(), lin).eval(), w, b


def boundary_distance(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> np.ndarray:
    """Distance to the nearest point classified otherwise: min over k != c of the distance to the
    half-space {(w_k - w_c).x + b_k - b_c >= 0} (the box [0, 1] is inactive for these points)."""
    w, b = w.double(), b.double()
    z = x.reshape(x.shape[0], -1).double() @ w.T + b
    c = z.argmax(1)
    gap = z.gather(1, c[:, None]) - z  # >= 0, 0 at c
    dw = w[None, :, :] - w[c][:, None, :]
    scale = dw.abs().sum(2) if norm == "linf" else dw.norm(dim=2)
    d = gap / scale.clamp_min(1e-30)
    d[torch.arange(x.shape[0]), c] = float("inf")
    return d.min(1).values.numpy()


def interior_points(n: int = 60, seed: int = 1) -> TensorSource:
    x = torch.from_numpy(np.random.default_rng(seed).uniform(0.3, 0.7, (n, 1, 4, 4)).astype(np.float32))
    return TensorSource(x, np.zeros(n, np.int64), num_classes=5)


def small_net(seed: int = 0, classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, classes)).eval()


def small_data(n: int = 30, seed: int = 2) -> TensorSource:
    x = torch.from_numpy(np.random.default_rng(seed).uniform(0, 1, (n, 3, 4, 4)).astype(np.float32))
    return TensorSource(x, np.arange(n) % 5, num_classes=5)


@pytest.mark.parametrize("classes", [2, 5])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_flips_exactly_beyond_the_closed_form_distance(norm: str, classes: int) -> None:
    model, w, b = linear_model(classes)
    src = interior_points()
    x, _ = src.tensors()
    dist = boundary_distance(x, w, b, norm)
    res = autoattack_stability(model, src, KAPPAS, norm=norm, **FAST, device="cpu", progress_bar=False)
    ratio = KAPPAS[None, :] / dist[:, None]
    must_flip, must_hold = ratio > 1.05, ratio < 0.999
    assert must_flip.sum() > 50 and must_hold.sum() > 50
    assert not res.stable[must_flip].any(), "AutoAttack missed a flip that exists"
    assert res.stable[must_hold].all(), "AutoAttack reported a flip inside the distance to the boundary"
    ev = res.evidence
    assert ev["method"] == "autoattack" and ev["sound"] is False and ev["norm"] == norm
    assert ev["attacks"] == ["apgd-ce", "apgd-t"] and ev["iters"] == 10 and ev["targets_used"] == (0 if classes == 2 else 4)
    assert ev["implementation"].startswith("pyautoattack 0.2.0") and ev["not_run"] == ["fab-t", "square"]
    assert ev["unconfirmed"] == [0] * KAPPAS.size
    assert list(ev["skipped"]) == (["apgd-t"] if classes == 2 else [])
    # every flip is attributed to the attack that found it first; flips carry upward in kappa
    firsts = np.diff(np.concatenate([np.zeros((len(src), 1), bool), ~res.stable], axis=1).astype(int), axis=1) == 1
    assert sum(sum(v) for v in ev["flips_by_attack"].values()) == firsts.sum()
    assert (np.diff(res.stable.astype(int), axis=1) <= 0).all()


def test_flags_do_not_depend_on_batch_or_shard_and_leave_the_rng_alone() -> None:
    model, src = small_net(), small_data()
    kappas = [0.02, 0.06, 0.15]
    state = torch.get_rng_state()
    a = stability_flags(model, src, kappas, method="autoattack", **FAST, batch_size=30, progress_bar=False)
    assert torch.equal(state, torch.get_rng_state()), "the run changed torch's global generator"
    b = stability_flags(model, src, kappas, method="autoattack", **FAST, batch_size=7, progress_bar=False)
    c = stability_flags(model, src, kappas, method="autoattack", **FAST, batch_size=4, indices=np.arange(10, 30),
                        progress_bar=False)
    one = stability_flags(model, src, kappas, method="autoattack", **FAST, batch_size=1, indices=np.arange(5, 12),
                          progress_bar=False)  # single-sample batches take other paths inside APGD (squeeze)
    assert 0 < (~a.stable).sum() < a.stable.size  # some flips, some not: the comparison means something
    np.testing.assert_array_equal(a.stable, b.stable)
    np.testing.assert_array_equal(a.stable[10:], c.stable)
    np.testing.assert_array_equal(a.stable[5:12], one.stable)
    d = stability_flags(model, src, kappas, method="autoattack", **FAST, seed=1, batch_size=30, progress_bar=False)
    assert d.evidence["seed"] == 1 and a.evidence["seed"] == 0


def test_non_contiguous_batch() -> None:
    # APGD-T reshapes with .view; a channels-last batch used to crash pyautoattack 0.2.0
    model, src = small_net(), small_data(10)
    x, _ = src.tensors()
    eng = AutoAttackEngine(**FAST)
    eng.start(model, np.array([0.05, 0.2]), torch.device("cpu"))
    idx = np.arange(10)
    r1 = eng.update(x.contiguous(memory_format=torch.channels_last), idx)
    r2 = eng.update(x.contiguous(), idx)
    np.testing.assert_array_equal(r1.stable, r2.stable)


def test_union_is_never_less_unstable_than_either_attack() -> None:
    model, src = small_net(1), small_data(30, 3)
    kappas = [0.01, 0.03, 0.08]
    pgd = stability_flags(model, src, kappas, method="pgd", steps=3, batch_size=8, progress_bar=False)
    aa = stability_flags(model, src, kappas, method="autoattack", **FAST, batch_size=8, progress_bar=False)
    both = stability_flags(model, src, kappas, method="pgd+autoattack", pgd={"steps": 3}, autoattack=FAST,
                           batch_size=8, progress_bar=False)
    np.testing.assert_array_equal(both.arrays["stable_pgd"], pgd.stable)  # each part: its own run's flags
    np.testing.assert_array_equal(both.arrays["stable_autoattack"], aa.stable)
    np.testing.assert_array_equal(both.stable, pgd.stable & aa.stable)
    assert (~both.stable >= ~pgd.stable).all() and (~both.stable >= ~aa.stable).all()
    ev = both.evidence
    assert ev["method"] == "pgd+autoattack" and ev["sound"] is False
    assert ev["parts"]["pgd"]["steps"] == 3 and ev["parts"]["autoattack"]["iters"] == 10
    by = ev["unstable_by"]
    assert by["only_pgd"] == (~pgd.stable & aa.stable).sum(0).tolist()
    assert by["only_autoattack"] == (~aa.stable & pgd.stable).sum(0).tolist()
    assert by["all"] == (~aa.stable & ~pgd.stable).sum(0).tolist()
    assert by["union"] == (~both.stable).sum(0).tolist()
    total = ev["parts"]["pgd"]["model_evals"]["total"] + ev["parts"]["autoattack"]["model_evals"]["total"]
    assert ev["model_evals"]["total"] == total


@pytest.mark.parametrize("params, msg", [
    ({"attacks": ["apgd-ce", "fab-t"]}, "attacks must be a non-empty list"),
    ({"attacks": "apgd-ce"}, "attacks must be a non-empty list"),
    ({"attacks": []}, "attacks must be a non-empty list"),
    ({"iters": 0}, "iters must be an integer >= 1"),
    ({"restarts": 1.5}, "restarts must be an integer >= 1"),
    ({"targets": True}, "targets must be an integer >= 1"),
    ({"norm": "l1"}, "norm must be 'linf' or 'l2'"),
    ({"steps": 10}, "unexpected keyword argument 'steps'"),
])
def test_bad_parameters(params: dict, msg: str) -> None:
    with pytest.raises(UserInputError, match=msg):
        make_engine("autoattack", **params)


@pytest.mark.parametrize("params, msg", [
    ({"pgd": {"seed": 3}}, "norm, seed and batch_size are shared"),
    ({"autoattack": {"stepz": 3}}, "unexpected keyword argument 'stepz'"),
    ({"autoattack": {"iters": 0}}, "iters must be an integer >= 1"),
    ({"pgd": [1]}, "pgd must be a dict"),
])
def test_bad_union_parameters(params: dict, msg: str) -> None:
    with pytest.raises(UserInputError, match=msg):
        make_engine("pgd+autoattack", **params)


def test_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    with pytest.raises(UserInputError) as e:
        make_engine("autoattack")
    assert "\n" not in str(e.value) and "pip install -c constraints.txt 'genbound[autoattack]'" in str(e.value)


@pytest.mark.parametrize("method", ["autoattack", "pgd+autoattack"])
def test_pipeline_records_the_evidence(method: str, tmp_path: Path) -> None:
    from genbound import Config, evaluate
    src = small_data(24)
    cfg = Config(kappas=[0.02, 0.1], K=[4], stability=method, autoattack_iters=5, autoattack_targets=2, pgd_steps=2,
                 progress=False)
    ev = evaluate({"m": small_net()}, src, small_data(12, 9), cfg, cache_dir=str(tmp_path / "cache"))
    rec = ev.records["stability"]["m"]
    aa = rec["parts"]["autoattack"] if method == "pgd+autoattack" else rec
    assert rec["method"] == method and aa["iters"] == 5 and aa["targets"] == 2 and aa["targets_used"] == 2
    assert [(s.stability_method, s.stability_sound) for s in ev.stats] == [(method, False)]  # evidence, not proof
    out = ev.save(tmp_path / "run", report=False)
    assert Path(out["result"]).exists()


def test_config_file(tmp_path: Path) -> None:
    from genbound.config import load_config_file
    (tmp_path / "c.toml").write_text('[data]\ntrain = "digits"\n[[models]]\nfactory = "mlp"\n[stability]\n'
                                     'method = "pgd+autoattack"\nsteps = 20\nautoattack_iters = 50\n'
                                     'autoattack_attacks = ["apgd-ce", "apgd-dlr", "apgd-t"]\nautoattack_targets = 3\n')
    cfg = load_config_file(str(tmp_path / "c.toml")).config
    assert cfg.stability == "pgd+autoattack" and cfg.pgd_steps == 20 and cfg.autoattack_iters == 50
    assert cfg.autoattack_attacks == ("apgd-ce", "apgd-dlr", "apgd-t") and cfg.autoattack_targets == 3
    from genbound.pipeline import engine_params
    eng = make_engine(cfg.stability, **engine_params(cfg))
    assert eng.parts["autoattack"].attacks == ("apgd-ce", "apgd-dlr", "apgd-t") and eng.parts["pgd"].steps == 20


# --------------------------------------------------------------------------------------- slow, real model
def _resnet18_and_images() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from PIL import Image
    spec = importlib.util.find_spec("pyautoattack")
    root = Path(spec.origin).parent / "examples"
    mspec = importlib.util.spec_from_file_location("pyautoattack_resnet", root / "resnet.py")
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    model = mod.ResNet18()
    model.load_state_dict(torch.load(root / "model_test.pt", map_location="cpu", weights_only=True))
    try:
        folder = Path(str(distribution("foolbox").locate_file("foolbox/data")))
    except PackageNotFoundError:
        pytest.skip("foolbox's sample images are not installed (test extra)")
    files = sorted(folder.glob("cifar10_*.png"))
    assert len(files) == 20
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0)
                     .permute(2, 0, 1) for f in files])
    y = torch.tensor([int(f.stem.rsplit("_", 1)[1]) for f in files])
    return model.eval(), x, y


@pytest.mark.slow
def test_pgd_against_autoattack_on_a_real_cifar10_resnet18() -> None:
    """genbound's default PGD (10 steps, 1 restart) and AutoAttack (APGD-CE + APGD-T, standard
    settings) on the 20 CIFAR-10 images at 1/255, 2/255 and 8/255; the disagreements in both
    directions are printed (run with -s to see them)."""
    model, x, y = _resnet18_and_images()
    src = TensorSource(x, y, name="foolbox-cifar10-20")
    kappas = np.array([1, 2, 8]) / 255
    both = stability_flags(model, src, kappas, method="pgd+autoattack", batch_size=20, progress_bar=False)
    pgd, aa = both.arrays["stable_pgd"], both.arrays["stable_autoattack"]
    assert (both.pred == y.numpy()).all()  # a standard model: 20/20 clean
    pgd_alone = stability_flags(model, src, kappas, method="pgd", batch_size=20, progress_bar=False)
    np.testing.assert_array_equal(pgd, pgd_alone.stable)
    np.testing.assert_array_equal(both.stable, pgd & aa)
    missed_by_pgd = [(int(i), f"{kappas[j] * 255:g}/255") for i, j in zip(*np.nonzero(pgd & ~aa))]
    missed_by_aa = [(int(i), f"{kappas[j] * 255:g}/255") for i, j in zip(*np.nonzero(aa & ~pgd))]
    print(f"\nunstable of 20 at {[f'{k * 255:g}/255' for k in kappas]}: PGD-10x1 {(~pgd).sum(0).tolist()}, "
          f"AutoAttack {(~aa).sum(0).tolist()}, union {(~both.stable).sum(0).tolist()}")
    print(f"PGD stable, AutoAttack flips (image, kappa): {missed_by_pgd}")
    print(f"AutoAttack stable, PGD flips (image, kappa): {missed_by_aa}")
    by = both.evidence["unstable_by"]
    assert by["only_autoattack"] == (pgd & ~aa).sum(0).tolist() and by["only_pgd"] == (aa & ~pgd).sum(0).tolist()
    assert (~both.stable).sum() == (~pgd).sum() + len(missed_by_pgd)
    assert (~both.stable).sum() == (~aa).sum() + len(missed_by_aa)
    assert both.evidence["parts"]["autoattack"]["unconfirmed"] == [0, 0, 0]
    # a standard (non-robust) model: AutoAttack breaks all 20 at 8/255 (0/20 robust, as measured before)
    assert (~aa[:, 2]).all()
