"""Benchmark: time to a 5 % relative standard error per layer on a real CIFAR-10 ResNet-18, genbound
against curvlinops and PyHessian; and every tool's value at saturated adversarial inputs against
the float64 exact value.

Run (peers installed in a separate virtual environment, never torchvision):

    python -m venv --system-site-packages /work/venv-curv
    /work/venv-curv/bin/pip install -c constraints.txt --no-deps pyautoattack curvlinops-for-pytorch \\
        backpack-for-pytorch pyhessian einconv opt-einsum einops linear_operator unfoldNd
    pip download --no-deps foolbox==3.3.4 -d /tmp/fb          # only its 20 CIFAR-10 PNGs are read
    PYTHONPATH=. /work/venv-curv/bin/python bench/bench_curvature_resnet18.py --wheel /tmp/fb/foolbox-3.3.4-py3-none-any.whl

Model: pyautoattack's ResNet-18 (``examples/resnet.py``, weights ``examples/model_test.pt`` from its
wheel, loaded with ``weights_only=True``), eval mode, float32, inputs in [0, 1]. Data: the 20
CIFAR-10 test images in foolbox's wheel (labels from the file names), one batch of 20.

Part 1 (clean inputs): for each layer (weight tensor) in ``--layers``, each tool is run until its
estimate of ``Tr H_kk`` has a relative standard error of at most ``--rel-se``; tools alternate, the
order rotating from layer to layer, in one process. How each tool gets a standard error:

- genbound ``hutchpp`` (default sketch) and ``hutchpp(sketch=0)`` (plain Hutchinson): their own
  standard error and stopping rule (``rel_se``), one layer per call (``params=[name]``).
- PyHessian ``trace()`` with ``requires_grad`` toggled to the layer: it returns the per-probe
  samples; the harness asks for ``--chunk`` more probes until ``std / sqrt(n) <= rel_se * mean``.
- curvlinops ``hutchinson_trace`` on a ``HessianLinearOperator`` of the layer: the harness calls it
  with ``--chunk`` matrix-vector products at a time and takes the standard error over those chunk
  means (independent, identically distributed).
- curvlinops ``hutchpp_trace`` with ``--hutchpp-matvecs`` products: it returns no standard error,
  so the harness repeats it (independent repetitions, at least 3) and stops when the standard
  error of the mean of the repetitions is at most ``rel_se`` of it.

Part 2 (saturated inputs): PGD-10 at 8/255 (genbound's, eval mode); the float64 exact per-layer
trace is the Fisher identity in float64 (exact for this piecewise-linear, eval-mode-BN net:
``H_kk = G_kk``); each tool's float32 value with a fixed budget is compared with it (z-scores where
the tool gives a standard error).

Writes (or replaces) the ``bench_curvature_resnet18`` section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import math
import re
import statistics
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from genbound.curvature import fisher, hutchpp, pgd, wci_parameters

RESULTS = Path(__file__).with_name("RESULTS.md")
START, END = "<!-- bench_curvature_resnet18:start -->", "<!-- bench_curvature_resnet18:end -->"


def load_model() -> nn.Module:
    spec = importlib.util.find_spec("pyautoattack")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pyautoattack is not installed (see the module doc)")
    root = Path(list(spec.submodule_search_locations)[0]) / "examples"
    mspec = importlib.util.spec_from_file_location("pyautoattack_resnet", root / "resnet.py")
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)  # type: ignore[union-attr]
    model = mod.ResNet18()
    model.load_state_dict(torch.load(root / "model_test.pt", map_location="cpu", weights_only=True))
    return model.eval()


def load_images(wheel: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    from PIL import Image

    xs, ys = [], []
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if re.search(r"data/cifar10_\d+_\d+\.png$", n))
        for n in names:
            img = Image.open(io.BytesIO(zf.read(n))).convert("RGB")
            xs.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
            ys.append(int(re.search(r"_(\d+)\.png$", n).group(1)))  # type: ignore[union-attr]
    return torch.stack(xs), torch.tensor(ys)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wheel", default="/tmp/fb/foolbox-3.3.4-py3-none-any.whl")
    ap.add_argument("--layers", default="all", help="'all' or comma-separated indices into the 21 weight tensors")
    ap.add_argument("--rel-se", type=float, default=0.05)
    ap.add_argument("--chunk", type=int, default=8, help="probes per harness round for the peers without a stopping rule")
    ap.add_argument("--hutchpp-matvecs", type=int, default=30)
    ap.add_argument("--max-matvecs", type=int, default=1200, help="genbound: products per layer at most")
    ap.add_argument("--peer-matvecs", type=int, default=64,
                    help="products per layer for the peers' harness loops; beyond it the time to the target is "
                         "projected from the measured spread (marked 'projected')")
    ap.add_argument("--tools", default="genbound-hutchpp,genbound-hutchinson,pyhessian,curvlinops-hutchinson,curvlinops-hutchpp")
    ap.add_argument("--sat-layers", default="", help="layer indices for part 2 (empty: skip)")
    ap.add_argument("--sat-budget", type=int, default=48, help="products per tool and layer in part 2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--title", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_model()
    x, y = load_images(Path(args.wheel))
    with torch.no_grad():
        p = torch.softmax(model(x).double(), 1)
    acc = float((p.argmax(1) == y).double().mean())
    names = [s.name for s in wci_parameters(model)]
    pick = list(range(len(names))) if args.layers == "all" else [int(i) for i in args.layers.split(",")]
    tools = args.tools.split(",")
    rel = args.rel_se
    crit = nn.CrossEntropyLoss()
    params = dict(model.named_parameters())
    lines_note: list[str] = []

    from curvlinops import HessianLinearOperator, hutchinson_trace, hutchpp_trace
    from pyhessian import hessian as PyHessian  # noqa: N812

    def only(name: str) -> None:
        for n, q in params.items():
            q.requires_grad_(n == name)

    def everyone() -> None:
        for q in params.values():
            q.requires_grad_(True)

    def run_genbound(name: str, sketch: int, data) -> tuple[float, float, int]:
        r = hutchpp(model, data, params=[name], sketch=sketch, rel_se=rel, max_products=args.max_matvecs,
                    batch_size=None, seed=0)
        lt = r.layers[0]
        return lt.trace, lt.se, int(lt.n_products or 0)

    def chunked(draw: Callable[[int], list[float]], per_sample_products: int) -> tuple[float, float, int]:
        """Samples (iid) in rounds of args.chunk until se <= rel * |mean|."""
        samples: list[float] = []
        while True:
            samples += draw(args.chunk)
            n = len(samples)
            if n < 2:
                continue
            mean = statistics.fmean(samples)
            se = statistics.stdev(samples) / math.sqrt(n)
            if se <= rel * abs(mean) or n * per_sample_products >= args.peer_matvecs:
                return mean, se, n * per_sample_products

    def run_pyhessian(name: str, data) -> tuple[float, float, int]:
        only(name)
        model.zero_grad(set_to_none=True)
        h = PyHessian(model, crit, data=data, cuda=False)
        out = chunked(lambda n: list(h.trace(maxIter=n, tol=-math.inf)), 1)
        model.zero_grad(set_to_none=True)
        everyone()
        return out

    def run_curv_hutch(name: str, data) -> tuple[float, float, int]:
        op = HessianLinearOperator(model, crit, [params[name]], [data], check_deterministic=False)
        return chunked(lambda n: [float(hutchinson_trace(op, n))], args.chunk)

    def run_curv_hutchpp(name: str, data) -> tuple[float, float, int]:
        op = HessianLinearOperator(model, crit, [params[name]], [data], check_deterministic=False)
        m = args.hutchpp_matvecs
        reps: list[float] = []
        while True:
            reps.append(float(hutchpp_trace(op, m)))
            if len(reps) >= 3:
                mean = statistics.fmean(reps)
                se = statistics.stdev(reps) / math.sqrt(len(reps))
                if se <= rel * abs(mean) or len(reps) * m >= max(args.peer_matvecs, 3 * m):
                    return mean, se, len(reps) * m

    runners: dict[str, Callable[[str, tuple], tuple[float, float, int]]] = {
        "genbound-hutchpp": lambda n, d: run_genbound(n, 16, d),
        "genbound-hutchinson": lambda n, d: run_genbound(n, 0, d),
        "pyhessian": run_pyhessian,
        "curvlinops-hutchinson": run_curv_hutch,
        "curvlinops-hutchpp": run_curv_hutchpp,
    }
    data = (x, y)
    # exact float64 per-layer traces (Fisher identity: this net is piecewise linear, BN in eval mode)
    t0 = time.perf_counter()
    model64 = load_model().double()
    ex_clean = fisher(model64, (x.double(), y), params=[names[i] for i in pick], batch_size=None)
    t_exact = time.perf_counter() - t0
    print(f"accuracy on the 20 images {acc:.2f}; exact float64 traces of {len(pick)} layers in {t_exact:.1f} s", flush=True)
    table: dict[str, dict[str, tuple[float, float, int, float]]] = {t: {} for t in tools}
    for j, i in enumerate(pick):
        name = names[i]
        order = tools[j % len(tools):] + tools[: j % len(tools)]
        for tool in order:
            t0 = time.perf_counter()
            try:
                est, se, nprod = runners[tool](name, data)
            except Exception as exc:  # noqa: BLE001 - a failing peer is reported, the rest goes on
                lines_note.append(f"{tool} on {name}: {type(exc).__name__}: {str(exc)[:120]}")
                print(lines_note[-1], flush=True)
                everyone()
                continue
            table[tool][name] = (est, se, nprod, time.perf_counter() - t0)
            print(f"{name:28s} {tool:22s} {est:11.5g} +- {se:9.3g} (exact {ex_clean[name].trace:.5g}) "
                  f"{nprod:5d} products {table[tool][name][3]:7.1f} s", flush=True)

    # ---------------------------------------------------------------- saturated inputs
    sat_rows: list[str] = []
    sat_info = ""
    if args.sat_layers:
        sat = [names[int(i)] for i in args.sat_layers.split(",")]
        x_adv = pgd(model, x, y, eps=8 / 255, steps=10, seed=0)
        with torch.no_grad():
            pa = torch.softmax(model(x_adv).double(), 1)
        top = pa.max(1).values
        flipped = int((pa.argmax(1) != y).sum())
        one_minus = (1 - top).clamp_min(1e-300)
        sat_info = (f"PGD-10, 8/255, step 2/255, random start: {flipped}/20 flipped; 1 - p_max from "
                    f"{float(one_minus.min()):.1e} to {float(one_minus.max()):.1e} (median {float(one_minus.median()):.1e})")
        print(sat_info, flush=True)
        ex_adv = fisher(model64, (x_adv.double(), y), params=sat, batch_size=None)
        f32 = fisher(model, (x_adv, y), params=sat, batch_size=None)
        B = args.sat_budget
        for name in sat:
            ref = ex_adv[name].trace
            vals: list[tuple[str, float, float | None]] = []
            r = hutchpp(model, (x_adv, y), params=[name], sketch=16, rel_se=rel, max_products=args.max_matvecs,
                        batch_size=None, seed=1)
            vals.append((f"genbound hutchpp, rel_se {rel} ({r.layers[0].n_products} products)", r.layers[0].trace, r.layers[0].se))
            vals.append(("genbound fisher, float32", f32[name].trace, None))
            only(name)
            model.zero_grad(set_to_none=True)
            h = PyHessian(model, crit, data=(x_adv, y), cuda=False)
            s = list(h.trace(maxIter=B, tol=-math.inf))
            model.zero_grad(set_to_none=True)
            everyone()
            vals.append((f"PyHessian trace(), {B} probes", statistics.fmean(s), statistics.stdev(s) / math.sqrt(len(s))))
            op = HessianLinearOperator(model, crit, [params[name]], [(x_adv, y)], check_deterministic=False)
            hs = [float(hutchinson_trace(op, B // 4)) for _ in range(4)]
            vals.append((f"curvlinops hutchinson_trace, 4 x {B // 4}", statistics.fmean(hs), statistics.stdev(hs) / 2))
            hp = [float(hutchpp_trace(op, args.hutchpp_matvecs)) for _ in range(3)]
            vals.append((f"curvlinops hutchpp_trace, 3 x {args.hutchpp_matvecs}", statistics.fmean(hp), statistics.stdev(hp) / math.sqrt(3)))
            for label, v, se in vals:
                z = f"{(v - ref) / se:+.1f}" if se else "-"
                sat_rows.append(f"| {name} | {label} | {v:.5g} | {ref:.5g} | {v / ref:.3f} | {z} |")
                print(sat_rows[-1], flush=True)

    # ---------------------------------------------------------------- report
    done = [names[i] for i in pick]
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}{(' - ' + args.title) if args.title else ''}. "
        f"pyautoattack's CIFAR-10 ResNet-18 (11.2 M parameters, 21 weight tensors), eval mode, float32, one batch "
        f"of the 20 CIFAR-10 images in foolbox 3.3.4's wheel (clean accuracy {acc:.2f}); torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), 2 shared cores (load from other processes: timings are ratios within "
        f"this run, tools alternating layer by layer). Target: relative standard error <= {rel:.0%} per layer; "
        f"layers measured: {len(done)} of 21 ({', '.join(done)}). Products capped at {args.max_matvecs} per layer.",
        "",
        "| layer | tool | estimate | s.e. | exact (float64) | products | seconds | seconds to the target |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def to_target(est: float, se: float, n: int, s: float) -> tuple[float, bool]:
        """Seconds to reach se <= rel * |est|: measured, or projected with se ~ 1/sqrt(products)
        (exact for the harness loops; conservative for Hutch++, whose error falls faster)."""
        if se <= rel * abs(est):
            return s, False
        return s * (se / (rel * abs(est))) ** 2, True

    totals: dict[str, float] = {}
    projected: dict[str, int] = {}
    for tool in tools:
        for name in done:
            if name in table[tool]:
                est, se, n, s = table[tool][name]
                t_target, proj = to_target(est, se, n, s)
                lines.append(f"| {name} | {tool} | {est:.5g} | {se:.2g} | {ex_clean[name].trace:.5g} | {n} | {s:.1f} | "
                             f"{t_target:.1f}{' (projected)' if proj else ''} |")
        if all(nm in table[tool] for nm in done):
            tt = [to_target(*table[tool][nm]) for nm in done]
            totals[tool] = sum(t for t, _ in tt)
            projected[tool] = sum(1 for _, p in tt if p)
    lines += ["", "| tool | seconds to the target, all measured layers | ratio to genbound hutchpp | layers projected |",
              "|---|---:|---:|---:|"]
    base = totals.get("genbound-hutchpp")
    for tool, tot in totals.items():
        ratio = f"{tot / base:.2f}" if base else "-"
        lines.append(f"| {tool} | {tot:.1f} | {ratio} | {projected[tool]}/{len(done)} |")
    z_gb = [(table["genbound-hutchpp"][nm][0] - ex_clean[nm].trace) / table["genbound-hutchpp"][nm][1]
            for nm in done if "genbound-hutchpp" in table and nm in table["genbound-hutchpp"]]
    if z_gb:
        lines += ["", f"genbound hutchpp against the float64 exact traces at clean inputs: z from {min(z_gb):+.2f} to {max(z_gb):+.2f}."]
    if sat_rows:
        lines += ["", f"Saturated inputs: {sat_info}. Exact: Fisher identity in float64 (model cast to float64).", "",
                  "| layer | tool (float32) | value | exact (float64) | ratio | z |", "|---|---|---:|---:|---:|---:|", *sat_rows]
    if lines_note:
        lines += ["", "Notes: " + "; ".join(lines_note)]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        section = f"{START}\n## Time to 5 % per layer on a CIFAR-10 ResNet-18 (`bench/bench_curvature_resnet18.py`)\n\n{body}\n{END}"
        old = RESULTS.read_text()
        if START in old:
            new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, old, flags=re.S)
        else:
            new = old.rstrip("\n") + "\n\n" + section + "\n"
        RESULTS.write_text(new)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
