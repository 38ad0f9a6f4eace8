"""Published experimental protocols as ``genbound evaluate`` configs (``genbound reproduce``).

A protocol is a list of :class:`Choice` s, each one config value with its status:

- ``published``: the authors' own choice, read in their paper or public code
  (``/work``-independent references: background-bounds §5.3 for Than et al.);
- ``reconstruction``: genbound's choice where the authors' is not public (Nuhu et al. 2026: only
  the abstract is available), stated as such;
- ``deviation``: where genbound cannot or will not do exactly what the authors did, and why;
- ``genbound``: an addition of genbound's (e.g. stability columns for a protocol without them);
- ``user``: overridden on the command line (a run then no longer follows the protocol there).

:func:`build_config` turns a protocol, the user's data and models into the sections of one
``genbound evaluate`` TOML file per partition seed; the user may rerun or edit those files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from genbound.errors import UserInputError


@dataclass(frozen=True)
class Choice:
    """One config value of a protocol: ``section.key = value``, its status and why."""

    section: str  # "data", "models", "bounds", "stability" ("models": applied to every model entry)
    key: str
    value: Any
    status: str  # published | reconstruction | deviation | genbound | user
    note: str

    def record(self) -> dict[str, Any]:
        return {"setting": f"{self.section}.{self.key}", "value": self.value, "status": self.status, "note": self.note}


@dataclass(frozen=True)
class Protocol:
    """A published experiment: what it is, its models (suggested factories) and its choices."""

    name: str
    title: str
    reference: str
    models: tuple[str, ...]
    models_note: str
    seeds: int
    seeds_note: str
    choices: tuple[Choice, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def value(self, section: str, key: str) -> Any:
        return next((c.value for c in self.choices if (c.section, c.key) == (section, key)), None)

    def override(self, section: str, key: str, value: Any, note: str = "set on the command line") -> "Protocol":
        """The protocol with one value replaced, marked ``user`` (it no longer follows the paper there)."""
        old = [c for c in self.choices if (c.section, c.key) == (section, key)]
        if old and old[0].value == value:
            return self
        kept = tuple(c for c in self.choices if (c.section, c.key) != (section, key))
        was = f" (protocol: {old[0].value!r}, {old[0].status})" if old else ""
        return replace(self, choices=kept + (Choice(section, key, value, "user", note + was),))

    def record(self) -> dict[str, Any]:
        return {"protocol": self.name, "title": self.title, "reference": self.reference,
                "models_suggested": list(self.models), "models_note": self.models_note, "seeds": self.seeds,
                "seeds_note": self.seeds_note, "choices": [c.record() for c in self.choices], "notes": list(self.notes)}


IMAGENET_MEAN_STD = "imagenet"

THAN2024 = Protocol(
    name="than2024",
    title="Than, Phan & Vu, Gentle local robustness implies generalization (arXiv 2412.06381; Machine Learning "
          "114(6):142, 2025): ImageNet recipe of the authors' public code",
    reference="code: github.com/ginlov/robgen-pca (ImageNet) and ginlov/generalization_lipschitz (recipe), read in "
              "full; paper tables not retrievable, so no published number is compared",
    models=("torchvision:resnet18", "torchvision:regnet_y_400mf"),
    models_note="published: torchvision ResNet-18 and RegNet-Y-400MF with IMAGENET1K_V1 weights (give the weights "
                "files; nothing is downloaded)",
    seeds=10,
    seeds_note="published: 10 random partitions per K; genbound reports each partition's row and, for several, the "
               "median per result (valid at 1 - 2 delta for the certified ones, spec §5); the authors report "
               "mean +- variance, which carries no confidence",
    choices=(
        Choice("data", "preprocess", "imagenet", "published",
               "the models' eval transforms: short side 256 (bilinear), centre crop 224"),
        Choice("data", "classes", "imagenet", "published", "ImageNet-1k synset folders in the standard order"),
        Choice("models", "input_normalization", IMAGENET_MEAN_STD, "published",
               "ImageNet mean/std, applied inside the model so kappa is in [0, 1] pixels"),
        Choice("bounds", "partition", "heldout", "published",
               "K centroids sampled uniformly without replacement from the validation (held-out) set, "
               "nearest centroid in Euclidean distance"),
        Choice("bounds", "partition_space", "pixels", "deviation",
               "centroids and distances in [0, 1] pixels, not the authors' normalized tensors (per-channel std "
               "0.229/0.224/0.225: nearly a uniform rescaling, a few assignments may differ); the centroid "
               "images are left out of the held-out statistics (the authors keep them)"),
        Choice("bounds", "K", [100, 1000, 5000, 10000], "published", "the authors' K grid"),
        Choice("bounds", "delta", 0.05, "published", "one of the authors' delta values {0.01, 0.05, 0.1}"),
        Choice("bounds", "loss_units", "0-1", "deviation",
               "the authors' code counts a misclassification as 2 (L1 units) and halves at the end; genbound "
               "uses the 0-1 loss throughout (same numbers after their halving)"),
        Choice("bounds", "kappas", [1 / 255], "genbound",
               "not part of the recipe: stability columns (stability_*, theorem_n) at kappa = 1/255 for "
               "comparison"),
        Choice("stability", "method", "pgd", "genbound", "not part of the recipe: PGD, 10 steps, 1 restart"),
    ),
    notes=("than_rob, than_localrob, than_localsen, than_localavg are the authors' four quantities (Rob, LocalRob, "
           "LocalSen, LocalAvg) with Kawaguchi's uncertainty term (their g; g3 for LocalAvg): estimates that use "
           "the held-out labels, not bounds.",),
)

NUHU2026 = Protocol(
    name="nuhu2026",
    title="Nuhu et al., Upper bounds on the generalization error of deep learning models via local robustness and "
          "stability (arXiv 2606.16883): genbound's reconstruction",
    reference="only the abstract and third-party summaries are public (no full text, tables or code): every "
              "choice below is genbound's reconstruction, and no published number is compared",
    models=("torchvision:resnet18", "torchvision:resnet50", "torchvision:densenet121", "torchvision:vgg16",
            "torchvision:swin_t"),
    models_note="reconstruction: the abstract names ResNets, DenseNet, VGG, Swin and robust models on ImageNet; "
                "the exact variants and weights are not public (robust models: give your own factory and weights)",
    seeds=1,
    seeds_note="reconstruction: one pre-registered partition seed",
    choices=(
        Choice("data", "preprocess", "imagenet", "reconstruction",
               "standard ImageNet evaluation: short side 256 (bilinear), centre crop 224"),
        Choice("data", "classes", "imagenet", "reconstruction", "ImageNet-1k synset folders in the standard order"),
        Choice("models", "input_normalization", IMAGENET_MEAN_STD, "reconstruction",
               "ImageNet mean/std inside the model (kappa in [0, 1] pixels)"),
        Choice("bounds", "partition", "kmeans", "reconstruction",
               "a clustering partition (the abstract: sub-regions by clustering): k-means with k-means++ seeding in "
               "pixel space, fit on a split of the held-out data that is disjoint from the held-out samples used "
               "for evaluation, so the partition does not depend on the training sample and partition results "
               "stay certified (spec §2)"),
        Choice("bounds", "kmeans_fit", "heldout-split", "reconstruction",
               "the clusters are fit on a seeded split of the held-out set, left out of the held-out statistics "
               "(theorem_h, which reads held-out cells, is then a diagnostic)"),
        Choice("bounds", "kmeans_fit_fraction", 0.5, "reconstruction", "half of the held-out set fits the clusters"),
        Choice("bounds", "K", [100, 1000], "reconstruction", "the paper's cluster counts are not public"),
        Choice("bounds", "kappas", [0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255], "reconstruction",
               "the kappa sweep: common ImageNet robustness radii in [0, 1] pixels (l_inf)"),
        Choice("bounds", "delta", 0.05, "reconstruction", "failure probability of every certified result"),
        Choice("stability", "method", "pgd", "reconstruction",
               "kappa-stability of each training sample by PGD (10 steps, 1 restart; l_inf); the paper's own test "
               "is not public (the group's earlier work used random perturbations): empirical, so the "
               "stability-scaled values are diagnostics and theorem_n keeps M_k = 1"),
    ),
    notes=("stability_b, stability_a, stability_c are genbound's readings of the paper's stability-scaled estimate "
           "(background-bounds §7.4, variants B, A, C); theorem_n is its certified form.",),
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (THAN2024, NUHU2026)}

#: choices that document the recipe but are no config key
_DOCUMENTARY = {("bounds", "partition_space"), ("bounds", "loss_units")}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UserInputError(f"unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def build_config(protocol: Protocol, *, data: dict[str, Any], models: list[dict[str, Any]], seed: int,
                 run: dict[str, Any] | None = None, partition_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sections of one ``genbound evaluate`` config: the protocol's choices over the user's
    ``data`` (train, heldout or heldout_fraction) and ``models`` ([[models]] tables), partition
    seed ``seed``. A model table's own ``input_normalization`` wins over the protocol's."""
    sections: dict[str, Any] = {"data": dict(data), "models": [], "bounds": {"partition_seed": seed},
                                "stability": {}, "run": dict(run or {})}
    model_defaults: dict[str, Any] = {}
    for c in protocol.choices:
        if (c.section, c.key) in _DOCUMENTARY:
            continue
        if c.section == "models":
            model_defaults[c.key] = c.value
        elif c.section == "data":
            sections["data"].setdefault(c.key, c.value)
        else:
            sections[c.section][c.key] = c.value
    sections["bounds"].update(partition_options or {})
    sections["models"] = [{**_own_defaults(model_defaults, m), **m} for m in models]
    if models and all(_is_timm(m) for m in models) and _status(protocol, "data", "preprocess") != "user":
        # "the models' own evaluation transform": for timm models that is their pretrained_cfg's
        sections["data"].pop("preprocess", None)
    return {k: v for k, v in sections.items() if v or k == "models"}


def _is_timm(model: dict[str, Any]) -> bool:
    return str(model.get("factory", "")).startswith("timm:")


def _status(protocol: Protocol, section: str, key: str) -> str | None:
    return next((c.status for c in protocol.choices if (c.section, c.key) == (section, key)), None)


def _own_defaults(defaults: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """A timm model declares its own mean/std (pretrained_cfg): the protocol's ImageNet default
    would silently feed it wrongly normalized inputs."""
    return {k: v for k, v in defaults.items() if not (k == "input_normalization" and _is_timm(model))}


def adaptations(protocol: Protocol, models: list[dict[str, Any]]) -> list[str]:
    """What :func:`build_config` changed for these models, in words (recorded with the table)."""
    out = []
    timm = [m.get("name", m.get("factory")) for m in models if _is_timm(m)]
    if timm and not any("input_normalization" in m for m in models if _is_timm(m)):
        out.append(f"timm models ({', '.join(map(str, timm))}) take their own mean/std (pretrained_cfg), not the "
                   "protocol's ImageNet default")
    if models and len(timm) == len(models) and _status(protocol, "data", "preprocess") != "user":
        out.append("every model is a timm model: the preprocessing is their own evaluation transform "
                   "(pretrained_cfg), the protocol's 'the models' eval transforms'")
    return out
