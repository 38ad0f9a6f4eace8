"""k-means partitions: seeding, Lloyd, exact assignment, fit data and the kind of every result."""

import importlib.util

import numpy as np
import pytest
import torch

from genbound.bounds import compute_bounds
from genbound.config import Config
from genbound.data import TensorSource, load_dataset
from genbound.errors import UserInputError
from genbound.models import mlp, train_classifier
from genbound.partition import KMeansPartition, KMeansSpec, PartitionProtocol, build_kmeans
from genbound.partition.kmeans import kmeans_plus_plus, lloyd, nearest_exact
from genbound.pipeline import evaluate
from tests.conftest import example_config

PARTITION_RESULTS = ("xu_mannor", "kawaguchi", "theorem_n", "theorem_h")


def blobs(n: int, d: int = 5, k: int = 4, seed: int = 0) -> TensorSource:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(k, d, generator=g)
    y = torch.randint(k, (n,), generator=g)
    x = (centres[y] + 0.05 * torch.randn(n, d, generator=g)).clamp(0, 1)
    return TensorSource(x.reshape(n, 1, d), y, name=f"blobs{seed}", num_classes=k)


# ------------------------------------------------------------------------------------ seeding
def test_kmeans_plus_plus_is_deterministic_and_seeded():
    x = torch.rand(500, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = kmeans_plus_plus(x, 12, seed=3), kmeans_plus_plus(x, 12, seed=3)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 12
    assert not np.array_equal(a, kmeans_plus_plus(x, 12, seed=4))


def test_kmeans_plus_plus_finds_separated_blobs():
    # four tight, far-apart blobs: D^2 sampling puts one seed in each (the uniform first seed aside,
    # a point of an already-seeded blob has D^2 ~ 0 and essentially never gets drawn)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], dtype=torch.float64)
    y = torch.arange(400) % 4
    x = centres[y] + 0.01 * torch.randn(400, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for seed in range(5):
        assert sorted(y[kmeans_plus_plus(x, 4, seed=seed)].tolist()) == [0, 1, 2, 3]


def test_kmeans_plus_plus_with_duplicates_and_too_few_points():
    x = torch.zeros(5, 3, dtype=torch.float64)  # every D^2 is 0 after the first pick
    assert sorted(kmeans_plus_plus(x, 5, seed=0).tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(UserInputError, match="cannot seed 6 clusters from 5 points"):
        kmeans_plus_plus(x, 6, seed=0)


def test_kmeans_plus_plus_never_draws_a_point_already_covered():
    # three distinct points, each 200 times: D^2 = 0 on every copy of a chosen point
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]], dtype=torch.float64).repeat(200, 1)
    for seed in range(20):
        rows = x[torch.as_tensor(kmeans_plus_plus(x, 3, seed=seed))]
        assert len({tuple(r.tolist()) for r in rows}) == 3, seed


# ------------------------------------------------------------------------------------ assignment
def brute_force(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(2)
    return d.argmin(1)  # first minimum: lowest index on ties


def test_nearest_exact_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    c = rng.random((9, 6))
    c = np.concatenate([c, c[3:4]])  # centre 9 duplicates centre 3: ties go to 3
    x = np.concatenate([rng.random((700, 6)), c[:5] + 0.0,  # points on centres
                        (c[0:1] + c[1:2]) / 2])  # equidistant from 0 and 1 (up to rounding)
    idx, dist = nearest_exact(torch.from_numpy(x), torch.from_numpy(c), sample_block=64)
    assert np.array_equal(idx.numpy(), brute_force(x, c))
    assert 9 not in idx.tolist()
    np.testing.assert_allclose(dist.numpy(), ((x - c[idx.numpy()]) ** 2).sum(1), rtol=1e-12, atol=1e-15)


def test_nearest_exact_rechecks_near_ties_that_the_expansion_gets_wrong():
    # points and two centres within 1e-6 of a point at distance ~1e4 from the origin: ||x||^2 ~ 1e8
    # swamps the ~1e-12 distance gaps in the expanded score; the direct recheck decides them
    rng = np.random.default_rng(0)
    base = rng.random((200, 1, 4)) * 1e4
    c = np.concatenate([base, base + rng.random((200, 1, 4)) * 1e-6], axis=1)  # [200, 2, 4]
    x = base[:, 0] + rng.random((200, 4)) * 1e-6
    expanded_wrong = 0
    for i in range(200):
        ci, xi = torch.from_numpy(c[i]), torch.from_numpy(x[i:i + 1])
        idx, _ = nearest_exact(xi, ci)
        assert idx.tolist() == brute_force(x[i:i + 1], c[i]).tolist()
        plain = torch.addmm((ci * ci).sum(1).unsqueeze(0), xi, ci.T, beta=1, alpha=-2).argmin(1)
        expanded_wrong += int(plain.item() != idx.item())
    assert expanded_wrong > 20  # the case is hard: the expansion alone misassigns many of these points


# ------------------------------------------------------------------------------------ Lloyd
def test_lloyd_objective_is_non_increasing_and_centres_are_means():
    src = blobs(600, d=4, k=5, seed=2)
    x = src.tensors()[0].reshape(600, -1).to(torch.float64)
    init = x[torch.as_tensor(kmeans_plus_plus(x, 8, seed=0))]
    res = lloyd(lambda: iter(x.split(128)), init, 50)
    obj = np.asarray(res.objective)
    assert len(obj) >= 2 and np.all(np.diff(obj) <= 1e-9 * obj[0])
    assert res.converged and res.n == 600
    # at convergence every centre is the mean of the points nearest to it (brute force)
    a = brute_force(x.numpy(), res.centroids.numpy())
    for k in np.unique(a):
        np.testing.assert_allclose(res.centroids[k].numpy(), x.numpy()[a == k].mean(0), rtol=1e-12, atol=1e-12)


def test_one_lloyd_step_matches_a_brute_force_step():
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    init = x[:6].clone()
    res = lloyd(lambda: iter(x.split(50)), init, 1)
    a = brute_force(x.numpy(), init.numpy())
    expected = np.stack([x.numpy()[a == k].mean(0) if (a == k).any() else init[k].numpy() for k in range(6)])
    np.testing.assert_allclose(res.centroids.numpy(), expected, rtol=1e-12)
    assert res.objective[0] == pytest.approx(((x.numpy() - init.numpy()[a]) ** 2).sum(), rel=1e-12)


def test_streamed_fit_equals_in_memory_fit():
    src, held = blobs(200, seed=3), blobs(400, seed=4)
    spec = KMeansSpec(regions=6, seed=1)
    mem = build_kmeans(spec, train=src, heldout=held, batch_size=64)
    streamed = build_kmeans(spec, train=src, heldout=held, batch_size=64, cache_bytes=0)
    assert streamed.record()["streamed"] and not mem.record()["streamed"]
    assert torch.equal(mem.centroids, streamed.centroids)
    # and a subsampled seeding is seeded too
    a = build_kmeans(KMeansSpec(regions=6, seed=1, seeding_sample=50), heldout=held)
    b = build_kmeans(KMeansSpec(regions=6, seed=1, seeding_sample=50), heldout=held)
    assert torch.equal(a.centroids, b.centroids) and a.record()["n_seeding"] == 50


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss is optional and not installed")
@pytest.mark.parametrize("K", [1, 4, 30])
def test_faiss_backend_fits_what_torch_fits(K):
    # faiss's float32 near-ties go to the exact rule: the same assignments, so the same sums and centres
    held = load_dataset("digits")
    t = build_kmeans(KMeansSpec(regions=K, seed=0), heldout=held)
    f = build_kmeans(KMeansSpec(regions=K, seed=0, backend="faiss"), heldout=held)
    assert torch.equal(t.centroids, f.centroids)
    assert f.record()["objective"] == pytest.approx(t.record()["objective"], rel=1e-12)
    assert f.record()["backend"] == "faiss"


@pytest.mark.skipif(importlib.util.find_spec("faiss") is None, reason="faiss is optional and not installed")
def test_faiss_search_defers_float32_near_ties_to_the_exact_rule():
    from genbound.partition.kmeans import _FaissNearest
    rng = np.random.default_rng(1)
    c = rng.random((20, 8)) * 100
    c = np.concatenate([c, c[:5] + rng.random((5, 8)) * 1e-4, c[5:6]])  # near-duplicates and an exact one
    x = np.concatenate([c[:10] + rng.random((10, 8)) * 1e-4, rng.random((300, 8)) * 100])
    idx, dist = _FaissNearest(torch.from_numpy(c))(torch.from_numpy(x))
    assert np.array_equal(idx.numpy(), brute_force(x, c))
    np.testing.assert_allclose(dist.numpy(), ((x - c[idx.numpy()]) ** 2).sum(1), rtol=1e-12)


# ------------------------------------------------------------------------------------ the partition
def test_heldout_split_fit_is_disjoint_and_recorded():
    held = blobs(101, seed=5)
    p = build_kmeans(KMeansSpec(regions=4, seed=7, fit_fraction=0.3), heldout=held)
    assert isinstance(p, PartitionProtocol)
    used = p.heldout_indices_used
    assert used.size == 30 and len(set(used.tolist())) == 30
    mask = p.heldout_statistics_mask(101)
    assert mask.sum() == 71 and not mask[used].any()
    rec = p.record()
    assert rec["fit"] == "heldout-split" and rec["fit_fraction"] == 0.3 and rec["n_fit"] == 30
    assert rec["depends_on_training_set"] is False and rec["uses_heldout"] is True
    assert rec["max_cell_diameter"] is None and p.diameter("linf") is None
    # the split is seeded: another seed fits on other samples
    q = build_kmeans(KMeansSpec(regions=4, seed=8, fit_fraction=0.3), heldout=held)
    assert not np.array_equal(q.heldout_indices_used, used)
    assert np.array_equal(build_kmeans(KMeansSpec(regions=4, seed=7, fit_fraction=0.3), heldout=held).heldout_indices_used, used)


def test_train_fit_and_features_depend_on_the_training_set():
    train, held = blobs(120, seed=6), blobs(80, seed=7)
    p = build_kmeans(KMeansSpec(regions=3, fit="train"), train=train, heldout=held)
    assert p.depends_on_training_set and not p.uses_heldout and p.heldout_statistics_mask(80).all()
    assert "training set" in p.record()["depends_on_training_set_why"]
    model = mlp(input_shape=(1, 5), num_classes=4, hidden=(16,), seed=0).eval()
    f = build_kmeans(KMeansSpec(regions=3, features="net.1"), train=train, heldout=held, model=model, model_id="abc")
    rec = f.record()
    assert f.depends_on_training_set and rec["space"] == "features:net.1" and rec["feature_dim"] == 16
    assert "features of the trained model" in rec["depends_on_training_set_why"] and rec["model_fingerprint"] == "abc"
    cells = f.assign(train, progress_bar=False)
    assert cells.shape == (120,) and cells.min() >= 0 and cells.max() < 3


def test_label_pure_kmeans_cells():
    train, held = blobs(120, seed=6), blobs(80, seed=7)
    p = build_kmeans(KMeansSpec(regions=3, label_pure=True, num_classes=4), heldout=held)
    assert p.K == 12
    cells = p.assign(train, progress_bar=False)
    assert np.array_equal(cells % 4, train.labels)
    x, y = train.tensors()
    assert np.array_equal(p.assign_arrays(x, y.numpy()), cells)


@pytest.mark.parametrize("kwargs, train, heldout, model, msg", [
    (dict(features="net.1"), True, True, False, "needs the model whose layer it names"),
    (dict(features="fc"), True, True, True, "the model has no layer 'fc'; its layers are: net"),
    (dict(), True, False, False, "needs held-out data"),
    (dict(fit="train"), False, True, False, "needs the training set"),
    (dict(regions=50), True, True, False, "fewer than K = 50"),
    (dict(fit_fraction=0.999), True, True, False, "leaves none for evaluation"),
    (dict(seeding_sample=2), True, True, False, "kmeans_seeding_sample = 2 is smaller than K = 3"),
    (dict(fit="test"), True, True, False, "kmeans_fit must be one of"),
    (dict(backend="sklearn"), True, True, False, "kmeans_backend must be one of"),
])
def test_kmeans_user_errors(kwargs, train, heldout, model, msg):
    tr, ho = blobs(60, seed=6), blobs(80, seed=7)
    m = mlp(input_shape=(1, 5), num_classes=4, hidden=(16,), seed=0).eval()
    with pytest.raises(UserInputError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        build_kmeans(KMeansSpec(**{"regions": 3, **kwargs}), train=tr if train else None,
                     heldout=ho if heldout else None, model=m if model else None)


# ------------------------------------------------------------------------------------ evaluate: kinds
@pytest.fixture(scope="module")
def digits_model(digits_mlp):
    return digits_mlp


CFG = dict(kappas=(0.02, 0.1), K=(5, 10), stability="noise", noise_draws=2, progress=False, partition="kmeans")


def _kinds(ev):
    return {(r.name, r.kind) for r in ev.report.results}


def test_heldout_split_pixels_keeps_partition_results_certified(digits_model):
    model, train, held = digits_model
    ev = evaluate({"m": model}, train, held, Config(**CFG, kmeans_fit_fraction=0.25))
    kinds = _kinds(ev)
    for name in ("xu_mannor", "kawaguchi", "theorem_n", "holdout_cp"):
        assert (name, "certified") in kinds and (name, "diagnostic") not in kinds, name
    # theorem_h: the held-out set helped build the partition, as for held-out centroids
    assert ("theorem_h", "diagnostic") in kinds
    assert all(s.m == 120 - 30 for s in ev.stats)  # the fit split is left out of the held-out statistics
    assert {b["name"] for b in ev.best_over_grid} == {"xu_mannor", "kawaguchi", "theorem_n"}
    rec = ev.records["partitions"]["5"]
    assert rec["kind"] == "kmeans" and rec["depends_on_training_set"] is False and rec["n_fit"] == 30


@pytest.mark.parametrize("extra, why", [({"kmeans_fit": "train"}, "fitted on the training set"),
                                        ({"kmeans_features": "net.1"}, "features of the trained model")])
def test_train_or_feature_fit_certifies_no_partition_result(digits_model, extra, why, tmp_path):
    model, train, held = digits_model
    ev = evaluate({"m": model}, train, held, Config(**CFG, **extra))
    for r in ev.report.results:
        if r.name in PARTITION_RESULTS:
            assert r.kind == "diagnostic", (r.name, r.K)
            assert any(a.startswith("VIOLATION: the partition depends on the training sample") and why in a
                       for a in r.assumptions), r.assumptions
        if r.name == "holdout_cp":
            assert r.kind == "certified"
    assert {r.kind for r in ev.report.results if r.name == "holdout_cp"} == {"certified"}
    assert ev.best_over_grid == []  # nothing certified to take the best of
    # the same statistics recomputed from the stats alone keep the flag
    for s in ev.stats:
        assert s.partition_depends_on_train
        assert all(r.kind == "diagnostic" for r in compute_bounds(s, 0.05).results if r.name in PARTITION_RESULTS)
    if "kmeans_features" in extra:
        assert set(ev.records["partitions"]) == {"m:5", "m:10"}
    # and from the saved samples.npz (what `genbound bounds` reads): still diagnostic, still saying why
    from genbound.bounds import load_stats_npz
    paths = ev.save(tmp_path / "run", report=False)
    for s in load_stats_npz(paths["samples"]):
        for r in compute_bounds(s, 0.05).results:
            if r.name in PARTITION_RESULTS:
                assert r.kind == "diagnostic" and any(why in a for a in r.assumptions)


def test_feature_partitions_are_per_model(digits_model):
    model, train, held = digits_model
    other = train_classifier(mlp(input_shape=(1, 8, 8), hidden=(32,), seed=1), train, epochs=2, progress_bar=False)
    ev = evaluate({"a": model, "b": other}, train, held, Config(**{**CFG, "K": (5,)}, kmeans_features="net.1"))
    recs = ev.records["partitions"]
    assert set(recs) == {"a:5", "b:5"}
    assert recs["a:5"]["model_fingerprint"] != recs["b:5"]["model_fingerprint"]
    assert recs["a:5"]["centroids_sha256"] != recs["b:5"]["centroids_sha256"]


def test_kmeans_partition_is_a_protocol_partition():
    p = build_kmeans(KMeansSpec(regions=2), heldout=blobs(20))
    assert isinstance(p, KMeansPartition) and isinstance(p, PartitionProtocol)


def test_faiss_backend_without_faiss_is_a_one_line_error(monkeypatch):
    import importlib.util as iu
    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a))
    with pytest.raises(UserInputError, match="needs the faiss package: pip install faiss-cpu"):
        Config(partition="kmeans", kmeans_backend="faiss")


# ------------------------------------------------------------------------------------ the command line
def test_evaluate_command_with_a_kmeans_partition(tmp_path, capsys):
    import json

    from genbound.cli import main
    cfg = example_config(tmp_path, """
[bounds]
kappas = [0.05]
K = [8]
partition = "kmeans"
kmeans_fit_fraction = 0.4
kmeans_features = "net.1"
[stability]
method = "noise"
draws = 2
""")
    assert main(["evaluate", cfg, "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    rec = doc["run"]["partitions"]["m:8"]
    assert rec["kind"] == "kmeans" and rec["space"] == "features:net.1" and rec["depends_on_training_set"] is True
    heldout_n = doc["run"]["models"][0]["heldout_source"]["n"]
    assert rec["n_fit"] == round(0.4 * heldout_n)
    kinds = {r["name"]: r["kind"] for r in doc["results"]}
    assert kinds["holdout_cp"] == "certified"
    assert all(kinds[n] == "diagnostic" for n in PARTITION_RESULTS)
    # a rerun fits the same partition (seeded, deterministic)
    assert main(["evaluate", cfg, "--out", str(tmp_path / "o2"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "o2" / "result.json").read_text())["run"]["partitions"]["m:8"]
    assert again["centroids_sha256"] == rec["centroids_sha256"] and again["fit_indices_hash"] == rec["fit_indices_hash"]


@pytest.mark.parametrize("extra", [{}, {"kmeans_features": "net.1"}])
def test_a_rerun_reuses_the_saved_fit(digits_model, tmp_path, monkeypatch, extra):
    model, train, held = digits_model
    cfg = Config(**{**CFG, "K": (5,)}, **extra)
    cache = str(tmp_path / "cache")
    first = evaluate({"m": model}, train, held, cfg, cache_dir=cache)
    import genbound.pipeline as pl

    def boom(*a, **k):
        raise AssertionError("refitted or reassigned a cached step")

    monkeypatch.setattr(pl, "build_kmeans", boom)
    monkeypatch.setattr(pl, "stability_flags", boom)
    monkeypatch.setattr(KMeansPartition, "assign", boom)
    second = evaluate({"m": model}, train, held, cfg, cache_dir=cache)
    assert [r.value for r in first.report.results] == [r.value for r in second.report.results]
    assert first.records["partitions"] == second.records["partitions"]


def test_state_round_trip_assigns_the_same_cells():
    train, held = blobs(120, seed=6), blobs(80, seed=7)
    model = mlp(input_shape=(1, 5), num_classes=4, hidden=(16,), seed=0).eval()
    spec = KMeansSpec(regions=3, features="net.1", label_pure=True, num_classes=4)
    p = build_kmeans(spec, heldout=held, model=model, model_id="x")
    q = KMeansPartition.from_state(spec, p.state(), model=model)
    assert q.record() == p.record()
    assert np.array_equal(q.assign(train, progress_bar=False), p.assign(train, progress_bar=False))
    assert np.array_equal(q.heldout_statistics_mask(80), p.heldout_statistics_mask(80))


# ------------------------------------------------------------------------------------ layer features
def test_layer_features_are_the_layer_output_and_leave_the_model_as_it_was():
    from torch import nn

    from genbound.models import Normalize
    from genbound.models.features import LayerFeatures
    net = mlp(input_shape=(1, 5), num_classes=4, hidden=(16,), seed=0)
    wrapped = nn.Sequential(Normalize((0.5,), (0.25,)), net).train()
    x = torch.rand(7, 1, 5)
    with pytest.warns(UserWarning, match="train mode"):
        z = LayerFeatures(wrapped, "net.1")(x)  # named as in the network, behind genbound's normalization
    expected = net.net[1](net.net[0]((x - 0.5) / 0.25))
    torch.testing.assert_close(z, expected.reshape(7, -1))
    assert wrapped.training and not net.net[1]._forward_hooks  # mode restored, hook removed


def test_layer_features_refuse_layers_that_do_not_give_one_tensor():
    from torch import nn

    from genbound.models.features import LayerFeatures

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(self.lin(x))

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.split = Splitter()

        def forward(self, x):
            a, b = self.split(x)
            return a + b

    class Splitter(nn.Module):
        def forward(self, x):
            return x, x

    with pytest.raises(UserInputError, match="ran 2 times in one forward pass"):
        LayerFeatures(Twice().eval(), "lin")(torch.rand(2, 3))
    with pytest.raises(UserInputError, match="returns a tuple, not a tensor"):
        LayerFeatures(Pair().eval(), "split")(torch.rand(2, 3))


def test_a_fit_too_large_for_memory_is_refused_before_any_work(monkeypatch):
    import genbound.partition.kmeans as km

    held = blobs(60, d=5, seed=1)
    monkeypatch.setattr(km, "free_memory", lambda device: 1024)
    with pytest.raises(UserInputError, match=r"^a k-means fit of K = 4 centres in 5 dimensions needs about .* GiB "
                                             r".* are free on cpu; cluster a model's features instead"):
        build_kmeans(KMeansSpec(regions=4), heldout=held, device="cpu")
    monkeypatch.setattr(km, "free_memory", lambda device: None)  # unknown: no check
    assert build_kmeans(KMeansSpec(regions=4), heldout=held, device="cpu").K == 4
    # what an ImageNet run in pixel space asks for: K = 10,000 at 224 px, 1 TiB free passes, 16 GiB does not
    monkeypatch.setattr(km, "free_memory", lambda device: 16 * 2**30)
    with pytest.raises(UserInputError, match=r"needs about 33\.6 GiB"):  # 3 K p float64
        km.check_fit_memory(10_000, 150_528, 25_000, 10_000, 1 << 30, torch.device("cpu"))
    monkeypatch.setattr(km, "free_memory", lambda device: 2**40)
    km.check_fit_memory(10_000, 150_528, 25_000, 10_000, 1 << 30, torch.device("cpu"))
