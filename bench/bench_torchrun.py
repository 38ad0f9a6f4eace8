"""``torchrun`` with 2 ranks vs 1 process on CPU: speedup, and the per-sample arrays compared.

The demo's CNN recipe is trained on the mnist5k train split; ``--n`` of its training digits and
``--m`` held-out digits (a seeded subset) are written to .npz files, and one config (the demo's kappa grid, K in
{10, 100, 1000}, PGD-10) is evaluated by three commands, alternately, ``--reps`` times:

- ``python -m genbound evaluate`` (one process, torch's default thread count: 2 here);
- the same with ``OMP_NUM_THREADS=1`` (one process, one thread);
- ``torchrun --nproc-per-node 2`` (two ranks; torchrun sets ``OMP_NUM_THREADS=1`` for each).

(``torchrun --nproc-per-node 1`` is the first command: torchrun sets one thread only for N > 1.)

Wall time is the whole command (start-up, imports and the files included) and the pipeline's own
``run.wall_s`` (rank 0's ``evaluate``); CPU time is that of every process of the command (on a
shared machine the wall-time ratio moves with the other jobs, the CPU time much less). Every array of ``samples.npz`` (losses, cells, stability
flags) and every result value is compared with the one-process run; differing samples are
counted per array (a near-tie whose float rounding depends on the thread count or the batch would
show here).

    python bench/bench_torchrun.py [--n 2000] [--m 500] [--reps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._common import table, write_section  # noqa: E402
from genbound.data import load_dataset  # noqa: E402
from genbound.demo import CNN_KWARGS, CNN_TRAIN, DEMO_KAPPAS  # noqa: E402
from genbound.models import save_weights, small_cnn, train_classifier  # noqa: E402

CONFIG = """
[data]
train = "train.npz"
heldout = "heldout.npz"
[[models]]
name = "cnn"
factory = "small_cnn"
weights = "cnn.safetensors"
kwargs = {kwargs}
input_normalization = "none"
[bounds]
kappas = {kappas}
K = [10, 100, 1000]
[stability]
method = "pgd"
steps = 10
[run]
batch_size = {batch}
"""


def _slug(kind: str) -> str:
    return kind.replace(",", "").replace(" ", "-")


def _load() -> float:
    return os.getloadavg()[0]


def _run(kind: str, cfg: str, out: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its children)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("OMP_NUM_THREADS", None)
    base = [sys.executable, "-m"]
    if kind == "2 ranks":
        cmd = base + ["torch.distributed.run", "--nproc-per-node", "2", "-m", "genbound"]
    else:
        cmd = base + ["genbound"]
        if kind == "1 process, 1 thread":
            env["OMP_NUM_THREADS"] = "1"
    c0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run(cmd + ["evaluate", cfg, "--out", out, "--no-progress"], env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if p.returncode:
        raise SystemExit(f"{kind} failed:\n{p.stderr[-3000:]}")
    return wall, cpu


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="training digits evaluated (mnist5k's train split: 4,000)")
    ap.add_argument("--m", type=int, default=1000, help="held-out digits (mnist5k's held-out split: 1,000)")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    train = load_dataset("mnist5k", split="train")
    held = load_dataset("mnist5k", split="heldout")
    model = train_classifier(small_cnn(**CNN_KWARGS, seed=0), train, epochs=3, seed=0, device="cpu",
                             progress_bar=False, **CNN_TRAIN)
    work = tempfile.mkdtemp(prefix="bench-torchrun-")
    for name, src, k in (("train", train, args.n), ("heldout", held, args.m)):
        pick = np.sort(np.random.default_rng(0).permutation(len(src))[:k])  # a seeded subset of every class
        x, y = src.get(pick)
        np.savez(os.path.join(work, f"{name}.npz"), x=x.numpy(), y=y.numpy())
    save_weights(model, os.path.join(work, "cnn.safetensors"))
    kw = "{ " + ", ".join(f"{k} = {v}" for k, v in CNN_KWARGS.items()) + " }"
    cfg = os.path.join(work, "c.toml")
    with open(cfg, "w") as fh:
        fh.write(CONFIG.format(kwargs=kw, kappas=list(DEMO_KAPPAS), batch=args.batch))
    kinds = ["1 process", "1 process, 1 thread", "2 ranks"]
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    inner: dict[str, list[float]] = {k: [] for k in kinds}
    cpus: dict[str, list[float]] = {k: [] for k in kinds}
    loads = [_load()]
    for rep in range(args.reps):
        for kind in (kinds if rep % 2 == 0 else kinds[::-1]):
            out = os.path.join(work, f"{_slug(kind)}-{rep}")
            wall, cpu = _run(kind, cfg, out)
            walls[kind].append(wall)
            cpus[kind].append(cpu)
            inner[kind].append(json.load(open(os.path.join(out, "result.json")))["run"]["wall_s"])
            loads.append(_load())
    ref_dir = os.path.join(work, "1-process-0")
    ref = dict(np.load(os.path.join(ref_dir, "samples.npz")))
    ref_res = json.load(open(os.path.join(ref_dir, "result.json")))
    diffs = []
    for kind in kinds[1:]:
        for rep in range(args.reps):
            d = os.path.join(work, f"{_slug(kind)}-{rep}")
            got = np.load(os.path.join(d, "samples.npz"))
            res = json.load(open(os.path.join(d, "result.json")))
            for key, a in ref.items():
                b = got[key]
                if a.shape != b.shape:
                    diffs.append((kind, rep, key, "shape"))
                elif a.ndim and a.dtype.kind != "U":
                    bad = ~((a == b) | ((a != a) & (b != b))) if a.dtype.kind == "f" else a != b
                    rows = int(np.any(bad.reshape(bad.shape[0], -1), axis=1).sum()) if a.ndim else int(bad)
                    if rows:
                        diffs.append((kind, rep, key, rows))
                elif not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                    diffs.append((kind, rep, key, "value"))
            if res["results"] != ref_res["results"]:
                diffs.append((kind, rep, "result.json results", "differ"))
    t1, t2 = min(walls["1 process"]), min(walls["2 ranks"])
    r1, r2 = min(walls["1 process, 1 thread"]), min(walls["2 ranks"])
    e1, e2 = min(inner["1 process, 1 thread"]), min(inner["2 ranks"])
    rows = [[k, " / ".join(f"{w:.1f}" for w in walls[k]), " / ".join(f"{w:.1f}" for w in inner[k]),
             " / ".join(f"{w:.1f}" for w in cpus[k])] for k in kinds]
    n_arrays = sum(1 for k in ref if ref[k].ndim)
    body = (f"The demo's CNN recipe (small_cnn {CNN_KWARGS}, 3 epochs on the mnist5k train split); {args.n} training "
            f"and {args.m} held-out digits; the demo's 9 kappas, K in {{10, 100, 1000}} (uniform), PGD-10, batch "
            f"{args.batch}; {args.reps} alternating repetitions per command (min kept).\n\n"
            + table(rows, ["command", "wall s (whole command)", "evaluate wall s (rank 0)", "CPU s (all processes)"])
            + f"\n\nSpeedup of 2 ranks, whole command: **{t1 / t2:.2f}x** over one process with torch's default "
              f"threads, **{r1 / r2:.2f}x** over one process with one thread; `evaluate` alone (rank 0's "
              f"`run.wall_s`, without torchrun's start-up): **{e1 / e2:.2f}x** over one process with one thread. "
            + f"Per-sample arrays ({n_arrays} of samples.npz: losses, cells per K, stability flags) and result values "
              f"against the one-process run: "
            + ("**identical** in every run (no near-tie moved)." if not diffs else
               "differences: " + "; ".join(f"{k} rep {r}: {key}: {v}" for k, r, key, v in diffs) + ".")
            + f"\n\nThe machine is shared with other jobs: 1-minute load average "
              f"{' -> '.join(f'{x:.1f}' for x in loads)} (before, then after each command), on 2 cores.")
    print(body)
    if not args.no_write:
        write_section("bench_torchrun", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
