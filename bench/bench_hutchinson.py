"""Benchmark: seconds per Hutchinson probe, genbound vs PyHessian vs curvlinops; Fisher vs Hutchinson.

Run:  PYTHONPATH=. python bench/bench_hutchinson.py [--probes 16] [--repeats 3] [--threads 1]

Same model, same frozen examples, same process. Seconds per probe = wall time of an estimate with
P probes (graph construction included) divided by P; the median over ``--repeats`` runs,
interleaved so that load from other processes hits every tool alike. Prints a table and writes
(or replaces) the ``bench_hutchinson`` section of ``bench/RESULTS.md``.

PyHessian (``pip install --no-deps pyhessian``) and curvlinops (``curvlinops-for-pytorch``) are
optional: a tool that is missing or fails to import is reported as such.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from genbound.curvature import fisher, hutchinson, pgd, wci_parameters

RESULTS = Path(__file__).with_name("RESULTS.md")
START, END = "<!-- bench_hutchinson:start -->", "<!-- bench_hutchinson:end -->"


def make_model() -> nn.Module:
    """A small CIFAR-style ReLU CNN with eval-mode BatchNorm (piecewise linear: Fisher applies)."""
    torch.manual_seed(0)

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    net = nn.Sequential(
        *block(3, 16), nn.MaxPool2d(2),
        *block(16, 32), nn.MaxPool2d(2),
        *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 10),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.1, 0.1)
    return net.eval()


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s), Python {platform.python_version()}"
    )


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=3, help="batches in the multi-batch comparison")
    ap.add_argument("--pair-repeats", type=int, default=10, help="alternating runs of the ours-vs-PyHessian check")
    ap.add_argument("--iso-repeats", type=int, default=40, help="alternating single-probe timings")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    P, B = args.probes, args.batch

    model = make_model()
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B * args.batches, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (B * args.batches,), generator=g)
    x = pgd(model, x, y, eps=8 / 255, steps=3, seed=0)  # frozen adversarial examples
    one = (x[:B], y[:B])
    crit = nn.CrossEntropyLoss()
    all_names = [n for n, _ in model.named_parameters()]
    n_tensors = len(all_names)
    n_weights = len(wci_parameters(model))

    # ---------------------------------------------------------------- tools
    notes: list[str] = []
    try:
        from pyhessian import hessian as PyHessian  # noqa: N812
    except Exception as exc:  # noqa: BLE001
        PyHessian = None
        notes.append(f"PyHessian import failed: {type(exc).__name__}: {exc}")
    try:
        from curvlinops import HessianLinearOperator, hutchinson_trace
    except Exception as exc:  # noqa: BLE001
        HessianLinearOperator = None
        notes.append(f"curvlinops import failed: {type(exc).__name__}: {exc}")

    def pyh_whole(data: tuple[torch.Tensor, torch.Tensor]) -> float:
        model.zero_grad(set_to_none=True)
        h = PyHessian(model, crit, data=data, cuda=False)
        return _pyh_mean(h.trace(maxIter=P, tol=-math.inf))

    def pyh_loader(batches: list) -> float:
        model.zero_grad(set_to_none=True)
        h = PyHessian(model, crit, dataloader=batches, cuda=False)
        return _pyh_mean(h.trace(maxIter=P, tol=-math.inf))

    def _pyh_mean(samples: list[float]) -> float:
        # PyHessian 0.1 stops early when |mean - prev| / (prev + 1e-6) < tol: the denominator is
        # signed, so with a negative running mean even tol=-1 stops it after a few probes.
        # tol=-inf keeps it to exactly P probes; checked here.
        model.zero_grad(set_to_none=True)
        assert len(samples) == P, f"PyHessian returned {len(samples)} samples, not {P}"
        return float(sum(samples) / P)

    def pyh_per_layer(data: tuple[torch.Tensor, torch.Tensor]) -> float:
        # PyHessian has no per-layer option: one run per tensor with the others frozen
        total = 0.0
        params = dict(model.named_parameters())
        for name in all_names:
            for n, p in params.items():
                p.requires_grad_(n == name)
            total += pyh_whole(data)
        for p in params.values():
            p.requires_grad_(True)
        return total

    def curvlin(data_list: list) -> float:
        params = [p for p in model.parameters()]
        op = HessianLinearOperator(model, crit, params, data_list, check_deterministic=False)
        return float(hutchinson_trace(op, P))

    batches = [(x[i : i + B], y[i : i + B]) for i in range(0, x.shape[0], B)]
    runs: dict[str, Callable[[], float]] = {
        "genbound hutchinson, joint (whole model)": lambda: hutchinson(
            model, one, params="all", n_probes=P, probe_mode="joint", batch_size=None).total,
        "genbound hutchinson, joint, Hessian products": lambda: hutchinson(
            model, one, params="all", n_probes=P, probe_mode="joint", batch_size=None, products="hessian").total,
        f"genbound hutchinson, joint, Hessian products, probe_batch={P}": lambda: hutchinson(
            model, one, params="all", n_probes=P, probe_mode="joint", probe_batch=P, batch_size=None,
            products="hessian").total,
        f"genbound hutchinson, per-layer ({n_tensors} tensors)": lambda: hutchinson(
            model, one, params="all", n_probes=P, probe_mode="layer", batch_size=None).total,
        f"genbound hutchinson, per-layer, WCI layers ({n_weights} weights)": lambda: hutchinson(
            model, one, params=None, n_probes=P, probe_mode="layer", batch_size=None).total,
    }
    if PyHessian is not None:
        runs["PyHessian trace() (whole model)"] = lambda: pyh_whole(one)
        runs[f"PyHessian per-layer ({n_tensors} runs, requires_grad toggled)"] = lambda: pyh_per_layer(one)
    if HessianLinearOperator is not None:
        runs["curvlinops hutchinson_trace (whole model)"] = lambda: curvlin([one])
    multi: dict[str, Callable[[], float]] = {
        f"genbound hutchinson, joint, {args.batches} batches": lambda: hutchinson(
            model, batches, params="all", n_probes=P, probe_mode="joint").total,
    }
    if PyHessian is not None:
        multi[f"PyHessian trace(), dataloader of {args.batches} batches"] = lambda: pyh_loader(batches)
    if HessianLinearOperator is not None:
        multi[f"curvlinops hutchinson_trace, {args.batches} batches"] = lambda: curvlin(batches)

    def measure(table: dict[str, Callable[[], float]]) -> dict[str, tuple[float, float]]:
        times: dict[str, list[float]] = {k: [] for k in table}
        est: dict[str, float] = {}
        for fn in table.values():  # warm-up (first-call allocations, lazy imports)
            try:
                fn()
            except Exception:  # noqa: BLE001 - reported in the timed runs
                pass
        for _ in range(args.repeats):
            for k, fn in table.items():
                try:
                    t, v = timed(fn)
                except Exception as exc:  # noqa: BLE001 - record a failing tool, keep going
                    notes.append(f"{k}: failed with {type(exc).__name__}: {str(exc)[:160]}")
                    times[k] = []
                    continue
                times[k].append(t)
                est[k] = float(v)  # type: ignore[arg-type]
        return {k: (statistics.median(v) / P, est[k]) for k, v in times.items() if v}

    pair = None
    if PyHessian is not None:
        ko, kp = "genbound hutchinson, joint (whole model)", "PyHessian trace() (whole model)"
        wall: dict[str, list[float]] = {ko: [], kp: []}
        cpu: dict[str, list[float]] = {ko: [], kp: []}
        runs[ko](), runs[kp]()  # warm-up
        for r in range(args.pair_repeats):
            for k in ((ko, kp) if r % 2 == 0 else (kp, ko)):
                c0, t0 = time.process_time(), time.perf_counter()
                runs[k]()
                wall[k].append((time.perf_counter() - t0) / P)
                cpu[k].append((time.process_time() - c0) / P)
        pair = tuple(
            (k, statistics.median(wall[k]), statistics.median(cpu[k]), min(cpu[k]), max(cpu[k])) for k in (ko, kp)
        )

    # one probe in isolation, on one retained graph (graph construction excluded): our probe step
    # vs PyHessian's trace() loop body, alternating
    iso = None
    if PyHessian is not None:
        from pyhessian.utils import group_product, hessian_vector_product

        from genbound.curvature._common import make_generator
        from genbound.curvature.hutchinson import _probe_block

        params = list(model.parameters())
        graph = torch.autograd.grad(crit(model(one[0]), one[1]), params, create_graph=True)
        gen = make_generator(0, torch.device("cpu"))

        def ours_probe() -> None:
            _probe_block(graph, params, 1, "joint", gen)

        def pyh_probe() -> None:
            v = [torch.randint_like(p, high=2) for p in params]
            for vi in v:
                vi[vi == 0] = -1
            group_product(hessian_vector_product(graph, params, v), v).cpu().item()

        ours_probe(), pyh_probe()
        iso_t: dict[str, list[float]] = {"ours": [], "pyh": []}
        for r in range(args.iso_repeats):
            for k, fn in ((("ours", ours_probe), ("pyh", pyh_probe)) if r % 2 == 0 else (("pyh", pyh_probe), ("ours", ours_probe))):
                c0 = time.process_time()
                fn()
                iso_t[k].append(time.process_time() - c0)
        iso = (statistics.median(iso_t["ours"]), statistics.median(iso_t["pyh"]))
        del graph

    print(f"model: {n_params} parameters, {n_tensors} tensors; batch {B}; {P} probes; {machine()}")
    single = measure(runs)
    several = measure(multi)

    # ------------------------------------------- Fisher vs Hutchinson at equal wall time
    data512 = (x, y)
    t_h, h = timed(lambda: hutchinson(model, data512, n_probes=P, probe_mode="layer", batch_size=B))
    t_fe, fe = timed(lambda: fisher(model, data512, labels="exact", batch_size=B))
    t_fs, fs = timed(lambda: fisher(model, data512, labels="sample", n_label_samples=2, batch_size=B))
    fisher_rows = []
    for name, t, r in (
        (f"hutchinson, per-layer, {P} probes", t_h, h),
        ("fisher, exact over classes", t_fe, fe),
        ("fisher, 2 sampled labels", t_fs, fs),
    ):
        rel = r.total_se / r.total
        at_equal = rel * math.sqrt(t / t_h)  # standard error scales as 1/sqrt(cost)
        worst = max(lt.se / lt.trace for lt in r.layers)
        fisher_rows.append((name, t, r.total, rel, at_equal, worst))

    # ---------------------------------------------------------------- report
    lines = []
    lines.append(f"Machine: {machine()}.")
    lines.append(
        f"Model: ReLU CNN (3 conv + eval-mode BN, max/avg pool, linear), {n_params} parameters in "
        f"{n_tensors} tensors ({n_weights} WCI weight tensors), float32, CIFAR-size inputs (3x32x32), "
        f"frozen PGD-3 examples; {P} Rademacher probes; median of {args.repeats} interleaved runs; "
        "graph construction included in every time."
    )
    lines.append("")
    lines.append(f"Single batch of {B} (one gradient graph, reused by all probes where the tool allows):")
    lines.append("")
    lines.append("| method | s / probe | trace estimate |")
    lines.append("|---|---:|---:|")
    for k, (spp, v) in single.items():
        lines.append(f"| {k} | {spp:.4f} | {v:.4g} |")
    lines.append("")
    lines.append(f"{args.batches} batches of {B} (dataset-mean loss):")
    lines.append("")
    lines.append("| method | s / probe | trace estimate |")
    lines.append("|---|---:|---:|")
    for k, (spp, v) in several.items():
        lines.append(f"| {k} | {spp:.4f} | {v:.4g} |")
    lines.append("")
    lines.append(
        f"Fisher vs Hutchinson on {x.shape[0]} frozen examples (sum over the {n_weights} WCI weight tensors; "
        "relative standard error of the total, and scaled to the wall time of the Hutchinson run "
        "assuming s.e. proportional to 1/sqrt(time); exact Fisher has no estimator noise):"
    )
    lines.append("")
    lines.append("| estimator | seconds | Tr H (sum) | rel. s.e. | rel. s.e. at Hutchinson's time | worst layer rel. s.e. |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name, t, tot, rel, eq, worst in fisher_rows:
        lines.append(f"| {name} | {t:.2f} | {tot:.4g} | {rel:.2%} | {eq:.2%} | {worst:.2%} |")
    if notes:
        lines.append("")
        lines.append("Notes: " + "; ".join(sorted(set(notes))))
    if pair:
        (ko, wo, co, co_lo, co_hi), (kp, wp, cp, cp_lo, cp_hi) = pair
        lines.append("")
        lines.append(
            f"Paired check, {args.pair_repeats} alternating runs each of {ko!r} and {kp!r} "
            f"(same model, same batch, {P} probes): median wall s/probe {wo:.4f} vs {wp:.4f} "
            f"(ratio {wo / wp:.3f}); median CPU s/probe {co:.4f} vs {cp:.4f} (ratio {co / cp:.3f}; "
            f"CPU range {co_lo:.4f}-{co_hi:.4f} vs {cp_lo:.4f}-{cp_hi:.4f}). This model is piecewise linear, "
            "so genbound's default (products='auto') takes Gauss-Newton products J^T H_out J v (one "
            "forward-mode and one backward product on the retained forward graph) instead of PyHessian's "
            "double backward; every per-layer block of G equals that of H here, so both estimate the same "
            "traces. With products='hessian' both run the same autograd call (rows above and below)."
        )
    if iso:
        lines.append("")
        lines.append(
            f"One probe in isolation (graph construction excluded; {args.iso_repeats} alternating timings, "
            f"median CPU seconds): genbound joint probe with Hessian products {iso[0]:.4f} vs PyHessian trace() loop body "
            f"{iso[1]:.4f} (ratio {iso[0] / iso[1]:.3f})."
        )
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        section = f"{START}\n## Hutchinson per-probe cost (`bench/bench_hutchinson.py`)\n\n{body}\n{END}"
        old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        if START in old:
            new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: section, old, flags=re.S)
        else:
            new = old.rstrip("\n") + "\n\n" + section + "\n"
        RESULTS.write_text(new)
        print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
