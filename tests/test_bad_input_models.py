"""Bad input to ``evaluate`` configs, model factories, ``train``/``wci`` flags, and inputs that used
to be accepted although wrong: each ends in one line on stderr, exit code 2, no traceback, and no
file left behind.

Most cases call the command line's entry point in this process (``genbound.cli.main``, the same
code the console script runs) because a fresh interpreter importing torch costs seconds per case;
an exception escaping it would fail the test just as a traceback would. A few cases run the real
console command in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from genbound import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

BASE = textwrap.dedent("""\
    [data]
    train = "digits"
    heldout_fraction = 0.25
    split_seed = 0

    [[models]]
    name = "m"
    factory = "mlp"
    weights = "digits_mlp.safetensors"
    kwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }

    [bounds]
    kappas = [0.01, 0.05]
    K = [10]
    delta = 0.05

    [stability]
    method = "noise"
    draws = 2
""")


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    shutil.copy(EXAMPLES / "digits_mlp.safetensors", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # factory modules written by the tests
    for name in USER_MODULES:  # each test imports its own copy
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield tmp_path
    for name in USER_MODULES:
        sys.modules.pop(name, None)


USER_MODULES = ("gbfactories", "broken_syntax", "raising_import")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_user_error(argv: list[str], capsys: pytest.CaptureFixture, root: Path, *expected: str) -> str:
    """``genbound ARGV`` exits 2 with one line on stderr containing each of ``expected`` and leaves
    no new file under ``root``."""
    before = _files(root)
    capsys.readouterr()
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for e in expected:
        assert e in lines[0], (e, lines[0])
    assert _files(root) - before == set(), _files(root) - before
    return lines[0]


def _config(root: Path, *edits: tuple[str, str], name: str = "c.toml") -> str:
    text = BASE
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    (root / name).write_text(text)
    return name


def _evaluate(cfg: str) -> list[str]:
    return ["evaluate", cfg, "--out", "out", "--no-progress"]


# ---------------------------------------------------------------------------------------------
# Category 3: evaluate configs
# ---------------------------------------------------------------------------------------------
CONFIG_CASES = {
    "delta text": (('delta = 0.05', 'delta = "abc"'), "delta must be a number"),
    "delta nan": (('delta = 0.05', 'delta = nan'), "delta must be in (0, 1)"),
    "delta one": (('delta = 0.05', 'delta = 1.0'), "delta must be in (0, 1)"),
    "split seed text": (('split_seed = 0', 'split_seed = "x"'), "split_seed must be an integer"),
    "split seed fractional": (('split_seed = 0', 'split_seed = 1.5'), "split_seed must be an integer"),
    "split seed negative": (('split_seed = 0', 'split_seed = -1'), "split_seed must be an integer >= 0"),
    "partition seed text": (('delta = 0.05', 'delta = 0.05\npartition_seed = "s"'), "partition_seed must be an integer"),
    "stability seed text": (('draws = 2', 'draws = 2\nseed = "s"'), "stability_seed must be an integer"),
    "heldout fraction text": (('heldout_fraction = 0.25', 'heldout_fraction = "a"'), "heldout_fraction must be a number"),
    "heldout fraction one": (('heldout_fraction = 0.25', 'heldout_fraction = 1.0'), "strictly between 0 and 1"),
    "batch size text": (('draws = 2', 'draws = 2\n[run]\nbatch_size = "x"'), "batch_size must be an integer"),
    "batch size zero": (('draws = 2', 'draws = 2\n[run]\nbatch_size = 0'), "batch_size must be an integer >= 1"),
    "steps text": (('draws = 2', 'draws = 2\nsteps = "x"'), "pgd_steps must be an integer"),
    "steps fractional": (('draws = 2', 'draws = 2\nsteps = 2.5'), "pgd_steps must be an integer"),
    "restarts zero": (('draws = 2', 'draws = 2\nrestarts = 0'), "pgd_restarts must be an integer >= 1"),
    "draws bool": (('draws = 2', 'draws = true'), "noise_draws must be an integer"),
    "prescreen text": (('draws = 2', 'draws = 2\nprescreen = "yes"'), "prescreen"),
    "kwargs not a table": (('kwargs = {', 'kwargs = "hidden=64"\nunused = {'), "unknown key"),
    "kwargs string": (('kwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }', 'kwargs = "x"'),
                      "kwargs must be a table"),
    "kwargs array": (('kwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }', 'kwargs = [1, 2]'),
                     "kwargs must be a table"),
    "K fractional": (('K = [10]', 'K = [4.7]'), "K must be an integer"),
    "K bool": (('K = [10]', 'K = [true]'), "K must be an integer"),
    "K zero": (('K = [10]', 'K = [0]'), "K must be an integer >= 1"),
    "K text": (('K = [10]', 'K = "10"'), "K must be an integer"),
    "K empty": (('K = [10]', 'K = []'), "K must be a non-empty list"),
    "kappas text": (('kappas = [0.01, 0.05]', 'kappas = ["a"]'), "kappas must be a number"),
    "kappas empty": (('kappas = [0.01, 0.05]', 'kappas = []'), "kappas must be a non-empty list"),
    "kappas negative": (('kappas = [0.01, 0.05]', 'kappas = [-0.1]'), "radii > 0"),
    "kappas above the pixel range": (('kappas = [0.01, 0.05]', 'kappas = [2.0]'), "linf kappas must lie in [0, 1]"),
    "kappas inf": (('kappas = [0.01, 0.05]', 'kappas = [inf]'), "kappas"),
    "label_pure text": (('delta = 0.05', 'delta = 0.05\nlabel_pure = "yes"'), "label_pure must be true or false"),
    "label_pure number": (('delta = 0.05', 'delta = 0.05\nlabel_pure = 1'), "label_pure must be true or false"),
    "partition unknown": (('delta = 0.05', 'delta = 0.05\npartition = "kmeans++"'), "partition must be one of"),
    "partition number": (('delta = 0.05', 'delta = 0.05\npartition = 3'), "partition must be one of"),
    "method unknown": (('method = "noise"', 'method = "fgsm"'), "stability must be one of"),
    "norm unknown": (('method = "noise"', 'method = "noise"\nnorm = "l1"'), "norm must be one of"),
    "projection dim zero": (('delta = 0.05', 'delta = 0.05\nprojection_dim = 0'), "projection_dim must be an integer >= 1"),
    "progress text": (('draws = 2', 'draws = 2\n[run]\nprogress = "x"'), "progress must be true or false"),
    "device number": (('draws = 2', 'draws = 2\n[run]\ndevice = 3'), "unknown device 3"),
    "device unknown": (('draws = 2', 'draws = 2\n[run]\ndevice = "tpu"'), "unknown device 'tpu'"),
    "out not a string": (('draws = 2', 'draws = 2\n[run]\nout = 5'), "[run] out must be a non-empty string"),
    "unknown key in data": (('split_seed = 0', 'split_seed = 0\nfoo = 1'), "unknown key(s) ['foo'] in [data]"),
    "unknown key in bounds": (('delta = 0.05', 'delta = 0.05\nkappa = 0.1'), "unknown key 'kappa' in [bounds]"),
    "unknown key in stability": (('draws = 2', 'draws = 2\neps = 0.1'), "unknown key 'eps' in [stability]"),
    "unknown key in models": (('name = "m"', 'name = "m"\nweight = "x.pt"'), "unknown key(s) ['weight']"),
    "unknown section": (('[bounds]', '[bound]'), "unknown section"),
    "data not a table": (('[data]\ntrain = "digits"\nheldout_fraction = 0.25\nsplit_seed = 0\n', 'data = 3\n'),
                         "[data] must be a table"),
    "no train": (('train = "digits"\n', ''), "[data] needs 'train'"),
    "train number": (('train = "digits"', 'train = 3'), "[data] train must be a non-empty string"),
    "train unknown": (('train = "digits"', 'train = "no-such-data"'), "unknown dataset 'no-such-data'"),
    "heldout unknown": (('split_seed = 0', 'split_seed = 0\nheldout = "nowhere.npz"'), "unknown dataset"),
    "models as a table": (('[[models]]', '[models]'), "at least one [[models]] entry"),
    "model without factory": (('factory = "mlp"\n', ''), "needs a 'factory'"),
    "factory number": (('factory = "mlp"', 'factory = 3'), "factory must be a non-empty string"),
    "model name with slash": (('name = "m"', 'name = "a/b"'), "model name 'a/b' is not allowed"),
    "model name with dots": (('name = "m"', 'name = "../evil"'), "model name '../evil' is not allowed"),
    "model name dot": (('name = "m"', 'name = ".."'), "model name '..' is not allowed"),
    "model name empty": (('name = "m"', 'name = ""'), "model name '' is not allowed"),
    "model name number": (('name = "m"', 'name = 3'), "model name 3 is not allowed"),
    "model names repeated": (('[bounds]', '[[models]]\nname = "m"\nfactory = "mlp"\n\n[bounds]'), "must be unique"),
    "input_normalization channels": (('name = "m"', 'name = "m"\ninput_normalization = "imagenet"'),
                                     "has 3 channels but the data have 1"),
    "weights number": (('weights = "digits_mlp.safetensors"', 'weights = 3'), "weights must be a non-empty string"),
    "weights missing": (('weights = "digits_mlp.safetensors"', 'weights = "nope.pt"'), "not found"),
    "weights of another model": (('hidden = [64]', 'hidden = [32]'), "does not fit 'mlp'"),
    "not TOML": (('[data]', '[data'), "is not valid TOML"),
    "preprocess on a named dataset": (('split_seed = 0', 'split_seed = 0\npreprocess = "imagenet"'),
                                      "preprocess apply to image folders only"),
    "preprocess unknown preset": (('split_seed = 0', 'split_seed = 0\npreprocess = "vgg"'),
                                  "unknown preprocessing preset 'vgg'"),
    "preprocess number": (('split_seed = 0', 'split_seed = 0\npreprocess = 224'), "[data] preprocess must be"),
    "preprocess unknown key": (('split_seed = 0', 'split_seed = 0\npreprocess = { size = 224 }'),
                               "unknown key(s) ['size'] in [data] preprocess"),
    "preprocess resize zero": (('split_seed = 0', 'split_seed = 0\npreprocess = { resize = 0 }'),
                               "resize must be >= 1 pixel"),
    "preprocess resize text": (('split_seed = 0', 'split_seed = 0\npreprocess = { resize = "256" }'),
                               "resize must be a positive integer or [height, width]"),
    "preprocess crop three numbers": (('split_seed = 0', 'split_seed = 0\npreprocess = { crop = [1, 2, 3] }'),
                                      "crop must be a positive integer or [height, width]"),
    "preprocess interpolation": (('split_seed = 0', 'split_seed = 0\npreprocess = { interpolation = "cubic" }'),
                                 "interpolation must be one of"),
    "preprocess mode": (('split_seed = 0', 'split_seed = 0\npreprocess = { mode = "CMYK" }'),
                        "mode must be 'RGB' or 'L'"),
    "classes unknown name": (('split_seed = 0', 'split_seed = 0\nclasses = "imagenet21k"'),
                             "neither one of imagenet, cifar10 nor a labels file"),
    "classes one name": (('split_seed = 0', 'split_seed = 0\nclasses = ["cat"]'), "at least 2 classes"),
    "classes repeated": (('split_seed = 0', 'split_seed = 0\nclasses = ["cat", "cat"]'), "must be unique"),
    "classes numbers": (('split_seed = 0', 'split_seed = 0\nclasses = [1, 2]'), "classes must be"),
    "classes on a named dataset": (('split_seed = 0', 'split_seed = 0\nclasses = "cifar10"'),
                                   "classes apply to image folders only"),
    "normalization unknown preset": (('name = "m"', 'name = "m"\ninput_normalization = "vgg"'),
                                     "input_normalization must be one of"),
    "normalization table without std": (('name = "m"', 'name = "m"\ninput_normalization = { mean = [0.5] }'),
                                        "needs exactly mean and std"),
    "normalization table text": (('name = "m"', 'name = "m"\ninput_normalization = { mean = ["a"], std = [1] }'),
                                 "input_normalization mean must be a number"),
    "normalization zero std": (('name = "m"', 'name = "m"\ninput_normalization = { mean = [0.5], std = [0] }'),
                               "std must be positive"),
    "normalization from a model without one": (('name = "m"', 'name = "m"\ninput_normalization = "model"'),
                                               "declares no input mean/std"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_value(case: str, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    edit, expected = CONFIG_CASES[case]
    assert_user_error(_evaluate(_config(workdir, edit)), capsys, workdir, expected)


def test_missing_config_file(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    assert_user_error(_evaluate("nope.toml"), capsys, workdir, "config file not found")


def test_empty_weights_file(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    (workdir / "empty.pt").write_bytes(b"")
    cfg = _config(workdir, ('weights = "digits_mlp.safetensors"', 'weights = "empty.pt"'))
    assert_user_error(_evaluate(cfg), capsys, workdir, "empty.pt", "cannot read as a torch checkpoint")


def test_empty_safetensors_file(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    (workdir / "empty.safetensors").write_bytes(b"")
    cfg = _config(workdir, ('weights = "digits_mlp.safetensors"', 'weights = "empty.safetensors"'))
    assert_user_error(_evaluate(cfg), capsys, workdir, "empty.safetensors", "not a readable safetensors file")


def test_empty_dataset(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    np.savez(workdir / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32), y=np.zeros(0, np.int64))
    cfg = _config(workdir, ('train = "digits"', 'train = "empty.npz"'))
    assert_user_error(_evaluate(cfg), capsys, workdir, "empty")


# ---------------------------------------------------------------------------------------------
# Category 4: factories (evaluate and wci --model)
# ---------------------------------------------------------------------------------------------
FACTORY_MODULE = textwrap.dedent("""\
    import os
    from os import system
    import torch
    from torch import nn

    class NotAModule:
        def __init__(self, **kw):
            pass

    def raises(**kw):
        raise RuntimeError("the factory's own failure")

    def not_a_module(**kw):
        return 42

    def wrong_input(**kw):  # built for 28x28 MNIST, given 8x8 digits
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def wrong_output_rank(**kw):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Unflatten(1, (2, 5)))

    def too_few_outputs(**kw):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))

    def too_many_outputs(**kw):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 1000))

    def nan_weights(**kw):
        m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        with torch.no_grad():
            m[1].weight[0, 0] = float("nan")
        return m

    class NanOutput(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 10), float("inf"))

    def nan_output(**kw):
        return NanOutput()

    def good(**kw):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
""")

FACTORY_CASES = {
    ":": "unknown model factory ':'",
    "..bad:fn": "unknown model factory '..bad:fn'",
    "a b:fn": "unknown model factory",
    "mod:": "unknown model factory",
    "no_such_module_xyz:fn": "cannot import module 'no_such_module_xyz'",
    "broken_syntax:build": "SyntaxError",
    "raising_import:build": "ZeroDivisionError",
    "gbfactories:missing": "has no 'missing'",
    "gbfactories:raises": "raised RuntimeError: the factory's own failure",
    "gbfactories:not_a_module": "returned int, not a torch.nn.Module",
    "gbfactories:NotAModule": "is not a model factory",
    "gbfactories:system": "is not a model factory",
    "gbfactories:os": "is not a model factory",
    "gbfactories:wrong_input": "fails on inputs of shape (1, 8, 8)",
    "gbfactories:wrong_output_rank": "a classifier must return logits of shape (batch, classes)",
    "gbfactories:too_few_outputs": "has 5 outputs but the data have 10 classes",
    "gbfactories:too_many_outputs": "has 1000 outputs but the data have 10 classes",
    "gbfactories:nan_weights": "holds NaN or inf values",
    "gbfactories:nan_output": "returned NaN or inf logits",
    "os:system": "standard library",
    "subprocess:run": "standard library",
    "builtins:eval": "standard library",
    "shutil:rmtree": "standard library",
    "torch:load": "is not a model factory",
    "numpy:zeros": "is not a model factory",
}


def _factory_modules(root: Path) -> None:
    (root / "gbfactories.py").write_text(FACTORY_MODULE)
    (root / "broken_syntax.py").write_text("def build(:\n")
    (root / "raising_import.py").write_text("1 / 0\n")


@pytest.mark.parametrize("factory", sorted(FACTORY_CASES))
def test_bad_factory_in_config(factory: str, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    _factory_modules(workdir)
    cfg = _config(workdir, ('factory = "mlp"', f'factory = "{factory}"'),
                  ('weights = "digits_mlp.safetensors"\n', ''))
    assert_user_error(_evaluate(cfg), capsys, workdir, FACTORY_CASES[factory])


@pytest.mark.parametrize("factory", ["gbfactories:raises", "gbfactories:wrong_input", "gbfactories:too_few_outputs",
                                     "gbfactories:nan_output", "os:system", "broken_syntax:build", ":"])
def test_bad_factory_in_wci(factory: str, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    _factory_modules(workdir)
    argv = ["wci", "--model", factory, "--data", "digits", "--subset", "8", "--probes", "1", "--no-normalize",
            "--json", "w.json", "--quiet"]
    assert_user_error(argv, capsys, workdir, FACTORY_CASES[factory])


def test_os_system_is_refused_before_it_is_called(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    marker = workdir / "ran"
    cfg = _config(workdir, ('factory = "mlp"', 'factory = "os:system"'),
                  ('kwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }',
                   f'kwargs = {{ command = "touch {marker}" }}'), ('weights = "digits_mlp.safetensors"\n', ''))
    assert_user_error(_evaluate(cfg), capsys, workdir, "standard library")
    assert not marker.exists()
    # the same callable re-exported by a user's module is refused by where it comes from
    _factory_modules(workdir)
    cfg = _config(workdir, ('factory = "mlp"', 'factory = "gbfactories:system"'),
                  ('kwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }',
                   f'kwargs = {{ command = "touch {marker}" }}'), ('weights = "digits_mlp.safetensors"\n', ''))
    assert_user_error(_evaluate(cfg), capsys, workdir, "is not a model factory")
    assert not marker.exists()


def test_factory_file_is_recorded(workdir: Path) -> None:
    from genbound.models import load_model
    _factory_modules(workdir)
    model = load_model("gbfactories:good")
    assert model.genbound_model["factory_file"] == str(workdir / "gbfactories.py")


# ---------------------------------------------------------------------------------------------
# Category 5: train and wci flags
# ---------------------------------------------------------------------------------------------
TRAIN = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--no-progress", "--out", "w.pt"]
FLAG_CASES = {
    "train --lr nan": (TRAIN + ["--lr", "nan"], "argument --lr"),
    "train --lr inf": (TRAIN + ["--lr", "inf"], "argument --lr"),
    "train --lr zero": (TRAIN + ["--lr", "0"], "argument --lr"),
    "train --lr text": (TRAIN + ["--lr", "fast"], "argument --lr"),
    "train --epochs zero": (TRAIN + ["--epochs", "0"], "argument --epochs"),
    "train --batch-size text": (TRAIN + ["--batch-size", "big"], "argument --batch-size"),
    "train --weight-decay negative": (TRAIN + ["--weight-decay", "-1"], "argument --weight-decay"),
    "train --random-labels above 1": (TRAIN + ["--random-labels", "1.5"], "argument --random-labels"),
    "train --heldout-fraction 1": (TRAIN + ["--heldout-fraction", "1"], "argument --heldout-fraction"),
    "train --seed text": (TRAIN + ["--seed", "x"], "argument --seed"),
    "train --model-arg without =": (TRAIN + ["--model-arg", "hidden"], "expected KEY=VALUE"),
    "train --model-arg empty key": (TRAIN + ["--model-arg", "=3"], "expected KEY=VALUE"),
    "train --model-arg malformed list": (TRAIN + ["--model-arg", "hidden=[128"], "not a valid Python literal"),
    "train --model-arg unknown": (TRAIN + ["--model-arg", "depth=3"], "rejected its arguments"),
    "train --model-arg wrong type": (TRAIN + ["--model-arg", "hidden=abc"], "factory 'mlp' raised ValueError"),
    "train --model-arg negative width": (["train", "--data", "digits", "--model", "small_cnn", "--model-arg", "width=-3",
                                         "--out", "w.pt"], "factory 'small_cnn' raised RuntimeError"),
    "train --out suffix": (["train", "--data", "digits", "--out", "w.txt"], "--out must end in"),
    "wci --eps nan": (["wci", "--model", "mlp", "--data", "digits", "--eps", "nan"], "argument --eps"),
    "wci --eps negative": (["wci", "--model", "mlp", "--data", "digits", "--eps", "-0.1"], "argument --eps"),
    "wci --step-size zero": (["wci", "--model", "mlp", "--data", "digits", "--step-size", "0"], "argument --step-size"),
    "wci --delta 1": (["wci", "--model", "mlp", "--data", "digits", "--delta", "1"], "argument --delta"),
    "wci --probes zero": (["wci", "--model", "mlp", "--data", "digits", "--probes", "0"], "argument --probes"),
    "wci --subset text": (["wci", "--model", "mlp", "--data", "digits", "--subset", "all"], "argument --subset"),
    "wci --model-kwargs not JSON": (["wci", "--model", "mlp", "--data", "digits", "--model-kwargs", "{hidden: 3}"],
                                    "--model-kwargs is not valid JSON"),
    "wci --model-kwargs a list": (["wci", "--model", "mlp", "--data", "digits", "--model-kwargs", "[1]"],
                                  "--model-kwargs must be a JSON object"),
    "wci --device unknown": (["wci", "--model", "mlp", "--data", "digits", "--device", "tpu"], "unknown device"),
    "wci wrong input shape": (["wci", "--model", "mlp", "--data", "digits", "--model-kwargs",
                               '{"input_shape": [1, 7, 7]}'], "fails on inputs of shape (1, 8, 8)"),
    "wci wrong class count": (["wci", "--model", "mlp", "--data", "digits", "--model-kwargs",
                               '{"input_shape": [1, 8, 8], "num_classes": 3}'], "has 3 outputs but the data have 10"),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_bad_flag(case: str, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    argv, expected = FLAG_CASES[case]
    assert_user_error(list(argv), capsys, workdir, expected)


# ---------------------------------------------------------------------------------------------
# Category 6: accepted although wrong
# ---------------------------------------------------------------------------------------------
def _stats_npz(path: Path, kappas: list[float], stable: np.ndarray, **extra: object) -> str:
    n = stable.shape[0]
    np.savez(path, train_cell=np.arange(n) % 3, train_loss=np.zeros(n, np.uint8), heldout_cell=np.arange(4) % 3,
             heldout_loss=np.zeros(4, np.uint8), K=np.int64(3), kappas=np.asarray(kappas, np.float64),
             train_stable=stable, **extra)
    return str(path)


def test_sound_flags_must_be_monotone_in_kappa(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    stable = np.array([[True, True], [False, True], [True, False]])  # sample 1: stable only at the larger kappa
    path = _stats_npz(workdir / "s.npz", [0.01, 0.02], stable, stability_sound=np.bool_(True),
                      stability_method=np.str_("crown"))
    assert_user_error(["bounds", path], capsys, workdir, "not monotone in kappa", "sample 1")


def test_empirical_flags_may_be_non_monotone(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    stable = np.array([[True, True], [False, True], [True, False]])
    path = _stats_npz(workdir / "s.npz", [0.01, 0.02], stable, stability_method=np.str_("pgd"))
    assert cli.main(["bounds", path]) == 0


def test_duplicate_kappas_with_contradictory_flags(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    stable = np.array([[True, False], [True, True], [False, False]])
    path = _stats_npz(workdir / "s.npz", [0.01, 0.01], stable)
    assert_user_error(["bounds", path], capsys, workdir, "kappa 0.01 is given 2 times with different stability flags")


def test_duplicate_kappas_with_equal_flags_count_once() -> None:
    from genbound.bounds import SampleStats
    stable = np.array([[True, True, False], [False, False, False], [True, True, True]])
    s = SampleStats(train_cell=[0, 1, 2], train_loss=[0, 0, 1], heldout_cell=[0], heldout_loss=[0], K=3,
                    kappas=[0.01, 0.01, 0.02], train_stable=stable)
    assert s.kappas.tolist() == [0.01, 0.02]
    assert s.train_stable.tolist() == [[True, False], [False, False], [True, True]]


def test_labels_outside_the_models_classes(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(0)
    np.savez(workdir / "d.npz", x=rng.random((40, 1, 8, 8), dtype=np.float32), y=np.arange(40) % 12)
    cfg = _config(workdir, ('train = "digits"', 'train = "d.npz"'))
    assert_user_error(_evaluate(cfg), capsys, workdir, "has 10 outputs but the data have 12 classes")


def test_nan_weights_in_a_weights_file(workdir: Path, capsys: pytest.CaptureFixture) -> None:
    from safetensors.numpy import load_file, save_file
    sd = load_file(str(workdir / "digits_mlp.safetensors"))
    key = sorted(sd)[0]
    sd[key] = sd[key].copy()
    sd[key].flat[0] = np.inf
    save_file(sd, str(workdir / "inf.safetensors"))
    cfg = _config(workdir, ('weights = "digits_mlp.safetensors"', 'weights = "inf.safetensors"'))
    assert_user_error(_evaluate(cfg), capsys, workdir, "holds NaN or inf values", "inf.safetensors")


def test_python_api_refuses_what_the_cli_refuses() -> None:
    import torch
    from torch import nn

    from genbound import Config, evaluate
    from genbound.data import TensorSource
    from genbound.errors import UserInputError
    src = TensorSource(torch.rand(20, 1, 8, 8), torch.arange(20) % 10)
    good = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    cfg = Config(kappas=[0.01], K=[4], stability="noise", noise_draws=1, progress=False)
    with pytest.raises(UserInputError, match="is not allowed"):
        evaluate({"../x": good}, src, src, cfg)
    with pytest.raises(UserInputError, match="has 3 outputs but the data have 10 classes"):
        evaluate({"m": nn.Sequential(nn.Flatten(), nn.Linear(64, 3))}, src, src, cfg)
    with pytest.raises(UserInputError, match="fails on inputs of shape"):
        evaluate({"m": nn.Sequential(nn.Flatten(), nn.Linear(63, 10))}, src, src, cfg)


# ---------------------------------------------------------------------------------------------
# The real console command, in a subprocess (the one-line contract outside pytest's capture)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit, expected", [
    (('K = [10]', 'K = [4.7]'), "K must be an integer"),
    (('factory = "mlp"', 'factory = "os:system"'), "standard library"),
])
def test_console_command(edit: tuple[str, str], expected: str, workdir: Path) -> None:
    cfg = _config(workdir, edit)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(cli.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")])}
    before = _files(workdir)
    r = subprocess.run([sys.executable, "-m", "genbound", *_evaluate(cfg)], capture_output=True, text=True,
                       cwd=workdir, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert expected in r.stderr
    assert _files(workdir) - before == set()


# ---------------------------------------------------------------------------------------------
# Data handed to --data / [data] train: arrays and image folders
# ---------------------------------------------------------------------------------------------
def _data_cases(root: Path) -> dict[str, tuple[str, str]]:
    from PIL import Image
    z = np.zeros((10, 1, 8, 8), np.float32)
    arrays = {
        "nan pixels": (dict(x=np.full_like(z, np.nan), y=np.arange(10)), "pixel values must lie in [0, 1]"),
        "pre-normalized pixels": (dict(x=z - 0.5, y=np.arange(10)), "pixel values must lie in [0, 1]"),
        "8-bit values as floats": (dict(x=z + 255, y=np.arange(10)), "divide 8-bit images by 255"),
        "text images": (dict(x=np.array(["a"] * 10), y=np.arange(10)), "images must be numeric arrays"),
        "object images": (dict(x=np.array([None] * 10, dtype=object), y=np.arange(10)), "allow_pickle"),
        "5-d images": (dict(x=z[:, None], y=np.arange(10)), "images must have shape"),
        "negative labels": (dict(x=z, y=-np.arange(10)), "labels must be >= 0"),
        "fractional labels": (dict(x=z, y=np.arange(10) + 0.5), "labels must be integers"),
        "2-d labels": (dict(x=z, y=np.zeros((10, 2), int)), "labels must be a 1-D array"),
        "fewer labels": (dict(x=z, y=np.arange(5)), "10 images but 5 labels"),
        "no labels": (dict(x=z), "expected arrays named 'x' (images) and 'y' (labels)"),
        "one class": (dict(x=z[:1], y=np.zeros(1, int)), "num_classes must be >= 2"),
    }
    cases = {}
    for case, (arrs, expected) in arrays.items():
        path = root / (case.replace(" ", "_") + ".npz")
        np.savez(path, **arrs)
        cases[case] = (str(path), expected)
    (root / "imgs" / "a").mkdir(parents=True)
    (root / "imgs" / "b").mkdir()
    Image.new("RGB", (8, 8)).save(root / "imgs" / "a" / "1.png")
    Image.new("RGB", (9, 8)).save(root / "imgs" / "b" / "2.png")
    cases["images of two sizes"] = (str(root / "imgs"), "has shape (3, 8, 9), expected (3, 8, 8)")
    (root / "undecodable" / "a").mkdir(parents=True)
    (root / "undecodable" / "a" / "x.png").write_bytes(b"not a png")
    cases["undecodable image"] = (str(root / "undecodable"), "cannot decode image")
    (root / "no_images" / "a").mkdir(parents=True)
    cases["folder without images"] = (str(root / "no_images"), "no images with extensions")
    (root / "no_classes").mkdir()
    cases["folder without class folders"] = (str(root / "no_classes"), "has no class sub-directories")
    cases["missing file"] = (str(root / "nope.npz"), "unknown dataset")
    return cases


DATA_CASES = ["nan pixels", "pre-normalized pixels", "8-bit values as floats", "text images", "object images",
              "5-d images", "negative labels", "fractional labels", "2-d labels", "fewer labels", "no labels",
              "one class", "images of two sizes", "undecodable image", "folder without images",
              "folder without class folders", "missing file"]


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data(case: str, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    data = workdir / "data"
    data.mkdir()
    path, expected = _data_cases(data)[case]
    argv = ["train", "--data", path, "--model", "mlp", "--epochs", "1", "--no-progress", "--out", "w.pt"]
    assert_user_error(argv, capsys, workdir, expected)
