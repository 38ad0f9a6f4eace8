"""The flow of ``DESIGN.md``: data -> models -> collect -> partition -> stability -> bounds.

:func:`evaluate` runs it for one or more models on a training and a held-out source and returns an
:class:`Evaluation` (``table()``, ``save(dir)``). Any stability engine of the registry
(``pgd``, ``noise``, ``autoattack``, ``pgd+autoattack``, or the sound ``ibp`` / ``crown`` / ``exact``) and any partition of the
protocol (Voronoi partitions, one per K; or ``partition="grid"``: one kappa-fine label-pure grid
per kappa, each at ``delta / J``, :mod:`genbound.kappa_fine`). Each dataset is read once for the
predictions, the losses and the cells of every partition (:func:`genbound.collect.collect` with
the partitions' assigners), then by the stability engine. With ``cache_dir`` every expensive step
(the cells of each partition, saved when the pass ends; stability flags per model) is saved as it
finishes and reused by a rerun with the same inputs, so a killed run loses at most the step in
progress (the stability step also keeps each finished batch, so it loses at most a batch).

Inside an initialized ``torch.distributed`` process group (``torchrun``, or one the caller made)
every rank must call :func:`evaluate`; the per-sample steps (the pass, stability) are shared out
between the ranks by whole batches (:mod:`genbound.distributed`), every rank gets the same
:class:`Evaluation`, equal to a one-process run, and only rank 0 writes (the cache,
:meth:`Evaluation.save`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from genbound import __version__
from genbound.bounds import BoundReport, SampleStats, compute_bounds, save_stats_npz
from genbound.bounds.grids import best_over_grid, split_delta
from genbound.collect import Collected, collect
from genbound.config import Config, check_model_name, to_toml
from genbound.data.source import DataSource
from genbound.distributed import Ranks, collective, current, from_main, sharded_rows, split_batches
from genbound.errors import UserInputError
from genbound.fileio import atomic_write, make_output_folder, write_text
from genbound.kappa_fine import KappaFineResult, grid_bounds
from genbound.models.validate import check_model
from genbound.partition import (GridPartition, KMeansPartition, KMeansSpec, PartitionProtocol, PartitionSpec,
                                build_grid, build_kmeans, build_partition, check_kmeans)
from genbound.stability import make_engine, stability_flags
from genbound.stability.batch_store import BatchStore
from genbound.kappas import check_kappas
from genbound.torch_utils import model_device, resolve_device

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

    def save(self, out_dir: str | os.PathLike, *, report: bool = True,
             inputs: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Write ``result.json``, ``samples.npz``, ``config.toml``, ``versions.json`` and (``report``)
        the page ``report.html`` drawn from those files into ``out_dir``; returns the paths written.
        In a process group only rank 0 writes; the other ranks write nothing and return ``{}``.

        ``config.toml`` holds this run's settings as ``[bounds]``, in the schema of ``genbound
        evaluate`` (docs/config.md); ``inputs``, the run's ``data`` table, ``models`` tables,
        ``bounds`` (the settings as declared) and ``run`` table in that schema (paths absolute),
        make it a file ``genbound evaluate`` reruns as it is. What the data and models turned out
        to be (sizes, fingerprints, errors) is in ``result.json``."""
        if not current().main:
            return {}
        out = make_output_folder(os.fspath(out_dir))
        paths = {"result": os.path.join(out, "result.json"), "samples": os.path.join(out, "samples.npz"),
                 "config": os.path.join(out, "config.toml"), "versions": os.path.join(out, "versions.json")}
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        write_text(paths["result"], text + "\n")
        save_stats_npz(paths["samples"], self.stats)
        given = dict(inputs or {})
        # the tables in the order the evaluate schema reads them; [bounds] from this run when not given
        sections: dict[str, Any] = {k: given[k] for k in ("data", "models") if k in given}
        sections["bounds"] = given.get("bounds", self.config.to_dict())
        if "run" in given:
            sections["run"] = given["run"]
        head = ("# rerun: genbound evaluate config.toml --out NEW_FOLDER\n" if inputs else
                "# this run's settings (the schema of genbound evaluate's [bounds]); its data and models "
                "are described in result.json (run.data, run.models)\n")
        write_text(paths["config"], head + to_toml(_toml_safe(sections)))
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
                check_model(mi.model, x.to(model_device(mi.model)), src.num_classes, what=f"model {mi.name!r}")
        if cfg.partition == "kmeans":
            for K in cfg.K:
                check_kmeans(kmeans_spec(cfg, K, mi.train.num_classes), train=mi.train, heldout=mi.heldout,
                             model=mi.model)


def evaluate(models: nn.Module | Mapping[str, nn.Module] | list, train: DataSource, heldout: DataSource | None,
             config: Config | None = None, *, cache_dir: str | None = None,
             shard: bool | None = None) -> Evaluation:
    """Every bound of the spec for each model, per kappa and per K.

    Parameters
    ----------
    models:
        A module, ``{name: module}``, or a list of :class:`ModelInput` (a model with its own data,
        e.g. one trained on partially random labels and judged on labels corrupted the same way).
        Models take [0, 1] pixels (wrap with :func:`genbound.models.with_normalization`). They are
        moved to ``config.device`` (``None``: CUDA when available, else CPU) before anything runs.
    train, heldout:
        The exact training set of the models (eval preprocessing, no augmentation) and a held-out
        set disjoint from it (``None``: the held-out results are left out).
    config:
        :class:`genbound.config.Config`.
    cache_dir:
        Where finished steps are saved and looked up (resume after a crash). Shared by the ranks
        of a process group (each saves its finished stability batches there).
    shard:
        Share the per-sample steps out between the ranks of the initialized process group
        (module docstring); every rank must then call ``evaluate``. ``None``: whenever a group of
        more than one rank is initialized.
    """
    cfg = config or Config()
    ranks = current() if shard is not False else Ranks()
    inputs = _as_inputs(models, train, heldout)
    dev = resolve_device(cfg.device)  # evaluate places its models once; every step then runs where they are
    for mi in inputs:
        mi.model.to(dev)
    _check_inputs(inputs, cfg)
    if cache_dir and ranks.main:
        make_output_folder(cache_dir)
    t0 = time.perf_counter()
    kappas = np.asarray(cfg.kappas, dtype=np.float64)
    # a partition on a model's features belongs to that model: built in the loop, one per model
    per_model = cfg.partition == "kmeans" and cfg.kmeans_features is not None
    partitions = {} if per_model else build_partitions(cfg, train, heldout, cache_dir=cache_dir, ranks=ranks)
    partition_records: dict[str, Any] = {str(key): p.record() for key, p in partitions.items()}
    cell_cache: dict[Any, np.ndarray] = {}
    reports: list[BoundReport] = []
    stats_all: list[SampleStats] = []
    grid_reports: list[BoundReport] = []
    grids: dict[str, KappaFineResult] = {}
    evidence: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    steps = {"collect": 0.0, "assignment": 0.0, "stability": 0.0, "bounds": 0.0}
    for mi in inputs:
        # one pass per dataset: predictions, losses and the cells of every partition from the same batches
        parts = (build_partitions(cfg, mi.train, mi.heldout, model=mi.model, cache_dir=cache_dir, ranks=ranks)
                 if per_model else partitions)
        if per_model:
            partition_records.update({f"{mi.name}:{key}": p.record() for key, p in parts.items()})
        tr = _pass(mi.model, mi.train, parts, cfg, cache_dir, cell_cache, steps, ranks)
        ho = (_pass(mi.model, mi.heldout, parts, cfg, cache_dir, cell_cache, steps, ranks)
              if mi.heldout is not None and len(mi.heldout) else None)
        order = _budget_order(cfg, parts, mi, cache_dir, cell_cache) if cfg.stability_budget else None
        t_step = time.perf_counter()
        stab = _stability(mi, kappas, cfg, cache_dir, ranks, order)
        steps["stability"] += time.perf_counter() - t_step
        checked = stab["checked"]
        if not np.array_equal(stab["pred"][checked], tr.pred[checked]):
            raise RuntimeError(f"model {mi.name}: predictions changed between the collect and stability passes "
                               "(non-deterministic model?)")
        partial = dict(train_checked=checked, selection=stab["selection"], delta_s=cfg.delta_s,
                       selection_seed=None if stab["selection"] == "all" else cfg.stability_seed)
        evidence[mi.name] = stab["evidence"]
        # a flag proves a cell only when the engine is sound and verified the model it was given
        sound = bool(stab["evidence"].get("sound")) and stab["evidence"].get("status", "verified") == "verified"
        errors[mi.name] = {"train_error": tr.error, "heldout_error": None if ho is None else ho.error,
                           "train_source": mi.train.describe(), "heldout_source": None if mi.heldout is None else mi.heldout.describe()}
        ids = _identifiers("train", mi.train)
        ho_ids = _identifiers("heldout", mi.heldout) if ho is not None else {}
        t_step = time.perf_counter()
        if cfg.partition == "grid":
            assigned = [(part, _cells(part, mi.train, cache_dir, cell_cache),
                         _cells(part, mi.heldout, cache_dir, cell_cache) if ho is not None else np.zeros(0, np.int64))
                        for part in parts.values()]
            kf = grid_bounds(model=mi.name, grids=assigned, train_loss=tr.loss, stable=stab["stable"], delta=cfg.delta,
                             heldout_loss=None if ho is None else ho.loss, stability_method=cfg.stability,
                             stability_sound=sound, partition_note=GRID_NOTE, **partial)
            grids[mi.name] = kf
            stats_all.extend(replace(s, **ids, **ho_ids) for s in kf.stats)
            reports.extend(kf.reports)
            steps["bounds"] += time.perf_counter() - t_step
            continue
        for K, part in parts.items():
            tc = _cells(part, mi.train, cache_dir, cell_cache)
            hc = hl = np.zeros(0, np.int64)
            if ho is not None:
                keep = part.heldout_statistics_mask(len(mi.heldout))
                hc = _cells(part, mi.heldout, cache_dir, cell_cache)[keep]
                hl = ho.loss[keep]
            s = SampleStats(
                train_cell=tc, train_loss=tr.loss, train_stable=stab["stable"], kappas=kappas, heldout_cell=hc,
                heldout_loss=hl, K=part.K, model=mi.name, stability_method=cfg.stability, stability_sound=sound,
                norm=cfg.norm, label_pure=cfg.label_pure, max_cell_diameter=part.diameter(cfg.norm),
                partition={k: v for k, v in part.record().items() if k not in ("label_pure", "max_cell_diameter")},
                partition_uses_heldout=part.uses_heldout, partition_depends_on_train=part.depends_on_training_set,
                **partial,
                **ids, **({k: v[keep] for k, v in ho_ids.items()} if ho is not None else {}),
            )
            stats_all.append(s)
            reports.append(compute_bounds(s, cfg.delta))
            if len(parts) > 1:
                grid_reports.append(compute_bounds(s, split_delta(cfg.delta, len(parts))))
        steps["bounds"] += time.perf_counter() - t_step
    report = BoundReport.merge(reports)
    records = {
        "models": [{"name": mi.name, **getattr(mi.model, "genbound_model", {}),
                    **({"training": _jsonable(mi.model.genbound_training)} if hasattr(mi.model, "genbound_training") else {}),
                    "fingerprint": model_fingerprint(mi.model), **errors[mi.name]} for mi in inputs],
        "stability": evidence,
        "partitions": partition_records,
        "wall_s": round(time.perf_counter() - t0, 3),
        # per step, summed over models; collect and assignment share one pass over each dataset
        "steps_s": {k: round(v, 3) for k, v in steps.items()},
        "versions": software_versions(),
    }
    if grids:
        best = [b for kf in grids.values() for b in kf.best]
        records["delta_accounting"] = {name: kf.delta_accounting for name, kf in grids.items()}
    else:
        best = best_over_grid(grid_reports, cfg.delta, len(cfg.K), what="K values") if len(cfg.K) > 1 else []
    return Evaluation(report, stats_all, cfg, records, best, grids)


def _identifiers(role: str, source: DataSource) -> dict[str, np.ndarray]:
    """``{role}_index`` (and ``{role}_path`` for files) of every sample: written to samples.npz so
    that each flag maps back to its input."""
    return {f"{role}_{k}": v for k, v in source.identifiers().items() if k in ("index", "path")}


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def build_partitions(cfg: Config, train: DataSource, heldout: DataSource | None,
                     model: nn.Module | None = None, cache_dir: str | None = None,
                     ranks: Ranks | None = None) -> dict[Any, PartitionProtocol]:
    """The partitions of a run: one Voronoi partition per K (keyed by K), fixed before any training
    sample is looked at; one kappa-fine label-pure grid per kappa (keyed by ``"grid:<kappa>"``) over
    the data's fixed input range; or one k-means partition per K, fitted on a held-out split
    (independent of the training sample) or on the training set or ``model``'s features (then
    ``depends_on_training_set`` and every partition result is a diagnostic); with ``cache_dir``
    a k-means fit is saved there and reused by a rerun with the same inputs. In a process group
    (``ranks``) rank 0 fits (or reads) each k-means partition and hands it to the others."""
    if cfg.partition == "kmeans":
        return {K: _kmeans(kmeans_spec(cfg, K, train.num_classes), cfg, train, heldout, model, cache_dir, ranks or Ranks())
                for K in cfg.K}
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


def _kmeans(spec: KMeansSpec, cfg: Config, train: DataSource, heldout: DataSource | None, model: nn.Module | None,
            cache_dir: str | None, ranks: Ranks) -> KMeansPartition:
    model_id = model_fingerprint(model) if spec.features is not None and model is not None else None
    path = None
    if cache_dir:
        fit_data = source_fingerprint(train) if spec.fit == "train" else (
            source_fingerprint(heldout) if heldout is not None and len(heldout) else None)
        key = _fingerprint(asdict(spec), fit_data, model_id)
        path = os.path.join(cache_dir, f"kmeans-K{spec.regions}-{key}.npz")

    def state() -> dict[str, np.ndarray]:
        if path and os.path.exists(path):
            with np.load(path) as z:
                return dict(z)
        fitted = build_kmeans(spec, train=train, heldout=heldout, model=model, batch_size=cfg.batch_size,
                              device=cfg.device, model_id=model_id, progress_bar=cfg.progress).state()
        if path:
            _save_npz_atomic(path, **fitted)
        return fitted

    # rank 0 fits (or reads the cached fit) and every rank rebuilds the same partition from that
    # state: one fit, so every rank gets the same centroids whatever its floating-point path
    return KMeansPartition.from_state(spec, from_main(state, ranks), model=model)


def kmeans_spec(cfg: Config, K: int, num_classes: int) -> KMeansSpec:
    """The k-means partition with K clusters that ``cfg`` asks for."""
    return KMeansSpec(regions=K, seed=cfg.partition_seed, fit=cfg.kmeans_fit, fit_fraction=cfg.kmeans_fit_fraction,
                      features=cfg.kmeans_features, iterations=cfg.kmeans_iterations,
                      seeding_sample=cfg.kmeans_seeding_sample, backend=cfg.kmeans_backend, label_pure=cfg.label_pure,
                      num_classes=num_classes if cfg.label_pure else None)


def _cell_key(part: PartitionProtocol, source: DataSource, cache_dir: str | None) -> tuple[Any, str | None]:
    """Memo key of a partition's cells on a source, and the cache file (None for grids: a grid
    hands out ids as it meets cells, so its cells never come from a file)."""
    if isinstance(part, GridPartition):
        return (id(part), source_fingerprint(source)), None
    key = (part.K, source_fingerprint(source) + _fingerprint(part.record()))
    return key, (os.path.join(cache_dir, f"cells-K{part.K}-{key[1]}.npz") if cache_dir else None)


def _pass(model: nn.Module, source: DataSource, partitions: Mapping[Any, PartitionProtocol], cfg: Config,
          cache_dir: str | None, memo: dict[Any, np.ndarray], steps: dict[str, float], ranks: Ranks) -> Collected:
    """One pass of ``model`` over ``source``: predictions and losses, and the cells of every
    partition not yet in ``memo`` or the cache folder, from the same batches. Each partition's
    cells are saved to the cache as soon as the pass ends.

    In a process group each rank passes over its batches and every rank gets the full arrays;
    a kappa-fine grid, which numbers its cells in the order it meets them, is assigned by every
    rank over the whole source instead (a second, model-free pass; grids are for low-dimensional
    data, where that pass is cheap)."""
    todo: dict[Any, tuple[PartitionProtocol, str | None]] = {}
    for part in partitions.values():
        key, path = _cell_key(part, source, cache_dir)
        if key not in memo and key not in todo:
            todo[key] = (part, path)
    # rank 0 reads the cache and hands it out: every rank takes the same branch
    found = from_main(lambda: {key: np.load(path)["cells"] for key, (_, path) in todo.items()
                               if path and os.path.exists(path)}, ranks)
    memo.update(found)
    todo = {key: v for key, v in todo.items() if key not in found}
    whole = {key: v for key, v in todo.items() if ranks.sharded and isinstance(v[0], GridPartition)}
    consumers = {key: part.assigner(device=cfg.device) for key, (part, _) in todo.items() if key not in whole}
    if not ranks.sharded:
        out = collect(model, source, batch_size=cfg.batch_size, device=cfg.device, progress_bar=cfg.progress,
                      consumers=consumers, workers=cfg.workers)
        seconds = [out.seconds]
    else:
        mine: dict[str, float] = {}  # this rank's own time in the pass (rank 0's is recorded)

        def shard(idx: np.ndarray) -> dict[str, np.ndarray]:
            c = collect(model, source, batch_size=cfg.batch_size, device=cfg.device,
                        progress_bar=cfg.progress and ranks.main, consumers=consumers, workers=cfg.workers,
                        indices=idx)
            mine.update(c.seconds)
            return {"pred": c.pred, "loss": c.loss, **{f"cells:{i}": c.extra[key] for i, key in enumerate(consumers)}}

        rows = sharded_rows(shard, split_batches(len(source), cfg.batch_size), len(source), ranks)
        labels = source.labels.astype(np.int64)
        out = Collected(pred=rows["pred"], loss=rows["loss"], labels=labels, index=np.arange(len(source)),
                        extra={key: rows[f"cells:{i}"] for i, key in enumerate(consumers)})
        seconds = [mine]
        if whole:
            grid = collect(None, source, batch_size=cfg.batch_size, device=cfg.device, progress_bar=False,
                           consumers={key: part.assigner() for key, (part, _) in whole.items()}, workers=cfg.workers)
            out.extra.update(grid.extra)
            seconds.append({"forward": 0.0, "consumers": grid.seconds["consumers"]})
    for s in seconds:
        steps["collect"] += s["forward"]
        steps["assignment"] += s["consumers"]
    for key, (part, path) in todo.items():
        memo[key] = out.extra[key]
    if cache_dir:  # rank 0 writes; a refused write ends every rank
        collective(lambda: [_save_npz_atomic(path, cells=memo[key]) for key, (_, path) in todo.items() if path]
                   if ranks.main else None, ranks)
    return out


def _cells(part: PartitionProtocol, source: DataSource, cache_dir: str | None, memo: dict[Any, np.ndarray]) -> np.ndarray:
    """The cells of ``source`` in ``part``, computed by the pass over ``source`` (:func:`_pass`)."""
    return memo[_cell_key(part, source, cache_dir)[0]]


def _budget_order(cfg: Config, partitions: dict[Any, PartitionProtocol], mi: ModelInput, cache_dir: str | None,
                  memo: dict[tuple[Any, str], np.ndarray]) -> dict[str, Any]:
    """The partition whose cells order a sound verifier's budget (spec §8 a), and the kappa whose
    proof closes a cell.

    The finest partition of the run orders the budget: the largest K of a Voronoi grid, or the
    kappa-fine grid of the smallest kappa. Every partition's ``M_k`` is still computed from its
    own cells (a cell is proven only by a proof inside it), so the choice moves no number off its
    theorem, only which cells get a proof. A cell closes at its first proof at the largest kappa
    where a proof can count on that partition (label-pure, known diameter <= kappa; on a grid its
    own kappa), else at its first proof at the smallest kappa (the proofs then only serve the
    diagnostics).
    """
    kappas = list(cfg.kappas)
    if cfg.partition == "grid":
        key = f"grid:{kappas[0]!r}"
        close_at = 0
    else:
        key = max(partitions)
        d = partitions[key].diameter(cfg.norm)
        useful = [j for j, k in enumerate(kappas) if cfg.label_pure and d is not None and d <= k]
        close_at = useful[-1] if useful else 0
    part = partitions[key]
    cells = _cells(part, mi.train, cache_dir, memo)
    return {"cells": cells, "close_at": close_at,
            "record": {"partition": str(key), "close_at_kappa": kappas[close_at],
                       "partition_fingerprint": _fingerprint(part.record())}}


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


def _stability(mi: ModelInput, kappas: np.ndarray, cfg: Config, cache_dir: str | None, ranks: Ranks,
               order: dict[str, Any] | None = None) -> dict[str, Any]:
    """Flags of every training sample (``checked`` all True), of a seeded uniform subsample
    (``[stability] sample``) or of a verifier budget spent cell by cell along ``order``
    (``[stability] budget``); unchecked rows are False (spec §8)."""
    params: dict[str, Any] = {"method": cfg.stability, **engine_params(cfg), "device": cfg.device,
                              "progress_bar": cfg.progress}
    n = len(mi.train)
    if cfg.stability_sample is not None:
        select = {"kind": "uniform", "sample": cfg.stability_sample, "seed": cfg.stability_seed}
    elif cfg.stability_budget is not None:
        select = {"kind": "cells", "budget": cfg.stability_budget, "seed": cfg.stability_seed, **order["record"]}
    else:
        select = {"kind": "all"}
    key = _fingerprint(model_fingerprint(mi.model), source_fingerprint(mi.train), kappas,
                       {k: v for k, v in params.items() if k not in ("device", "progress_bar", "batch_size")},
                       *([select] if select["kind"] != "all" else []))
    path = os.path.join(cache_dir, f"stability-{mi.name}-{key}.npz") if cache_dir else None
    selection = select["kind"]

    def load() -> dict[str, Any] | None:
        if not (path and os.path.exists(path)):
            return None
        z = np.load(path)
        checked = z["checked"] if "checked" in z else np.ones(n, dtype=bool)
        return {"stable": z["stable"], "pred": z["pred"], "checked": checked, "selection": selection,
                "evidence": json.loads(str(z["evidence"]))}

    cached = from_main(load, ranks)  # rank 0 reads the cache: every rank takes the same branch
    if cached is not None:
        return cached
    method = params.pop("method")
    # finished batches are kept until the merged result is saved: a killed run (or rank) resumes from them
    store = BatchStore(os.path.join(cache_dir, f"stability-{mi.name}-{key}.batches")) if cache_dir else None
    if select["kind"] == "cells":
        from genbound.stability.selection import run_budget
        device, bar = params.pop("device"), params.pop("progress_bar")
        engine = make_engine(method, **params)
        res = run_budget(engine, mi.model, mi.train, kappas, cells=order["cells"], budget=cfg.stability_budget,
                         seed=cfg.stability_seed, close_at=order["close_at"], batch_size=cfg.batch_size,
                         device=device, progress_bar=bar, ranks=ranks)
        res.evidence["selection"].update(order["record"])
    elif select["kind"] == "uniform":
        from genbound.stability.selection import uniform_subsample
        idx = uniform_subsample(n, cfg.stability_sample, cfg.stability_seed)
        res = stability_flags(mi.model, mi.train, kappas, method=method, indices=idx, store=store, ranks=ranks,
                              workers=cfg.workers, **params)
        res.evidence["selection"] = {"kind": "uniform", "sample": cfg.stability_sample, "s": int(idx.size), "n": n,
                                     "seed": cfg.stability_seed, "delta_s": cfg.delta_s,
                                     "rule": "s of n drawn uniformly without replacement from the seed before any flag"}
    else:
        res = stability_flags(mi.model, mi.train, kappas, method=method, store=store, ranks=ranks,
                              workers=cfg.workers, **params)
    if res.index is not None and res.index.size != n:
        stable = np.zeros((n, kappas.size), dtype=bool)
        pred = np.full(n, -1, dtype=np.int64)
        checked = np.zeros(n, dtype=bool)
        stable[res.index], pred[res.index], checked[res.index] = res.stable, res.pred, True
    else:
        stable, pred, checked = res.stable, res.pred, np.ones(n, dtype=bool)
    evidence = _jsonable(res.evidence)
    if path:  # rank 0 writes; a refused write ends every rank
        collective(lambda: _save_npz_atomic(path, stable=stable, pred=pred, checked=checked,
                                            evidence=np.str_(json.dumps(evidence))) if ranks.main else None, ranks)
        if ranks.main and store is not None:
            store.clear()
    return {"stable": stable, "pred": pred, "checked": checked, "selection": selection, "evidence": evidence}
