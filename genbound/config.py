"""The one configuration object of a run, validated once at the edge.

``Config`` holds what the pipeline needs (kappa and K grids, partition, stability engine, delta,
seeds, device). :func:`load_config_file` reads a user's TOML file (schema in
``docs/config.md``) into a :class:`RunConfig` (data + models + ``Config``); :func:`to_toml`
writes the resolved configuration that every run saves beside its results.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from genbound.errors import UserInputError
from genbound.kappas import check_kappas
from genbound.names import INTERMEDIATE_BOUNDS, NORMS, PARTITION_KINDS, STABILITY_METHODS

DEFAULT_KAPPAS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


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
    intermediate bounds of ``crown`` / ``exact``.
    """

    kappas: tuple[float, ...] = DEFAULT_KAPPAS
    K: tuple[int, ...] = (100,)
    delta: float = 0.05
    partition: str = "uniform"
    label_pure: bool = False
    partition_seed: int = 0
    projection_dim: int = 32
    stability: str = "pgd"
    norm: str = "linf"
    pgd_steps: int = 10
    pgd_restarts: int = 1
    pgd_prescreen: bool | str = "auto"
    noise_draws: int = 32
    sound_intermediate: str = "crown"
    stability_seed: int = 0
    batch_size: int = 256
    device: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        try:
            kappas = tuple(float(k) for k in self.kappas)
            Ks = tuple(int(k) for k in ((self.K,) if isinstance(self.K, (int, float)) else self.K))
        except (TypeError, ValueError):
            raise UserInputError("kappas must be a list of numbers and K a list of integers") from None
        if not kappas or any(not math.isfinite(k) or k <= 0 for k in kappas):
            raise UserInputError(f"kappas must be a non-empty list of radii > 0 in [0,1] pixel units, got {list(kappas)}")
        if not Ks or any(k < 1 for k in Ks):
            raise UserInputError(f"K must be a non-empty list of integers >= 1 (number of regions), got {list(Ks)}")
        if not (0 < float(self.delta) < 1):
            raise UserInputError(f"delta must be in (0, 1), got {self.delta}")
        for name, value, allowed in (("partition", self.partition, PARTITION_KINDS),
                                     ("stability", self.stability, STABILITY_METHODS), ("norm", self.norm, NORMS),
                                     ("sound_intermediate (stability.intermediate)", self.sound_intermediate,
                                      INTERMEDIATE_BOUNDS)):
            if value not in allowed:
                raise UserInputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.norm != "linf" and (self.stability == "exact" or self.partition == "grid"):
            raise UserInputError(f"norm must be 'linf' with {'stability exact' if self.stability == 'exact' else 'partition grid'} "
                                 f"(l_inf balls and l_inf grid cells); got {self.norm!r}")
        for name in ("pgd_steps", "pgd_restarts", "noise_draws", "batch_size", "projection_dim"):
            if int(getattr(self, name)) < (0 if name == "pgd_steps" else 1):
                raise UserInputError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not (isinstance(self.pgd_prescreen, bool) or self.pgd_prescreen == "auto"):
            raise UserInputError("pgd_prescreen (stability.prescreen) must be true, false or \"auto\", "
                                 f"got {self.pgd_prescreen!r}")
        set_("kappas", tuple(float(k) for k in check_kappas(kappas, norm=self.norm, positive=True, sort=True)))
        set_("K", tuple(dict.fromkeys(Ks)))
        set_("delta", float(self.delta))

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
    input_normalization: str = "data"  # "data": apply the data's mean/std; "none": model takes [0,1] pixels


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


_CONFIG_KEYS = {f.name for f in fields(Config)}


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
    unknown = set(doc) - {"data", "models", "bounds", "stability", "run"}
    if unknown:
        raise UserInputError(f"{path}: unknown section(s) {sorted(unknown)}; expected data, models, bounds, stability, run")
    base = os.path.dirname(os.path.abspath(path))
    data = _table(doc, "data")
    if "train" not in data:
        raise UserInputError(f"{path}: [data] needs 'train' (a dataset name, an ImageFolder directory or a .npz file)")

    def rel(p: str | None) -> str | None:
        if p is None or os.path.isabs(p) or not (os.sep in p or p.endswith((".npz", ".pt", ".pth", ".safetensors"))):
            return p
        return os.path.join(base, p)

    models_doc = doc.get("models")
    if not isinstance(models_doc, list) or not models_doc:
        raise UserInputError(f"{path}: give at least one [[models]] entry with name and factory")
    models = []
    for i, m in enumerate(models_doc):
        if not isinstance(m, dict) or "factory" not in m:
            raise UserInputError(f"{path}: [[models]] entry {i + 1} needs a 'factory'")
        extra = set(m) - {"name", "factory", "weights", "kwargs", "input_normalization"}
        if extra:
            raise UserInputError(f"{path}: [[models]] entry {i + 1}: unknown key(s) {sorted(extra)}")
        norm = m.get("input_normalization", "data")
        if norm not in ("data", "none"):
            raise UserInputError(f"{path}: input_normalization must be 'data' or 'none', got {norm!r}")
        models.append(ModelSpec(name=str(m.get("name", f"model{i + 1}")), factory=str(m["factory"]),
                                weights=rel(m.get("weights")), kwargs=dict(m.get("kwargs", {})), input_normalization=norm))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise UserInputError(f"{path}: model names must be unique, got {names}")
    cfg: dict[str, Any] = {}
    for section in ("bounds", "stability", "run"):
        for k, v in _table(doc, section).items():
            key = {"method": "stability", "seed": "stability_seed", "steps": "pgd_steps", "restarts": "pgd_restarts", "prescreen": "pgd_prescreen",
                   "draws": "noise_draws", "intermediate": "sound_intermediate"}.get(k, k) if section == "stability" else k
            if key == "out" and section == "run":
                continue
            if key not in _CONFIG_KEYS:
                raise UserInputError(f"{path}: unknown key {k!r} in [{section}]")
            cfg[key] = v
    return RunConfig(
        train=rel(str(data["train"])), heldout=rel(data.get("heldout")), heldout_fraction=float(data.get("heldout_fraction", 0.2)),
        split_seed=int(data.get("split_seed", 0)), models=tuple(models), config=Config(**cfg),
        out=_table(doc, "run").get("out"),
    )


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(sections: dict[str, Any]) -> str:
    """Write ``{section: {key: value}}`` (and ``{name: [table, ...]}`` arrays of tables) as TOML; None is skipped."""
    out: list[str] = []
    for name, body in sections.items():
        tables = body if isinstance(body, list) else [body]
        for t in tables:
            out.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in t.items() if v is not None)
            out.append("")
    return "\n".join(out)
