"""Each sample's identifier in ``samples.npz`` (its position in the source the user named and, for
image folders, its file relative to the folder), so that a flag maps back to its image; and
``genbound bounds`` still reads files written before identifiers existed."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from genbound import cli
from genbound.bounds import SampleStats, load_stats_npz, save_stats_npz
from genbound.data import TensorSource
from genbound.data.imagefolder import ImageFolderSource
from genbound.errors import UserInputError
from tests.test_preprocess_classes import _cifar8_project


def test_subsets_and_relabelled_copies_report_the_parents_positions(tmp_path):
    for i, c in enumerate("abc"):
        for j in range(3):
            (tmp_path / c).mkdir(exist_ok=True)
            Image.fromarray(np.full((4, 4, 3), 10 * i + j, np.uint8)).save(tmp_path / c / f"{j}.png")
    src = ImageFolderSource(tmp_path)
    ids = src.identifiers()
    assert ids["index"].tolist() == list(range(9)) and ids["path"][4] == "b/1.png"
    sub = src.subset([7, 2, 4]).with_labels(np.array([0, 1, 2]))
    got = sub.identifiers()
    assert got["index"].tolist() == [7, 2, 4] and got["path"].tolist() == ["c/1.png", "a/2.png", "b/1.png"]
    assert sub.identifiers([2])["path"].tolist() == ["b/1.png"]
    # an in-memory source has positions only
    t = TensorSource(np.zeros((5, 1, 2, 2), np.float32), np.arange(5) % 2)
    assert set(t.subset([3, 1]).identifiers()) == {"index"} and t.subset([3, 1]).identifiers()["index"].tolist() == [3, 1]


def test_evaluate_writes_identifiers_that_map_each_flag_to_its_image(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(__import__("sys").modules, "cifarmodels", raising=False)
    cfg = _cifar8_project(tmp_path / "project", 'classes = "cifar10"\n', width=8, height=8)
    (tmp_path / "project" / "seeded.py").write_text(  # weights fixed by a seed: rebuilt below, same losses
        "import torch\nfrom torch import nn\n"
        "def linear():\n    torch.manual_seed(0)\n    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))\n")
    cfg.write_text(cfg.read_text().replace("cifarmodels:linear", "seeded:linear"))
    monkeypatch.delitem(__import__("sys").modules, "seeded", raising=False)
    out = tmp_path / "out"
    assert cli.main(["evaluate", str(cfg), "--out", str(out), "--no-progress"]) == 0
    z = np.load(out / "samples.npz")
    folder = ImageFolderSource(tmp_path / "project" / "cifar8")
    n, m = len(z["train_cell"]), len(z["heldout_cell"])
    assert n + m == 16 and len(z["train_index"]) == n and len(z["heldout_path"]) == m
    # the identifiers split the folder: every image once, train and held-out disjoint
    assert sorted(np.concatenate([z["train_index"], z["heldout_index"]]).tolist()) == list(range(16))
    for idx, path in zip(np.concatenate([z["train_index"], z["heldout_index"]]),
                         np.concatenate([z["train_path"], z["heldout_path"]])):
        assert folder.files[idx] == str(tmp_path / "project" / "cifar8" / path)
    # a flag maps back to its image: the recorded loss is the model's on that very file
    import torch
    monkeypatch.syspath_prepend(str(tmp_path / "project"))
    from genbound.data.classes import CIFAR10
    from genbound.models import load_model
    net = load_model("seeded:linear", device="cpu")
    src = ImageFolderSource(tmp_path / "project" / "cifar8", classes=CIFAR10)
    position = {p: i for i, p in enumerate(src.identifiers()["path"])}
    x, y = src.get(np.array([position[p] for p in z["train_path"]]))
    with torch.no_grad():
        loss = (net(x).argmax(1) != y).numpy().astype(np.uint8)
    assert np.array_equal(loss, z["train_loss"])

    # genbound bounds reads the new file, and an old one (identifiers stripped) gives the same table
    capsys.readouterr()
    assert cli.main(["bounds", str(out / "samples.npz")]) == 0
    new = capsys.readouterr().out
    old = tmp_path / "old.npz"
    with zipfile.ZipFile(out / "samples.npz") as zin, zipfile.ZipFile(old, "w") as zout:
        for item in zin.infolist():
            if not item.filename.split("/")[-1].startswith(("train_index", "train_path", "heldout_index",
                                                             "heldout_path")):
                zout.writestr(item, zin.read(item.filename))
    assert "train_path.npy" not in zipfile.ZipFile(old).namelist()
    assert cli.main(["bounds", str(old)]) == 0
    assert capsys.readouterr().out == new
    assert load_stats_npz(old)[0].train_path is None


def test_heldout_identifiers_follow_the_heldout_statistics_mask(tmp_path):
    """Held-out centroids are left out of held-out statistics: their identifiers leave with them."""
    import torch
    from genbound.config import Config
    from genbound.pipeline import evaluate
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 3, 3)).astype(np.float32)
    y = (x.reshape(40, -1).mean(1) > 0.5).astype(np.int64)
    src = TensorSource(x, y)
    train, heldout = src.subset(np.arange(0, 40, 2)), src.subset(np.arange(1, 40, 2))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(9, 2)).eval()
    cfg = Config(kappas=(0.01,), K=(3,), partition="heldout", stability="noise", noise_draws=1, progress=False)
    s = evaluate(model, train, heldout, cfg).stats[0]
    assert s.train_index.tolist() == list(range(0, 40, 2))
    assert len(s.heldout_index) == len(s.heldout_cell) == 20 - 3
    assert set(s.heldout_index.tolist()) < set(range(1, 40, 2))
    save_stats_npz(tmp_path / "s.npz", s)
    assert np.array_equal(load_stats_npz(tmp_path / "s.npz")[0].heldout_index, s.heldout_index)


@pytest.mark.parametrize("field, value, message", [
    ("train_index", np.array([0, 1]), "one entry per sample"),
    ("train_index", np.array([0, -1, 2]), "integer positions >= 0"),
    ("train_path", np.array([1, 2, 3]), "must hold text"),
])
def test_bad_identifiers_are_refused(field, value, message):
    with pytest.raises(UserInputError, match=message):
        SampleStats(train_cell=np.zeros(3, np.int64), train_loss=np.zeros(3, np.uint8), K=2, **{field: value})
