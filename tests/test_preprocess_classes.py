"""Preprocessing (resize, centre crop) and class lists for image folders, through the Python API
and through ``genbound evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genbound import cli
from genbound.data import load_dataset
from genbound.data.classes import CIFAR10, class_list
from genbound.data.imagefolder import ImageFolderSource
from genbound.data.preprocess import Preprocess
from genbound.errors import UserInputError


def _image(path: Path, w: int, h: int, seed: int = 0) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


@pytest.mark.parametrize("w, h, resize, expected", [
    (512, 384, 256, (256, 341)),   # landscape: short side (height) 256, long side int(256 * 512 / 384)
    (300, 500, 256, (426, 256)),   # portrait
    (100, 100, 32, (32, 32)),
    (640, 480, (100, 50), (100, 50)),  # an exact [height, width]
])
def test_resize_follows_torchvision(w, h, resize, expected):
    pre = Preprocess(resize=resize)
    assert pre.output_size(w, h) == expected
    img = pre(Image.new("RGB", (w, h)))
    assert (img.size[1], img.size[0]) == expected


def test_centre_crop_is_the_centre(tmp_path):
    arr = _image(tmp_path / "a" / "x.png", 11, 9)
    src = ImageFolderSource(tmp_path, preprocess=Preprocess(crop=(5, 7)))
    x, _ = src.get(np.array([0]))
    top, left = int(round((9 - 5) / 2)), int(round((11 - 7) / 2))
    assert torch.equal(x[0], torch.from_numpy(arr[top:top + 5, left:left + 7].transpose(2, 0, 1)).float() / 255)
    assert src.provenance["preprocess"]["crop"] == [5, 7] and src.provenance["preprocess"]["crop_rule"] == "centre"


def test_resize_then_crop_gives_the_crop_size(tmp_path):
    _image(tmp_path / "a" / "x.png", 40, 30)
    _image(tmp_path / "b" / "y.png", 30, 50)  # different sizes and aspect ratios: one shape after preprocessing
    src = ImageFolderSource(tmp_path, preprocess=Preprocess.preset("imagenet", resize=24, crop=20))
    x, _ = src.get(np.arange(2))
    assert x.shape == (2, 3, 20, 20) and src.preprocess.interpolation == "bilinear"


def test_crop_larger_than_the_image_is_an_error(tmp_path):
    _image(tmp_path / "a" / "x.png", 10, 10)
    src = ImageFolderSource(tmp_path, preprocess=Preprocess(crop=12))
    with pytest.raises(UserInputError, match="crop 12x12 is larger"):
        src.get(np.array([0]))


def test_class_list_maps_folders_to_the_models_indices(tmp_path):
    present = [c for c in CIFAR10 if c not in ("bird", "frog")]  # 8 of the 10 classes
    for i, c in enumerate(present):
        _image(tmp_path / c / "0.png", 4, 4, seed=i)
    by_folder = ImageFolderSource(tmp_path)
    assert by_folder.num_classes == 8  # sorted folders: positions, not CIFAR-10's indices
    src = load_dataset(str(tmp_path), classes="cifar10")
    assert src.num_classes == 10
    assert [CIFAR10[label] for label in src.labels] == sorted(present)
    names, where = class_list("imagenet")
    assert len(names) == 1000 and names[0] == "n01440764" and "synsets" in where


def test_folder_outside_the_class_list_is_an_error(tmp_path):
    _image(tmp_path / "cat" / "0.png", 4, 4)
    _image(tmp_path / "kitten" / "0.png", 4, 4)
    with pytest.raises(UserInputError, match=r"folder\(s\) \['kitten'\] are not among the 10 classes"):
        load_dataset(str(tmp_path), classes="cifar10")


def test_labels_file(tmp_path):
    (tmp_path / "labels.txt").write_text("# my classes\nzebra\napple\n")
    _image(tmp_path / "data" / "apple" / "0.png", 4, 4)
    src = load_dataset(str(tmp_path / "data"), classes=str(tmp_path / "labels.txt"))
    assert src.labels.tolist() == [1] and src.num_classes == 2


def _cifar8_project(folder: Path, data_options: str, *, width: int, height: int) -> Path:
    """A config folder: 8 of CIFAR-10's class folders (2 images each), a 10-class linear model's
    factory module and ``run.toml`` with ``data_options`` in [data]; returns the config's path."""
    for i, c in enumerate(CIFAR10[:8]):
        for j in range(2):
            _image(folder / "cifar8" / c / f"{j}.png", width, height, seed=10 * i + j)
    (folder / "cifarmodels.py").write_text(
        "from torch import nn\n"
        "def linear(**kw):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))\n")
    (folder / "run.toml").write_text(
        f'[data]\ntrain = "cifar8"\nheldout_fraction = 0.5\n{data_options}'
        '[[models]]\nname = "lin"\nfactory = "cifarmodels:linear"\ninput_normalization = "none"\n'
        '[bounds]\nkappas = [0.01]\nK = [2]\n[stability]\nmethod = "noise"\ndraws = 1\n')
    return folder / "run.toml"


@pytest.fixture()
def config_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "cifarmodels", raising=False)
    return tmp_path


def test_evaluate_resolves_a_bare_folder_and_a_factory_beside_the_config(config_folder, capsys):
    cfg_dir = config_folder / "project"
    _cifar8_project(cfg_dir, 'classes = "cifar10"\npreprocess = { resize = 8, crop = 8 }\n', width=10, height=12)
    assert cli.main(["evaluate", str(cfg_dir / "run.toml"), "--out", str(config_folder / "out"), "--no-progress"]) == 0
    doc = json.loads((config_folder / "out" / "result.json").read_text())
    model = doc["run"]["models"][0]
    assert model["factory_file"] == str(cfg_dir / "cifarmodels.py")
    data = doc["run"]["data"]["train"]
    assert data["num_classes"] == 10
    pre = data["provenance"]["parent_provenance"]["preprocess"]
    assert pre["resize"] == 8 and pre["resize_rule"] == "short side" and pre["crop"] == 8


def test_evaluate_without_the_class_list_refuses_a_partial_folder(config_folder, capsys):
    cfg_dir = config_folder / "project"
    _cifar8_project(cfg_dir, "", width=8, height=8)
    rc = cli.main(["evaluate", str(cfg_dir / "run.toml"), "--out", str(config_folder / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "has 10 outputs but the data have 8 classes" in err and "[data] classes" in err
    assert not (config_folder / "out").exists()
