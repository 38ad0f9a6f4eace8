"""Preprocessing taken from a timm model's own ``pretrained_cfg`` (input size, crop_pct,
interpolation, mean/std) when the config declares none: the same pixels as timm's own evaluation
transform, recorded, and through ``genbound evaluate`` the same per-sample losses as timm's pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genbound import cli
from genbound.data.classes import CIFAR10
from genbound.data.imagefolder import ImageFolderSource
from genbound.errors import UserInputError
from genbound.models import load_model, save_weights
from genbound.models.pretrained_cfg import pretrained_cfg, preprocess_from_cfg


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm", reason="test extra: pip install -c constraints.txt -e '.[test]'")


def _folder(root: Path, sizes: list[tuple[int, int]]) -> Path:
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        d = root / CIFAR10[i % 4]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("name", ["resnet18", "vit_base_patch16_224", "efficientnet_b0"])
def test_same_pixels_as_timms_own_eval_transform(name, timm, tmp_path):
    net = timm.create_model(name, pretrained=False, num_classes=4) if name == "resnet18" else None
    cfg = dict(net.pretrained_cfg) if net is not None else timm.models.get_pretrained_cfg(name).to_dict()
    pre = preprocess_from_cfg(cfg, what=name)
    rec = pre.record()
    assert rec["origin"]["from"] == "pretrained_cfg" and rec["origin"]["crop_pct"] == cfg["crop_pct"]
    src = ImageFolderSource(_folder(tmp_path, [(300, 257), (257, 300), (500, 375)]), preprocess=pre)
    data_cfg = timm.data.resolve_data_config({}, pretrained_cfg=cfg)
    ref = timm.data.create_transform(**data_cfg)  # timm's evaluation transform, normalization included
    mean = torch.tensor(cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(cfg["std"]).view(3, 1, 1)
    x, _ = src.get(np.arange(len(src)))
    for i, f in enumerate(src.files):
        want = ref(Image.open(f).convert("RGB"))
        assert x[i].shape == want.shape == (3, 224, 224)
        torch.testing.assert_close((x[i] - mean) / std, want, rtol=0, atol=1e-5)


def test_cfg_fields_and_refusals():
    pre = preprocess_from_cfg({"input_size": (3, 240, 240), "crop_pct": 0.9, "interpolation": "bilinear"})
    assert (pre.resize, pre.crop, pre.interpolation) == (266, 240, "bilinear")  # floor(240 / 0.9)
    squash = preprocess_from_cfg({"input_size": (3, 224, 224), "crop_pct": 1.0, "crop_mode": "squash"})
    assert squash.resize == (224, 224) and squash.crop == 224
    defaults = preprocess_from_cfg({})
    assert (defaults.resize, defaults.crop, defaults.interpolation) == (256, 224, "bicubic")
    assert defaults.origin["defaults_used"] == ["crop_mode", "crop_pct", "input_size", "interpolation"]
    with pytest.raises(UserInputError, match="crop_mode 'border'"):
        preprocess_from_cfg({"crop_mode": "border"})
    with pytest.raises(UserInputError, match="crop_pct"):
        preprocess_from_cfg({"crop_pct": 1.5})


def test_evaluate_takes_timms_preprocessing_and_matches_timms_pipeline(timm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "images", [(260 + 7 * i, 230 + 11 * i) for i in range(8)])
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    save_weights(ref, tmp_path / "r18.safetensors")
    (tmp_path / "run.toml").write_text(
        '[data]\ntrain = "images"\nheldout_fraction = 0.5\nclasses = "cifar10"\n'
        '[[models]]\nname = "r18"\nfactory = "timm:resnet18"\nweights = "r18.safetensors"\n'
        'kwargs = { num_classes = 10 }\n'
        '[bounds]\nkappas = [0.001]\nK = [2]\n[stability]\nmethod = "noise"\ndraws = 1\n')
    assert cli.main(["evaluate", "run.toml", "--out", "out", "--no-progress"]) == 0
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    pre = doc["run"]["data"]["train"]["provenance"]["parent_provenance"]["preprocess"]
    assert (pre["resize"], pre["crop"], pre["interpolation"]) == (235, 224, "bicubic")  # floor(224 / 0.95)
    assert pre["origin"]["from"] == "pretrained_cfg" and pre["origin"]["model"] == "timm:resnet18"
    model = doc["run"]["models"][0]
    assert model["normalization_from"] == "pretrained_cfg"
    assert model["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    # each training sample's loss is the one timm's own pipeline gives on that file
    z = np.load(tmp_path / "out" / "samples.npz")
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=ref))
    x = torch.stack([transform(Image.open(tmp_path / "images" / p).convert("RGB")) for p in z["train_path"]])
    labels = [CIFAR10.index(p.split("/")[0]) for p in z["train_path"]]
    with torch.no_grad():
        loss = (ref(x).argmax(1) != torch.tensor(labels)).numpy().astype(np.uint8)
    assert np.array_equal(loss, z["train_loss"])


def test_timm_models_with_different_preprocessing_need_a_declared_one(timm, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "images", [(240, 240)] * 4)
    (tmp_path / "run.toml").write_text(
        '[data]\ntrain = "images"\nclasses = "cifar10"\n'
        '[[models]]\nname = "a"\nfactory = "timm:resnet18"\nkwargs = { num_classes = 10 }\n'
        '[[models]]\nname = "b"\nfactory = "timm:efficientnet_b0"\nkwargs = { num_classes = 10 }\n')
    assert cli.main(["evaluate", "run.toml", "--out", "out", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "declare different preprocessing" in err and "[data] preprocess" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_wrapped_model_still_shows_its_cfg(timm):
    m = load_model("timm:resnet18", device="cpu", normalization="model", num_classes=3)
    assert isinstance(m, torch.nn.Sequential) and pretrained_cfg(m)["crop_pct"] == 0.95
