"""The one pass over a dataset: predictions, losses and every partition's cells from the same
batches; shards; decoding workers; centroids regenerated block by block instead of held."""

import json

import numpy as np
import pytest
import torch

from genbound.collect import collect
from genbound.config import Config
from genbound.data import TensorSource, load_dataset, make_prototypes, split_source
from genbound.data.loader import resolve_workers, stream
from genbound.data.source import DataSource
from genbound.errors import UserInputError
from genbound.models import mlp
from genbound.partition import CentroidIndex, PartitionSpec, build_grid, build_partition
from genbound.partition.assign import UniformCentroids
from genbound.pipeline import evaluate


def brute_force(x, c):
    d = ((np.asarray(x, np.float64)[:, None, :] - np.asarray(c, np.float64)[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)


@pytest.mark.parametrize("K,d,rows", [(37, 50, 5), (10, 3, 10), (1, 8, 4), (23, 16, 100)])
def test_uniform_centroid_blocks_are_the_rows_of_one_draw(K, d, rows):
    gen = UniformCentroids(K, d, seed=99)
    blocks = [b.clone() for _, b in gen.blocks(rows)]
    assert torch.equal(torch.cat(blocks), torch.rand(K, d, generator=torch.Generator().manual_seed(99)))
    assert [k0 for k0, _ in gen.blocks(rows)] == list(range(0, K, rows))


@pytest.mark.parametrize("cb,sb", [(4, 7), (1, 1), (64, 200)])
def test_streamed_centroids_assign_like_held_ones(cb, sb):
    rng = np.random.default_rng(cb)
    x = torch.from_numpy(rng.random((120, 30)).astype(np.float32))
    gen = UniformCentroids(41, 30, seed=5)
    held = CentroidIndex(gen, device="cpu", centroid_block=cb)
    streamed = CentroidIndex(gen, device="cpu", centroid_block=cb, centroid_memory=0)
    assert not held.streamed and streamed.streamed
    want = held.assign(x, sample_block=sb)
    assert np.array_equal(streamed.assign(x, sample_block=sb), want)
    assert np.array_equal(streamed.assign_chunks([x[:13], x[13:14], x[14:]]), want)
    assert np.array_equal(want, brute_force(x.numpy(), gen.materialize().numpy()))


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    train, held, _ = split_source(load_dataset("digits"), 0.3, seed=0)
    train, held = train.subset(np.arange(300)), held.subset(np.arange(120))
    return mlp(input_shape=(1, 8, 8), hidden=(32,), seed=0).eval(), train, held  # untrained: predictions are all we need


def test_one_pass_gives_each_partitions_cells_and_the_predictions(digits, monkeypatch):
    import genbound.partition.voronoi as vor

    model, train, _ = digits
    parts = {K: build_partition(PartitionSpec("uniform", K, seed=3), input_dim=64) for K in (5, 50)}
    parts["proj"] = build_partition(PartitionSpec("projection", 7, seed=1, projection_dim=4), input_dim=64)
    parts["pure"] = build_partition(PartitionSpec("uniform", 6, seed=2, label_pure=True, num_classes=10), input_dim=64)
    grid = build_grid(kappa=0.5, input_dim=64, num_classes=10)
    monkeypatch.setattr(vor, "SAMPLE_BUFFER_BYTES", 64 * 4 * 40)  # streamed: a group every 40 samples
    cons = {k: p.assigner(device="cpu", centroid_memory=0 if k == 50 else 2**29) for k, p in parts.items()}
    cons["grid"] = grid.assigner()
    out = collect(model, train, batch_size=32, device="cpu", progress_bar=False, consumers=cons)
    assert cons[50].index.streamed and not cons[5].index.streamed
    ref = collect(model, train, batch_size=77, device="cpu", progress_bar=False)
    assert np.array_equal(out.pred, ref.pred) and np.array_equal(out.loss, ref.loss)
    for k, p in parts.items():
        assert np.array_equal(out.extra[k], p.assign(train, batch_size=50, device="cpu", progress_bar=False)), k
    assert np.array_equal(out.extra["grid"], build_grid(kappa=0.5, input_dim=64, num_classes=10).assign(train))
    assert set(out.seconds) == {"forward", "consumers"} and np.array_equal(out.index, np.arange(len(train)))


def test_a_shard_gives_the_whole_pass_at_its_indices(digits):
    model, train, _ = digits
    part = build_partition(PartitionSpec("uniform", 20, seed=0), input_dim=64)
    whole = collect(model, train, batch_size=64, device="cpu", progress_bar=False,
                    consumers={"c": part.assigner(device="cpu")})
    shard = np.array([299, 3, 4, 5, 150, 0, 17], dtype=np.int64)
    got = collect(model, train, batch_size=3, device="cpu", progress_bar=False, indices=shard,
                  consumers={"c": part.assigner(device="cpu")})
    assert np.array_equal(got.index, shard)
    for a, b in ((got.pred, whole.pred), (got.loss, whole.loss), (got.labels, whole.labels),
                 (got.extra["c"], whole.extra["c"])):
        assert np.array_equal(a, b[shard])
    with pytest.raises(UserInputError, match="out of range"):
        collect(model, train, device="cpu", progress_bar=False, indices=np.array([300]))


class _Counting(DataSource):
    """A source that counts the samples it decodes (and can fail like a bad image file)."""

    def __init__(self, inner, fail_at=None):
        super().__init__()
        self.inner, self.fail_at, self.read = inner, fail_at, 0
        self.name, self.shape, self.num_classes = inner.name, inner.shape, inner.num_classes

    def __len__(self):
        return len(self.inner)

    def get(self, indices):
        idx = np.asarray(indices)
        if self.fail_at is not None and self.fail_at in idx:
            raise UserInputError(f"image {self.fail_at} is not a readable image")
        self.read += idx.size
        return self.inner.get(idx)

    @property
    def labels(self):
        return self.inner.labels


def test_evaluate_reads_each_dataset_once_before_stability(digits):
    model, train, held = digits
    tr, ho = _Counting(train), _Counting(held)
    cfg = Config(kappas=(0.05, 0.2), K=(5, 20, 100), stability="noise", noise_draws=2, progress=False)
    ev = evaluate({"m": model}, tr, ho, cfg)
    # one pass + the stability engine's pass over the training set, one pass over the held-out
    # set; the rest are the fingerprint and model-check probes (a few samples each)
    assert tr.read <= 2 * len(train) + 16, tr.read
    assert ho.read <= len(held) + 16, ho.read
    steps = ev.records["steps_s"]
    assert set(steps) == {"collect", "assignment", "stability", "bounds"} and all(v >= 0 for v in steps.values())
    assert json.loads(json.dumps(ev.to_dict()))["run"]["steps_s"] == steps


def test_workers_decode_the_same_batches_in_order(digits):
    _, train, _ = digits
    one = list(stream(train, batch_size=40, workers=0))
    two = list(stream(train, batch_size=40, workers=2))
    assert len(one) == len(two) == 8
    for (i0, x0, y0), (i1, x1, y1) in zip(one, two):
        assert np.array_equal(i0, i1) and torch.equal(x0, x1) and torch.equal(y0, y1)


def test_stability_engine_reads_through_decoding_workers(digits):
    from genbound.stability import stability_flags

    model, train, _ = digits
    idx = np.arange(3, 120, 2)
    kw = dict(method="pgd", steps=3, batch_size=16, progress_bar=False, indices=idx)
    base = stability_flags(model, train, [0.05, 0.2], **kw)
    counted = _Counting(train)
    two = stability_flags(model, counted, [0.05, 0.2], workers=2, **kw)
    np.testing.assert_array_equal(two.index, base.index)
    np.testing.assert_array_equal(two.stable, base.stable)
    np.testing.assert_array_equal(two.pred, base.pred)
    assert two.evidence["model_evals"] == base.evidence["model_evals"]
    with pytest.raises(UserInputError, match=r"^image 45 is not a readable image$"):
        stability_flags(model, _Counting(train, fail_at=45), [0.05], workers=2, **kw)


def test_a_decoding_error_in_a_worker_stays_one_line(digits):
    _, train, _ = digits
    with pytest.raises(UserInputError, match=r"^image 45 is not a readable image$"):
        list(stream(_Counting(train, fail_at=45), batch_size=40, workers=2))


def test_auto_workers():
    src = make_prototypes(10, shape=(1, 2, 2), num_classes=2, seed=0)
    assert resolve_workers("auto", src) == 0 and resolve_workers(3, src) == 3
    src.decodes = True
    assert 1 <= resolve_workers("auto", src) <= 4
    assert resolve_workers("auto", src.subset(np.arange(4))) >= 1
    with pytest.raises(UserInputError, match="workers"):
        resolve_workers(-1, src)


def _rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_extra_bytes(fn):
    """Peak resident memory while ``fn()`` runs, above the memory in use before (Linux: the
    kernel's high-water mark, reset through /proc/self/clear_refs; torch's CPU tensors are not
    seen by tracemalloc)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak resident memory")
    before = _rss_kib("VmRSS")
    fn()
    return (_rss_kib("VmHWM") - before) * 1024


def _assign_uniform(K, side, n):
    x = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(0))
    src = TensorSource(x, torch.zeros(n, dtype=torch.int64), num_classes=2)
    part = build_partition(PartitionSpec("uniform", K, seed=0), input_dim=3 * side * side)
    return lambda: part.assign(src, batch_size=4, device="cpu", progress_bar=False)


def test_large_uniform_partition_is_never_held_whole(monkeypatch):
    import genbound.partition.assign as assign

    # 2,000 x 3*128*128 float32 centroids take 375 MiB held; with 4 MiB blocks (and 8 MiB the most
    # held whole) a block and its square are all the centroid memory there is at any time. The
    # resident-memory measurement carries some MiB of noise (allocator arenas, thread pools), so
    # the sizes are far apart; the logical check below has no noise.
    run = _assign_uniform(2000, 128, 6)
    held = peak_extra_bytes(run)
    monkeypatch.setattr(assign, "CENTROID_MEMORY", 8 * 2**20)
    monkeypatch.setattr(assign, "STREAM_BLOCK_BYTES", 4 * 2**20)
    streamed = peak_extra_bytes(run)
    assert held > 350 * 2**20, held / 2**20  # the measurement sees a held partition
    assert streamed < 64 * 2**20, streamed / 2**20


def test_streamed_uniform_centroids_come_in_small_blocks(monkeypatch):
    import genbound.partition.assign as assign

    x = torch.rand(6, 3 * 32 * 32, generator=torch.Generator().manual_seed(1))
    gen = assign.UniformCentroids(300, 3 * 32 * 32, seed=4)
    expected = assign.CentroidIndex(gen, device="cpu").assign(x)  # 3.5 MiB: held
    monkeypatch.setattr(assign, "CENTROID_MEMORY", 2**20)
    monkeypatch.setattr(assign, "STREAM_BLOCK_BYTES", 2**18)
    sizes = []
    blocks = assign.UniformCentroids.blocks

    def watched(self, rows):
        for k0, blk in blocks(self, rows):
            sizes.append(blk.numel() * blk.element_size())
            yield k0, blk

    def never(self):
        raise AssertionError("streamed centroids were materialized")

    monkeypatch.setattr(assign.UniformCentroids, "blocks", watched)
    monkeypatch.setattr(assign.UniformCentroids, "materialize", never)
    index = assign.CentroidIndex(gen, device="cpu")
    assert index.streamed
    np.testing.assert_array_equal(index.assign(x), expected)
    assert len(sizes) == 300 // (2**18 // (4 * 3 * 32 * 32)) + 1 and max(sizes) <= 2**18, sizes


@pytest.mark.slow
def test_imagenet_sized_uniform_partition_memory():
    # issue must-hold: K = 10,000 uniform centroids at 224 x 224 x 3 (5.6 GiB if held) under 2 GiB extra
    extra = peak_extra_bytes(_assign_uniform(10_000, 224, 8))
    assert extra < 2 * 2**30, extra / 2**30


@pytest.mark.parametrize("api", ["process-wide", "per-backend"])
def test_cells_do_not_follow_the_process_matmul_precision(monkeypatch, api):
    # a training script's torch.set_float32_matmul_precision("high") or
    # torch.backends.cuda.matmul.fp32_precision = "tf32" (TF32 on CUDA, TF32 / bfloat16 in oneDNN)
    # must not move a nearest-centroid decision: assignment runs at full float32 precision and the
    # caller's settings are restored afterwards
    from genbound.partition.assign import nearest_centroid
    from genbound.torch_utils import _matmul_precision_switches

    switches = _matmul_precision_switches()
    if api == "per-backend" and not switches:
        pytest.skip("this torch has no per-backend matmul precision switches")
    x = torch.rand(64, 300, generator=torch.Generator().manual_seed(2))
    c = torch.rand(50, 300, generator=torch.Generator().manual_seed(3))
    expected = nearest_centroid(x, c)
    seen = []
    real = torch.addmm

    def effective():
        return [sw.fp32_precision for sw in switches] if switches else torch.get_float32_matmul_precision()

    def watch(*a, **k):
        seen.append(effective())
        return real(*a, **k)

    monkeypatch.setattr(torch, "addmm", watch)
    legacy = torch.get_float32_matmul_precision()
    saved = [sw.fp32_precision for sw in switches]
    try:
        if api == "process-wide":
            torch.set_float32_matmul_precision("medium")
        else:
            for sw in switches:
                sw.fp32_precision = "tf32"
        chosen = effective()
        got = nearest_centroid(x, c)
        assert effective() == chosen  # restored
    finally:
        for sw, v in zip(switches, saved):
            sw.fp32_precision = v
        if api == "process-wide":
            torch.set_float32_matmul_precision(legacy)
    full = ["ieee"] * len(switches) if switches else "highest"
    assert seen and all(s == full for s in seen), seen
    np.testing.assert_array_equal(got, expected)
