"""Sharding over ranks (torchrun, or a process group made by the caller) and per-batch resume.

Two ranks on gloo: the per-sample arrays and the results equal a one-process run; an error on one
rank ends every rank (no hang); a killed rank's finished batches are reused on the rerun.
"""

import glob
import json
import multiprocessing as mp
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from genbound.cli import main
from genbound.config import Config
from genbound.data import load_dataset, split_source
from genbound.data.source import TensorSource
from genbound.distributed import Ranks, collective, place_rows, shard_batches, split_batches
from genbound.errors import UserInputError
from genbound.fileio import read_npz
from genbound.models import mlp
from genbound.stability import make_engine, run_engine
from genbound.stability.batch_store import BatchStore
from genbound.stability.engine import BatchResult
from tests.conftest import example_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _same(a, b):
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


# ---------------------------------------------------------------- shards and rows (no process group)

def test_shards_are_whole_batches_disjoint_and_cover():
    batches = split_batches(1000, 64)
    assert [b.size for b in batches] == [64] * 15 + [40]
    for world in (1, 2, 3, 7, 20):
        shards = [shard_batches(batches, Ranks(r, world)) for r in range(world)]
        got = np.sort(np.concatenate([np.concatenate(s) if s else np.zeros(0, np.int64) for s in shards]))
        assert np.array_equal(got, np.arange(1000))
        # strided: rank r holds batches r, r + W, ...; sizes differ by at most one batch
        assert [len(s) for s in shards] == [len(batches[r::world]) for r in range(world)]
    sub = split_batches(np.array([9, 3, 7, 1, 5]), 2)
    assert [b.tolist() for b in sub] == [[9, 3], [7, 1], [5]]
    with pytest.raises(UserInputError):
        split_batches(10, 0)


def test_place_rows_any_dtype_and_checks_coverage():
    parts = [(np.array([0, 2]), {"f": np.array([[0.5], [2.5]], np.float32), "s": np.array(["a", "ccc"], object)}),
             (np.array([1]), {"f": np.array([[1.5]], np.float32), "s": np.array(["bb"], object)})]
    out = place_rows(parts, 3)
    assert out["f"].dtype == np.float32 and out["f"][:, 0].tolist() == [0.5, 1.5, 2.5]
    assert out["s"].tolist() == ["a", "bb", "ccc"]
    with pytest.raises(RuntimeError, match="exactly once"):
        place_rows(parts, 4)
    with pytest.raises(RuntimeError, match="exactly once"):
        place_rows([parts[0], parts[0]], 4)


def test_collective_without_group_is_the_call():
    assert collective(lambda: 3) == [3]


# ---------------------------------------------------------------- per-batch resume (one process)

def _small():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(70, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (70,), generator=g)
    model = mlp(input_shape=(1, 4, 4), num_classes=3, hidden=(8,), seed=0).eval()
    return model, TensorSource(x, y, name="small", num_classes=3)


class _Counting:
    """An engine that counts the batches it computes."""

    def __init__(self, engine):
        self.e, self.name, self.sound, self.calls = engine, engine.name, engine.sound, []

    def start(self, *a):
        self.e.start(*a)

    def update(self, x, index):
        self.calls.append(int(index[0]))
        return self.e.update(x, index)

    def evidence(self, counts, n):
        return self.e.evidence(counts, n)


@pytest.mark.parametrize("method", ["pgd", "crown"])
def test_store_resumes_finished_batches(tmp_path, method):
    model, src = _small()
    k = np.array([0.02, 0.1, 0.3])
    params = dict(steps=2, seed=1) if method == "pgd" else {}
    full = run_engine(make_engine(method, **params), model, src, k, batch_size=16, progress_bar=False)
    store = BatchStore(tmp_path / "b")
    first = _Counting(make_engine(method, **params))
    run_engine(first, model, src, k, batch_size=16, indices=np.arange(32), progress_bar=False, store=store)
    assert first.calls == [0, 16] and len(glob.glob(str(tmp_path / "b" / "*.npz"))) == 2
    # tamper with one stored batch: the rerun must take it from the file, not compute it again
    b = store.load(np.arange(16, 32))
    assert b is not None and np.array_equal(b.stable, full.stable[16:32])
    store.save(BatchResult(b.index, ~b.stable, b.pred, b.counts, b.arrays))
    again = _Counting(make_engine(method, **params))
    res = run_engine(again, model, src, k, batch_size=16, progress_bar=False, store=store)
    assert again.calls == [32, 48, 64]
    assert np.array_equal(res.stable[16:32], ~full.stable[16:32])
    assert np.array_equal(res.stable[:16], full.stable[:16]) and np.array_equal(res.stable[32:], full.stable[32:])
    for key, a in full.arrays.items():  # object arrays (the verifier's status) come back as they were
        assert res.arrays[key].dtype == a.dtype and _same(res.arrays[key][:16], a[:16]), key
    # a file that cannot be read back counts as not done
    path = store.path(np.arange(48, 64))
    with open(path, "wb") as fh:
        fh.write(b"not a zip")
    assert store.load(np.arange(48, 64)) is None


# ---------------------------------------------------------------- two ranks on gloo (spawned processes)

CFG = dict(kappas=(0.02, 0.1, 0.4), K=(5, 20), pgd_steps=3, batch_size=64, progress=False)
# stability on part of the training set: a uniform subsample (batches of it shared out), and a sound
# verifier's budget spent cell by cell (each round's batches shared out; small batches: several a round)
PARTIAL = {"sample": dict(CFG, stability_sample=100, delta_s=0.1),
           "budget": dict(CFG, stability="crown", stability_budget=60, batch_size=4)}


# kappa-fine grids number cells in the order they meet them: every rank assigns them over the whole source
GRID = dict(kappas=(0.1, 0.25), partition="grid", pgd_steps=2, batch_size=32, progress=False)


def _lowdim():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 2, generator=g)
    y = (x[:, 0] > x[:, 1]).long()
    model = mlp(input_shape=(2,), num_classes=2, hidden=(8,), seed=0).eval()
    return model, TensorSource(x[:300], y[:300], name="ld", num_classes=2), TensorSource(x[300:], y[300:], name="ld-ho",
                                                                                          num_classes=2)


def _setup():
    src = load_dataset("digits")
    train, held, _ = split_source(src, 0.3, seed=0)
    train, held = train.subset(np.arange(300)), held.subset(np.arange(130))
    return mlp(input_shape=(1, 8, 8), hidden=(32,), seed=0).eval(), train, held


class _Failing(TensorSource):
    """Fails to read sample 100 (batch 1 of 64: rank 1's shard)."""

    def get(self, indices):
        if 100 in np.asarray(indices):
            raise UserInputError("sample 100 is unreadable")
        return super().get(indices)


def _arrays(ev):
    return {f"{s.model}@{s.K}/{k}": np.asarray(getattr(s, k)) for s in ev.stats
            for k in ("train_cell", "train_loss", "train_stable", "train_checked", "heldout_cell", "heldout_loss")}


def _worker(rank, folder):
    """Rank ``rank`` of 2: evaluate on good data, then on data that fail on rank 1 only."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=rank, world_size=2)
    from genbound.pipeline import evaluate
    model, train, held = _setup()
    outcome = {}
    ev = evaluate({"m": model}, train, held, Config(**CFG), cache_dir=os.path.join(folder, "cache"))
    outcome["paths"] = ev.save(os.path.join(folder, "out"), report=False)
    outcome["values"] = [r.value for r in ev.report.results]
    np.savez(os.path.join(folder, f"rank{rank}.npz"), **_arrays(ev))
    for name, cfg in PARTIAL.items():
        np.savez(os.path.join(folder, f"rank{rank}-{name}.npz"), **_arrays(evaluate({"m": model}, train, held, Config(**cfg))))
    lm, ltr, lho = _lowdim()
    np.savez(os.path.join(folder, f"rank{rank}-grid.npz"), **_arrays(evaluate({"m": lm}, ltr, lho, Config(**GRID))))
    x, y = train.tensors()
    try:
        evaluate({"m": model}, _Failing(x, y, name="failing", num_classes=10), held, Config(**CFG))
    except Exception as exc:  # noqa: BLE001
        outcome["error"] = [type(exc).__name__, str(exc)]
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as fh:
        json.dump(outcome, fh)
    torch.distributed.destroy_process_group()


def test_two_ranks_equal_one_process_only_rank0_writes_and_errors_end_both(tmp_path):
    from genbound.pipeline import evaluate
    model, train, held = _setup()
    one = evaluate({"m": model}, train, held, Config(**CFG))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, "a rank hung"
    outcomes = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    ref = _arrays(one)
    for r in range(2):
        got = np.load(tmp_path / f"rank{r}.npz")
        assert set(got.files) == set(ref)
        for k in ref:
            assert np.array_equal(got[k], ref[k]), (r, k)
        assert outcomes[r]["values"] == [x.value for x in one.report.results]
    lm, ltr, lho = _lowdim()
    for name, cfg in {**PARTIAL, "grid": None}.items():
        ref = _arrays(evaluate({"m": model}, train, held, Config(**cfg)) if cfg else evaluate({"m": lm}, ltr, lho, Config(**GRID)))
        for r in range(2):
            got = np.load(tmp_path / f"rank{r}-{name}.npz")
            for k in ref:
                assert np.array_equal(got[k], ref[k]), (name, r, k)
    assert outcomes[0]["paths"] and outcomes[1]["paths"] == {}
    assert sorted(os.listdir(tmp_path / "out")) == ["config.toml", "result.json", "samples.npz", "versions.json"]
    cache = os.listdir(tmp_path / "cache")
    assert any(f.startswith("stability-") and f.endswith(".npz") for f in cache)
    assert not any(f.endswith(".batches") for f in cache)  # the finished batches go once the merged file is saved
    # the failing rank raises its own error; the other raises it too, naming the rank, instead of waiting
    assert outcomes[1]["error"] == ["UserInputError", "sample 100 is unreadable"]
    assert outcomes[0]["error"] == ["UserInputError", "rank 1: sample 100 is unreadable"]


# ---------------------------------------------------------------- the real torchrun command

TABLES = """
[bounds]
kappas = [0.02, 0.1, 0.3]
K = [10, 100]
[stability]
steps = 3
[run]
batch_size = 100
"""


def _config(tmp_path):
    return example_config(tmp_path, TABLES)


def _torchrun(cfg, out, env=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "genbound", "evaluate", cfg,
           "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _samples(out):
    return read_npz(os.path.join(out, "samples.npz"))


def test_torchrun_two_ranks_equal_one_process(tmp_path):
    cfg = _config(tmp_path)
    assert main(["evaluate", cfg, "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    p = _torchrun(cfg, tmp_path / "two")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("wrote ") == 1  # rank 0 alone prints
    one, two = _samples(tmp_path / "one"), _samples(tmp_path / "two")
    assert set(one) == set(two) and any(k.endswith("train_stable") for k in one)
    assert [k for k in one if not _same(one[k], two[k])] == []
    r1 = json.loads((tmp_path / "one" / "result.json").read_text())
    r2 = json.loads((tmp_path / "two" / "result.json").read_text())
    assert r1["results"] == r2["results"] and r1["best_over_grid"] == r2["best_over_grid"]


@pytest.mark.slow
def test_torchrun_killed_rank_resumes_from_its_finished_batches(tmp_path):
    cfg = _config(tmp_path)
    assert main(["evaluate", cfg, "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    out = tmp_path / "two"
    # rank 1 dies (no clean-up) after its first stability batch; rank 0 finishes its batches
    p = _torchrun(cfg, out, {"GENBOUND_TEST_FAIL_AFTER_BATCHES": "1:1"})
    assert p.returncode != 0 and not (out / "result.json").exists()
    files = sorted(glob.glob(str(out / "cache" / "stability-*.batches" / "*.npz")))
    one = _samples(out.parent / "one")
    n = next(v.shape[0] for k, v in one.items() if k.endswith("train_stable"))
    assert 1 <= len(files) < len(split_batches(n, 100))
    # tamper with a finished batch: the rerun must reuse the file instead of computing it again
    z = read_npz(files[0])
    rows = z["index"]
    np.savez(files[0], **{**z, "stable": ~z["stable"]})
    p = _torchrun(cfg, out)
    assert p.returncode == 0, p.stderr[-2000:]
    two = _samples(out)
    for k in one:
        if k.endswith("train_stable"):
            assert np.array_equal(two[k][rows], ~one[k][rows])
            rest = np.setdiff1d(np.arange(n), rows)
            assert np.array_equal(two[k][rest], one[k][rest])
        else:
            assert _same(one[k], two[k]), k
