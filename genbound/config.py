"""The one configuration object of a run, validated once at the edge.

``Config`` holds what the pipeline needs (kappa and K grids, partition, stability engine, delta,
seeds, device). :func:`load_config_file` reads a user's TOML file (schema in
``docs/config.md``) into a :class:`RunConfig` (data + models + ``Config``); :func:`to_toml`
writes the resolved configuration that every run saves beside its results.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np

from genbound.errors import UserInputError
from genbound.kappas import check_kappas
from genbound.names import (AUTOATTACK_ATTACKS, INTERMEDIATE_BOUNDS, KMEANS_BACKENDS, KMEANS_FITS, NORMS,
                            PARTITION_KINDS, SOUND_METHODS, STABILITY_METHODS)

DEFAULT_KAPPAS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


_DEVICE = re.compile(r"(cpu|cuda|mps|xpu)(:\d+)?")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,99}")


def check_model_name(name: object) -> str:
    """A model name becomes part of file names in the run folder: letters, digits and ``_ . + = -``,
    not starting with a dot, at most 100 characters (so it can never point outside the folder)."""
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise UserInputError(f"model name {name!r} is not allowed: use letters, digits and _ . + = - (not starting "
                             "with '.', at most 100 characters); names become file names in the run folder")
    return name


def as_real(value: Any, name: str) -> float:
    """``value`` as a float; a bool, a string or anything else that is not a real number is an error."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise UserInputError(f"{name} must be a number, got {value!r}")
    return float(value)


def as_int(value: Any, name: str, *, minimum: int | None = None) -> int:
    """``value`` as an int: integers, and floats with no fractional part (TOML has ``10.0``); never
    a silently truncated ``4.7``, a bool or a string."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or (
            not isinstance(value, Integral) and not (math.isfinite(value) and float(value).is_integer())):
        raise UserInputError(f"{name} must be an integer, got {value!r}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise UserInputError(f"{name} must be an integer >= {minimum}, got {out}")
    return out


@dataclass(frozen=True)
class Config:
    """What to compute. kappas are radii in pre-normalization [0, 1] pixel units.

    ``K`` is the grid of partition sizes in **regions** (centroids); a label-pure partition has
    regions x classes cells. Each K is a separate partition: results per K each hold at ``delta``;
    the best over the K grid is reported at ``delta / len(K)`` (spec §5). ``partition="grid"``
    instead builds one kappa-fine label-pure l_inf grid per kappa (``K`` and ``label_pure`` do not
    apply), each partition's results at ``delta / len(kappas)``.

    ``stability``: an engine of :data:`genbound.names.STABILITY_METHODS`; the sound ones (``ibp``,
    ``crown``, ``exact``) prove their flags; ``sound_intermediate`` (``crown`` or ``ibp``) sets the
    intermediate bounds of ``crown`` / ``exact``. ``autoattack`` runs AutoAttack's APGD attacks
    (``autoattack_attacks``, each ``autoattack_iters`` iterations, ``autoattack_restarts`` runs,
    ``autoattack_targets`` target classes for ``apgd-t``; the defaults are AutoAttack's standard
    settings); ``pgd+autoattack`` runs PGD (``pgd_*``) and AutoAttack and calls a sample unstable
    if either flips it.

    ``partition="kmeans"`` fits K clusters (k-means++ seeding, ``kmeans_iterations`` Lloyd steps,
    seed ``partition_seed``) on a split of the held-out data (``kmeans_fit="heldout-split"``,
    a fraction ``kmeans_fit_fraction``, left out of the held-out statistics) or on the training set
    (``"train"``: every partition result becomes a diagnostic), in pixel space or on the output of
    the model's layer ``kmeans_features`` (then one partition per model, and a diagnostic too).

    Stability on part of the training set (spec §8; ``docs/config.md``): ``stability_sample``
    (``[stability] sample``, empirical methods) is a count N or a fraction in (0, 1] of a seeded
    uniform subsample (seed ``stability_seed``); ``stability_budget`` (``[stability] budget``,
    sound methods) caps the verifier calls, spent cell by cell; ``delta_s`` is the confidence of
    the subsampled diagnostics' limits. ``None`` (default): every training sample is checked.
    """

    kappas: tuple[float, ...] = DEFAULT_KAPPAS
    K: tuple[int, ...] = (100,)
    delta: float = 0.05
    partition: str = "uniform"
    label_pure: bool = False
    partition_seed: int = 0
    projection_dim: int = 32
    kmeans_fit: str = "heldout-split"
    kmeans_fit_fraction: float = 0.5
    kmeans_features: str | None = None
    kmeans_iterations: int = 20
    kmeans_seeding_sample: int = 10_000
    kmeans_backend: str = "torch"
    stability: str = "pgd"
    norm: str = "linf"
    pgd_steps: int = 10
    pgd_restarts: int = 1
    pgd_prescreen: bool | str = "auto"
    noise_draws: int = 32
    sound_intermediate: str = "crown"
    autoattack_attacks: tuple[str, ...] = ("apgd-ce", "apgd-t")
    autoattack_iters: int = 100
    autoattack_restarts: int = 1
    autoattack_targets: int = 9
    stability_seed: int = 0
    stability_sample: int | float | None = None
    stability_budget: int | None = None
    delta_s: float = 0.05
    batch_size: int = 256
    device: str | None = None
    progress: bool = True
    workers: int | str = "auto"

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        kappas = self.kappas
        if isinstance(kappas, (str, bytes)) or not isinstance(kappas, Sequence | np.ndarray):
            kappas = [kappas]
        kappas = tuple(as_real(k, "kappas") for k in kappas)
        if not kappas or any(not math.isfinite(k) or k <= 0 for k in kappas):
            raise UserInputError(f"kappas must be a non-empty list of radii > 0 in [0,1] pixel units, got {list(kappas)}")
        Ks = self.K if isinstance(self.K, Sequence | np.ndarray) and not isinstance(self.K, (str, bytes)) else [self.K]
        Ks = tuple(as_int(k, "K", minimum=1) for k in Ks)
        if not Ks:
            raise UserInputError("K must be a non-empty list of integers >= 1 (number of regions), got []")
        delta = as_real(self.delta, "delta")
        if not (0 < delta < 1):
            raise UserInputError(f"delta must be in (0, 1), got {self.delta}")
        for name, allowed in (("partition", PARTITION_KINDS), ("stability", STABILITY_METHODS), ("norm", NORMS),
                              ("sound_intermediate (stability.intermediate)", INTERMEDIATE_BOUNDS)):
            value = getattr(self, name.partition(" ")[0])
            if not isinstance(value, str) or value not in allowed:
                raise UserInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.norm != "linf" and (self.stability == "exact" or self.partition == "grid"):
            raise UserInputError(f"norm must be 'linf' with {'stability exact' if self.stability == 'exact' else 'partition grid'} "
                                 f"(l_inf balls and l_inf grid cells); got {self.norm!r}")
        for name, minimum in (("pgd_steps", 0), ("pgd_restarts", 1), ("noise_draws", 1), ("batch_size", 1),
                              ("projection_dim", 1), ("partition_seed", 0), ("stability_seed", 0),
                              ("autoattack_iters", 1), ("autoattack_restarts", 1), ("autoattack_targets", 1)):
            set_(name, as_int(getattr(self, name), name, minimum=minimum))
        attacks = self.autoattack_attacks
        if (isinstance(attacks, (str, bytes)) or not isinstance(attacks, Sequence | np.ndarray) or not len(attacks)
                or any(not isinstance(a, str) or a not in AUTOATTACK_ATTACKS for a in attacks)
                or len(set(attacks)) != len(attacks)):
            raise UserInputError(f"autoattack_attacks must be a non-empty list of distinct names from "
                                 f"{', '.join(AUTOATTACK_ATTACKS)}; got {attacks!r}")
        set_("autoattack_attacks", tuple(attacks))
        for name in ("label_pure", "progress"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise UserInputError(f"{name} must be true or false, got {getattr(self, name)!r}")
            set_(name, bool(getattr(self, name)))
        self._check_kmeans()
        if not (isinstance(self.pgd_prescreen, bool) or self.pgd_prescreen == "auto"):
            raise UserInputError("pgd_prescreen (stability.prescreen) must be true, false or \"auto\", "
                                 f"got {self.pgd_prescreen!r}")
        if not (isinstance(self.workers, str) and self.workers == "auto"):
            try:
                set_("workers", as_int(self.workers, "workers", minimum=0))
            except UserInputError:
                raise UserInputError("workers (processes decoding the data) must be an integer >= 0 or \"auto\", "
                                     f"got {self.workers!r}") from None
        if self.device is not None and not (isinstance(self.device, str) and _DEVICE.fullmatch(self.device)):
            raise UserInputError(f"unknown device {self.device!r}; use 'cpu', 'cuda' or 'cuda:N'")
        self._check_partial_stability()
        set_("kappas", tuple(float(k) for k in check_kappas(kappas, norm=self.norm, positive=True, sort=True)))
        set_("K", tuple(dict.fromkeys(Ks)))
        set_("delta", delta)

    def _check_kmeans(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        for name, allowed in (("kmeans_fit", KMEANS_FITS), ("kmeans_backend", KMEANS_BACKENDS)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                raise UserInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        frac = as_real(self.kmeans_fit_fraction, "kmeans_fit_fraction")
        if not 0 < frac < 1:
            raise UserInputError(f"kmeans_fit_fraction must be strictly between 0 and 1, got {frac}")
        set_("kmeans_fit_fraction", frac)
        set_("kmeans_iterations", as_int(self.kmeans_iterations, "kmeans_iterations", minimum=0))
        set_("kmeans_seeding_sample", as_int(self.kmeans_seeding_sample, "kmeans_seeding_sample", minimum=1))
        if self.kmeans_features is not None and (not isinstance(self.kmeans_features, str) or not self.kmeans_features):
            raise UserInputError(f"kmeans_features must name a layer of the model (e.g. \"layer4\"), got "
                                 f"{self.kmeans_features!r}; leave it out for pixel space")
        if self.partition != "kmeans":
            defaults = {f.name: f.default for f in fields(Config) if f.name.startswith("kmeans_")}
            changed = [k for k, v in defaults.items() if getattr(self, k) != v]
            if changed:
                raise UserInputError(f"{', '.join(changed)}: only for partition = \"kmeans\" (partition is "
                                     f"{self.partition!r}); remove it or set partition = \"kmeans\"")
        if self.partition == "kmeans" and self.kmeans_backend == "faiss":
            import importlib.util
            if importlib.util.find_spec("faiss") is None:
                raise UserInputError("kmeans_backend = \"faiss\" needs the faiss package: pip install faiss-cpu "
                                     "(or use the default kmeans_backend = \"torch\")")

    def _check_partial_stability(self) -> None:
        """``stability_sample`` / ``stability_budget`` / ``delta_s`` (spec §8): two selections, never mixed."""
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        sample, budget = self.stability_sample, self.stability_budget
        if sample is not None:
            if isinstance(sample, (bool, np.bool_)) or not isinstance(sample, Real):
                raise UserInputError(f"stability sample (stability.sample) must be a count N >= 1 or a fraction in "
                                     f"(0, 1], got {sample!r}")
            if isinstance(sample, Integral):
                sample = as_int(sample, "stability sample (stability.sample)", minimum=1)
            else:
                sample = float(sample)
                if not (math.isfinite(sample) and 0.0 < sample <= 1.0):
                    raise UserInputError(f"stability sample (stability.sample) must be a count N >= 1 (an integer) or "
                                         f"a fraction in (0, 1], got {sample!r}")
            if self.stability in SOUND_METHODS:
                raise UserInputError(f"stability sample (stability.sample) is for empirical methods; the sound method "
                                     f"{self.stability!r} spends a verifier budget cell by cell: use budget = N")
            set_("stability_sample", sample)
        if budget is not None:
            budget = as_int(budget, "stability budget (stability.budget)", minimum=1)
            if self.stability not in SOUND_METHODS:
                raise UserInputError(f"stability budget (stability.budget) is for sound methods ({', '.join(SOUND_METHODS)}); "
                                     f"the empirical method {self.stability!r} takes a uniform subsample: use sample = N")
            set_("stability_budget", budget)
        d = as_real(self.delta_s, "delta_s (stability.delta_s)")
        if not 0.0 < d < 1.0:
            raise UserInputError(f"delta_s (stability.delta_s) must be in (0, 1), got {self.delta_s!r}")
        set_("delta_s", d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kappas"], d["K"] = list(self.kappas), list(self.K)
        return d


@dataclass(frozen=True)
class ModelSpec:
    """A model named by a factory (``"package.module:function"``, a reference architecture, or
    ``torchvision:NAME`` / ``timm:NAME``), keyword arguments and a weights file."""

    name: str
    factory: str
    weights: str | None = None
    kwargs: dict = field(default_factory=dict)
    #: "data": the data's mean/std in front of the model; "none": the model takes [0, 1] pixels;
    #: a preset name (:data:`NORMALIZATION_PRESETS`); "model": the model's own (timm's pretrained_cfg);
    #: or {"mean": [...], "std": [...]}; None (not declared): "model" for timm:NAME, else "data"
    input_normalization: str | dict | None = None


@dataclass(frozen=True)
class RunConfig:
    """A whole ``genbound evaluate`` run: data, models, what to compute, where to write."""

    train: str
    heldout: str | None
    heldout_fraction: float
    split_seed: int
    models: tuple[ModelSpec, ...]
    config: Config
    out: str | None = None
    #: decode-time steps for image folders (a :class:`genbound.data.preprocess.Preprocess`), or None
    preprocess: Any = None
    #: the model's class list for image folders ("imagenet", "cifar10", a labels file, a list), or None
    classes: Any = None
    #: the config file's folder: relative paths resolve there
    base: str = "."
    #: the folder factory modules import from as if it were on ``PYTHONPATH`` (``[run] factory_path``;
    #: default: the config file's folder)
    factory_path: str = "."


_CONFIG_KEYS = {f.name for f in fields(Config)}
_DATA_KEYS = {"train", "heldout", "heldout_fraction", "split_seed", "preprocess", "classes"}
NORMALIZATION_CHOICES = ("data", "none", "model", "imagenet", "inception")


def _table(doc: dict, key: str) -> dict:
    t = doc.get(key, {})
    if not isinstance(t, dict):
        raise UserInputError(f"[{key}] must be a table")
    return t


def load_config_file(path: str | os.PathLike) -> RunConfig:
    """Read a TOML run description (see ``docs/config.md``); every mistake is a one-line error."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserInputError(f"config file not found: {path}")
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"{path} is not valid TOML: {exc}") from None
    try:
        return _run_config(doc, path)
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None


def _run_config(doc: dict[str, Any], path: str) -> RunConfig:
    unknown = set(doc) - {"data", "models", "bounds", "stability", "run"}
    if unknown:
        raise UserInputError(f"unknown section(s) {sorted(unknown)}; expected data, models, bounds, stability, run")
    base = os.path.dirname(os.path.abspath(path))
    data = _table(doc, "data")
    unknown = set(data) - _DATA_KEYS
    if unknown:
        raise UserInputError(f"unknown key(s) {sorted(unknown)} in [data]; expected {', '.join(sorted(_DATA_KEYS))}")
    if "train" not in data:
        raise UserInputError("[data] needs 'train' (a dataset name, an ImageFolder directory or a .npz file)")

    def text(value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise UserInputError(f"{where} must be a non-empty string, got {value!r}")
        return value

    def rel(p: str | None, where: str) -> str | None:  # a file: relative to the config's folder
        return None if p is None else os.path.join(base, text(p, where))

    def data_path(p: str | None, where: str) -> str | None:
        # a file or folder beside the config, else a registered dataset name (checked when loaded)
        if p is None:
            return None
        p = text(p, where)
        return os.path.join(base, p) if os.path.exists(os.path.join(base, p)) else p

    models_doc = doc.get("models")
    if not isinstance(models_doc, list) or not models_doc:
        raise UserInputError("give at least one [[models]] entry with name and factory")
    models = []
    for i, m in enumerate(models_doc):
        where = f"[[models]] entry {i + 1}"
        if not isinstance(m, dict) or "factory" not in m:
            raise UserInputError(f"{where} needs a 'factory'")
        extra = set(m) - {"name", "factory", "weights", "kwargs", "input_normalization"}
        if extra:
            raise UserInputError(f"{where}: unknown key(s) {sorted(extra)}")
        norm = m.get("input_normalization")
        if norm is None:
            pass  # not declared: resolved with the model (timm:NAME declares its own)
        elif isinstance(norm, dict):
            if set(norm) != {"mean", "std"}:
                raise UserInputError(f"{where}: input_normalization as a table needs exactly mean and std, got "
                                     f"{sorted(norm)}")
            for k in ("mean", "std"):
                vals = norm[k] if isinstance(norm[k], list) else [norm[k]]
                norm = {**norm, k: [as_real(v, f"input_normalization {k}") for v in vals]}
        elif norm not in NORMALIZATION_CHOICES:
            raise UserInputError(f"{where}: input_normalization must be one of {', '.join(NORMALIZATION_CHOICES)} or "
                                 f"{{ mean = [...], std = [...] }}, got {norm!r}")
        kwargs = m.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise UserInputError(f"{where}: kwargs must be a table of the factory's keyword arguments, "
                                 f"e.g. kwargs = {{ num_classes = 10 }}; got {kwargs!r}")
        name = m.get("name", f"model{i + 1}")
        try:
            check_model_name(name)
        except UserInputError as exc:
            raise UserInputError(f"{where}: {exc}") from None
        models.append(ModelSpec(name=name, factory=text(m["factory"], f"{where}: factory"),
                                weights=rel(m.get("weights"), f"{where}: weights"), kwargs=dict(kwargs),
                                input_normalization=norm))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise UserInputError(f"model names must be unique, got {names}")
    cfg: dict[str, Any] = {}
    for section in ("bounds", "stability", "run"):
        for k, v in _table(doc, section).items():
            key = {"method": "stability", "seed": "stability_seed", "steps": "pgd_steps", "restarts": "pgd_restarts", "prescreen": "pgd_prescreen",
                   "draws": "noise_draws", "intermediate": "sound_intermediate", "sample": "stability_sample",
                   "budget": "stability_budget"}.get(k, k) if section == "stability" else k
            if key in ("out", "factory_path") and section == "run":
                continue
            if key not in _CONFIG_KEYS:
                raise UserInputError(f"unknown key {k!r} in [{section}]")
            cfg[key] = v
    heldout_fraction = as_real(data.get("heldout_fraction", 0.2), "[data] heldout_fraction")
    if not 0 < heldout_fraction < 1:
        raise UserInputError(f"[data] heldout_fraction must be strictly between 0 and 1, got {heldout_fraction}")
    out = _table(doc, "run").get("out")
    factory_path = _table(doc, "run").get("factory_path")
    if factory_path is not None:
        factory_path = os.path.join(base, text(factory_path, "[run] factory_path"))
        if not os.path.isdir(factory_path):
            raise UserInputError(f"[run] factory_path {factory_path} is not a folder")
    from genbound.data.preprocess import Preprocess
    pre = data.get("preprocess")
    if isinstance(pre, str):
        pre = Preprocess.preset(pre)
    elif isinstance(pre, dict):
        extra = set(pre) - {"preset", "resize", "crop", "interpolation", "mode"}
        if extra:
            raise UserInputError(f"unknown key(s) {sorted(extra)} in [data] preprocess; expected preset, resize, crop, "
                                 "interpolation, mode")
        opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in pre.items() if k != "preset"}
        pre = Preprocess.preset(pre["preset"], **opts) if "preset" in pre else Preprocess(**opts)
    elif pre is not None:
        raise UserInputError(f"[data] preprocess must be a preset name or a table {{ resize = 256, crop = 224, ... }}, "
                             f"got {pre!r}")
    classes = data.get("classes")
    if classes is not None:
        from genbound.data.classes import class_list
        class_list(classes, base=base)  # checked now; the data loader resolves it again
        if isinstance(classes, str) and classes not in ("imagenet", "cifar10"):
            classes = os.path.join(base, classes)
    return RunConfig(
        train=data_path(data["train"], "[data] train"), heldout=data_path(data.get("heldout"), "[data] heldout"),
        heldout_fraction=heldout_fraction, split_seed=as_int(data.get("split_seed", 0), "[data] split_seed", minimum=0),
        models=tuple(models), config=Config(**cfg), out=None if out is None else text(out, "[run] out"),
        preprocess=pre, classes=classes, base=base, factory_path=factory_path or base,
    )


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _toml_string(v: str) -> str:
    """A TOML basic string: backslash, quote and every control character escaped."""
    out = []
    for ch in v:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(k: Any) -> str:
    k = str(k)
    return k if _BARE_KEY.match(k) else _toml_string(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(sections: dict[str, Any]) -> str:
    """Write ``{section: {key: value}}`` (and ``{name: [table, ...]}`` arrays of tables) as TOML; None is skipped."""
    out: list[str] = []
    for name, body in sections.items():
        tables = body if isinstance(body, list) else [body]
        for t in tables:
            out.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            out.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in t.items() if v is not None)
            out.append("")
    return "\n".join(out)
