"""The flow of ``DESIGN.md``: data -> models -> collect -> partition -> stability -> bounds.

:func:`evaluate` runs it for one or more models on a training and a held-out source and returns an
:class:`Evaluation` (``table()``, ``save(dir)``). Any stability engine of the registry
(``pgd``, ``noise``, ``autoattack``, ``pgd+autoattack``, or the sound ``ibp`` / ``crown`` / ``exact``) and any partition of the
protocol (Voronoi partitions, one per K; or ``partition="grid"``: one kappa-fine label-pure grid
per kappa, each at ``delta / J``, :mod:`genbound.kappa_fine`). With ``cache_dir`` every expensive step (cell
assignment per partition, stability flags per model) is saved as it finishes and reused by a
rerun with the same inputs, so a killed run loses at most the step in progress.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from genbound import __version__
from genbound.bounds import BoundReport, SampleStats, compute_bounds, save_stats_npz
from genbound.bounds.grids import best_over_grid, split_delta
from genbound.collect import collect
from genbound.config import Config, check_model_name, to_toml
from genbound.data.source import DataSource
from genbound.errors import UserInputError
from genbound.fileio import atomic_write, make_output_folder, write_text
from genbound.kappa_fine import KappaFineResult, grid_bounds
from genbound.models.validate import check_model
from genbound.partition import GridPartition, PartitionProtocol, PartitionSpec, build_grid, build_partition
from genbound.stability import make_engine, stability_flags
from genbound.kappas import check_kappas

GRID_NOTE = {"source_data": "none (data-independent grid over [0,1]^d)"}


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, torch.Tensor):
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> str:
    """Hash of every parameter and buffer (names and values)."""
    sd = model.state_dict()
    return _fingerprint(sorted(sd), *(sd[k] for k in sorted(sd)))


def source_fingerprint(source: DataSource) -> str:
    """Hash of a source's identity: name, size, labels and a probe of its first and last inputs."""
    idx = np.unique(np.array([0, len(source) - 1]))
    x, _ = source.get(idx)
    return _fingerprint(source.name, len(source), source.labels, x)


def _save_npz_atomic(path: str, **arrays: Any) -> None:
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)


@dataclass
class ModelInput:
    """One model with the data it is judged on (its own labels, e.g. for a memorization model)."""

    name: str
    model: nn.Module
    train: DataSource
    heldout: DataSource | None


@dataclass
class Evaluation:
    """Everything a run computed: the bound report, the per-sample statistics, and the records."""

    report: BoundReport
    stats: list[SampleStats]
    config: Config
    records: dict[str, Any] = field(default_factory=dict)
    best_over_grid: list[dict[str, Any]] = field(default_factory=list)
    grids: dict[str, KappaFineResult] = field(default_factory=dict)  # partition="grid": per model

    def table(self) -> str:
        """The results table (one block per model and partition size), then the best over the K grid."""
        lines = [self.report.table()]
        if self.best_over_grid and self.grids:
            lines.append("")
            lines.append(f"best certified value over the kappa-fine grids (one per kappa; delta split: "
                         f"{self.config.delta:g}/{len(self.config.kappas)} per grid, spec §5):")
            for b in self.best_over_grid:
                lines.append(f"  {b['model']:<16} {b['name']:<11} {b['value']:.4f}  (kappa={b['kappa']})")
        elif self.best_over_grid:
            lines.append("")
            lines.append(f"best certified value over the K grid {list(self.config.K)} (delta split: "
                         f"{self.config.delta:g}/{len(self.config.K)} per partition, spec §5):")
            for b in self.best_over_grid:
                lines.append(f"  {b['model']:<16} {b['name']:<11} {b['value']:.4f}  (K={b['K']}, kappa={b['kappa']})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        doc = self.report.to_dict()
        doc["best_over_grid"] = self.best_over_grid
        doc["config"] = self.config.to_dict()
        doc["run"] = self.records
        return doc

    def save(self, out_dir: str | os.PathLike, *, report: bool = True) -> dict[str, str]:
        """Write ``result.json``, ``samples.npz``, ``config.toml``, ``versions.json`` and (``report``)
        the page ``report.html`` drawn from those files into ``out_dir``; returns the paths written."""
        out = make_output_folder(os.fspath(out_dir))
        paths = {"result": os.path.join(out, "result.json"), "samples": os.path.join(out, "samples.npz"),
                 "config": os.path.join(out, "config.toml"), "versions": os.path.join(out, "versions.json")}
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        write_text(paths["result"], text + "\n")
        save_stats_npz(paths["samples"], self.stats)
        sections: dict[str, Any] = {"bounds": self.config.to_dict()}
        for key in ("data", "models"):
            if key in self.records:
                sections[key] = self.records[key]
        write_text(paths["config"], to_toml(_toml_safe(sections)))
        write_text(paths["versions"], json.dumps(software_versions(), indent=2))
        if report:
            from genbound.report import write_report
            paths["html"] = write_report([out])
        return paths


def _toml_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _toml_safe(x) for k, x in v.items() if x is not None}
    if isinstance(v, (list, tuple)):
        return [_toml_safe(x) for x in v if x is not None]
    if isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def software_versions() -> dict[str, str]:
    import scipy
    return {"genbound": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "platform": platform.platform()}


def _as_inputs(models: Any, train: DataSource, heldout: DataSource | None) -> list[ModelInput]:
    if isinstance(models, nn.Module):
        models = {"model": models}
    if isinstance(models, Mapping):
        items = list(models.items())
    else:
        items = [(m.name, m) if isinstance(m, ModelInput) else m for m in models]
    out = []
    for name, m in items:
        if isinstance(m, ModelInput):
            check_model_name(m.name)
            out.append(m)
        elif isinstance(m, nn.Module):
            out.append(ModelInput(check_model_name(name), m, train, heldout))
        else:
            raise UserInputError(f"model {name!r} is a {type(m).__name__}, not a torch.nn.Module")
    names = [m.name for m in out]
    if len(set(names)) != len(names) or not names:
        raise UserInputError(f"give at least one model, with unique names; got {names}")
    return out


def _check_inputs(inputs: list[ModelInput], cfg: Config) -> None:
    """Everything that can be checked before a run writes or computes anything: the stability
    engine's parameters and optional package, non-empty data, kappas inside the input domain, and
    each model's fit to its data (one forward pass)."""
    make_engine(cfg.stability, **engine_params(cfg))
    for mi in inputs:
        if not len(mi.train):
            raise UserInputError(f"model {mi.name!r}: the training set {mi.train.name!r} is empty")
        check_kappas(cfg.kappas, norm=cfg.norm, dim=int(np.prod(mi.train.shape)))
        for src in (mi.train, mi.heldout):
            if src is not None and len(src):
                x, _ = src.get(np.arange(min(2, len(src))))
                dev = next((p.device for p in mi.model.parameters()), torch.device("cpu"))
                check_model(mi.model, x.to(dev), src.num_classes, what=f"model {mi.name!r}")


def evaluate(models: nn.Module | Mapping[str, nn.Module] | list, train: DataSource, heldout: DataSource | None,
             config: Config | None = None, *, cache_dir: str | None = None) -> Evaluation:
    """Every bound of the spec for each model, per kappa and per K.

    Parameters
    ----------
    models:
        A module, ``{name: module}``, or a list of :class:`ModelInput` (a model with its own data,
        e.g. one trained on partially random labels and judged on labels corrupted the same way).
        Models take [0, 1] pixels (wrap with :func:`genbound.models.with_normalization`).
    train, heldout:
        The exact training set of the models (eval preprocessing, no augmentation) and a held-out
        set disjoint from it (``None``: the held-out results are left out).
    config:
        :class:`genbound.config.Config`.
    cache_dir:
        Where finished steps are saved and looked up (resume after a crash).
    """
    cfg = config or Config()
    inputs = _as_inputs(models, train, heldout)
    _check_inputs(inputs, cfg)
    if cache_dir:
        make_output_folder(cache_dir)
    t0 = time.perf_counter()
    kappas = np.asarray(cfg.kappas, dtype=np.float64)
    partitions = build_partitions(cfg, train, heldout)
    cell_cache: dict[tuple[int, str], np.ndarray] = {}
    reports: list[BoundReport] = []
    stats_all: list[SampleStats] = []
    grid_reports: list[BoundReport] = []
    grids: dict[str, KappaFineResult] = {}
    evidence: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    for mi in inputs:
        tr = collect(mi.model, mi.train, batch_size=cfg.batch_size, device=cfg.device, progress_bar=cfg.progress)
        ho = (collect(mi.model, mi.heldout, batch_size=cfg.batch_size, device=cfg.device, progress_bar=cfg.progress)
              if mi.heldout is not None and len(mi.heldout) else None)
        stab = _stability(mi, kappas, cfg, cache_dir)
        if not np.array_equal(stab["pred"], tr.pred):
            raise RuntimeError(f"model {mi.name}: predictions changed between the collect and stability passes "
                               "(non-deterministic model?)")
        evidence[mi.name] = stab["evidence"]
        # a flag proves a cell only when the engine is sound and verified the model it was given
        sound = bool(stab["evidence"].get("sound")) and stab["evidence"].get("status", "verified") == "verified"
        errors[mi.name] = {"train_error": tr.error, "heldout_error": None if ho is None else ho.error,
                           "train_source": mi.train.describe(), "heldout_source": None if mi.heldout is None else mi.heldout.describe()}
        if cfg.partition == "grid":
            assigned = [(part, _cells(part, mi.train, cfg, cache_dir, cell_cache),
                         _cells(part, mi.heldout, cfg, cache_dir, cell_cache) if ho is not None else np.zeros(0, np.int64))
                        for part in partitions.values()]
            kf = grid_bounds(model=mi.name, grids=assigned, train_loss=tr.loss, stable=stab["stable"], delta=cfg.delta,
                             heldout_loss=None if ho is None else ho.loss, stability_method=cfg.stability,
                             stability_sound=sound, partition_note=GRID_NOTE)
            grids[mi.name] = kf
            stats_all.extend(kf.stats)
            reports.extend(kf.reports)
            continue
        for K, part in partitions.items():
            tc = _cells(part, mi.train, cfg, cache_dir, cell_cache)
            hc = hl = np.zeros(0, np.int64)
            if ho is not None:
                keep = part.heldout_statistics_mask(len(mi.heldout))
                hc = _cells(part, mi.heldout, cfg, cache_dir, cell_cache)[keep]
                hl = ho.loss[keep]
            s = SampleStats(
                train_cell=tc, train_loss=tr.loss, train_stable=stab["stable"], kappas=kappas, heldout_cell=hc,
                heldout_loss=hl, K=part.K, model=mi.name, stability_method=cfg.stability, stability_sound=sound,
                norm=cfg.norm, label_pure=cfg.label_pure, max_cell_diameter=part.diameter(cfg.norm),
                partition={k: v for k, v in part.record().items() if k not in ("label_pure", "max_cell_diameter")},
                partition_uses_heldout=part.uses_heldout, partition_depends_on_train=part.depends_on_training_set,
            )
            stats_all.append(s)
            reports.append(compute_bounds(s, cfg.delta))
            if len(partitions) > 1:
                grid_reports.append(compute_bounds(s, split_delta(cfg.delta, len(partitions))))
    report = BoundReport.merge(reports)
    records = {
        "models": [{"name": mi.name, **getattr(mi.model, "genbound_model", {}),
                    **({"training": _jsonable(mi.model.genbound_training)} if hasattr(mi.model, "genbound_training") else {}),
                    "fingerprint": model_fingerprint(mi.model), **errors[mi.name]} for mi in inputs],
        "stability": evidence,
        "partitions": {str(key): p.record() for key, p in partitions.items()},
        "wall_s": round(time.perf_counter() - t0, 3),
        "versions": software_versions(),
    }
    if grids:
        best = [b for kf in grids.values() for b in kf.best]
        records["delta_accounting"] = {name: kf.delta_accounting for name, kf in grids.items()}
    else:
        best = best_over_grid(grid_reports, cfg.delta, len(partitions), what="K values") if len(partitions) > 1 else []
    return Evaluation(report, stats_all, cfg, records, best, grids)


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def build_partitions(cfg: Config, train: DataSource, heldout: DataSource | None) -> dict[Any, PartitionProtocol]:
    """The partitions of a run, fixed before any training sample is looked at: one Voronoi
    partition per K (keyed by K), or one kappa-fine label-pure grid per kappa (keyed by
    ``"grid:<kappa>"``) over the data's fixed input range."""
    if cfg.partition == "grid":
        return {f"grid:{k!r}": build_grid(kappa=k, input_dim=train.dim, num_classes=train.num_classes,
                                          range=tuple(train.input_range)) for k in cfg.kappas}
    out: dict[Any, PartitionProtocol] = {}
    for K in cfg.K:
        spec = PartitionSpec(kind=cfg.partition, regions=K, seed=cfg.partition_seed, label_pure=cfg.label_pure,
                             num_classes=train.num_classes if cfg.label_pure else None,
                             projection_dim=cfg.projection_dim if cfg.partition == "projection" else None)
        out[K] = build_partition(spec, input_dim=train.dim, heldout=heldout, batch_size=cfg.batch_size)
    return out


def _cells(part: PartitionProtocol, source: DataSource, cfg: Config, cache_dir: str | None,
           memo: dict[tuple[Any, str], np.ndarray]) -> np.ndarray:
    if isinstance(part, GridPartition):
        # a grid hands out ids as it meets cells: never from a file, once per (grid, source) in a run
        key = (id(part), source_fingerprint(source))
        if key not in memo:
            memo[key] = part.assign(source, batch_size=max(cfg.batch_size, 4096))
        return memo[key]
    key = (part.K, source_fingerprint(source) + _fingerprint(part.record()))
    if key in memo:
        return memo[key]
    path = os.path.join(cache_dir, f"cells-K{part.K}-{key[1]}.npz") if cache_dir else None
    if path and os.path.exists(path):
        cells = np.load(path)["cells"]
    else:
        cells = part.assign(source, batch_size=cfg.batch_size, device=cfg.device, progress_bar=cfg.progress)
        if path:
            _save_npz_atomic(path, cells=cells)
    memo[key] = cells
    return cells


def engine_params(cfg: Config) -> dict[str, Any]:
    """The stability engine's parameters from the configuration (``make_engine(cfg.stability, **...)``)."""
    pgd = dict(steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, prescreen=cfg.pgd_prescreen)
    aa = dict(attacks=cfg.autoattack_attacks, iters=cfg.autoattack_iters, restarts=cfg.autoattack_restarts,
              targets=cfg.autoattack_targets)
    params: dict[str, Any] = {"batch_size": cfg.batch_size}
    if cfg.stability == "pgd":
        params.update(seed=cfg.stability_seed, norm=cfg.norm, **pgd)
    elif cfg.stability == "noise":
        params.update(seed=cfg.stability_seed, kind=cfg.norm, draws=cfg.noise_draws)
    elif cfg.stability == "autoattack":
        params.update(seed=cfg.stability_seed, norm=cfg.norm, **aa)
    elif cfg.stability == "pgd+autoattack":
        params.update(seed=cfg.stability_seed, norm=cfg.norm, pgd=pgd, autoattack=aa)
    else:  # sound: deterministic, no seed
        params.update(norm=cfg.norm, intermediate=cfg.sound_intermediate)
    return params


def _stability(mi: ModelInput, kappas: np.ndarray, cfg: Config, cache_dir: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"method": cfg.stability, **engine_params(cfg), "device": cfg.device,
                              "progress_bar": cfg.progress}
    key = _fingerprint(model_fingerprint(mi.model), source_fingerprint(mi.train), kappas,
                       {k: v for k, v in params.items() if k not in ("device", "progress_bar", "batch_size")})
    path = os.path.join(cache_dir, f"stability-{mi.name}-{key}.npz") if cache_dir else None
    if path and os.path.exists(path):
        z = np.load(path)
        return {"stable": z["stable"], "pred": z["pred"], "evidence": json.loads(str(z["evidence"]))}
    method = params.pop("method")
    res = stability_flags(mi.model, mi.train, kappas, method=method, **params)
    evidence = _jsonable(res.evidence)
    if path:
        _save_npz_atomic(path, stable=res.stable, pred=res.pred, evidence=np.str_(json.dumps(evidence)))
    return {"stable": res.stable, "pred": res.pred, "evidence": evidence}
