"""``genbound train`` command module (driven through its own argparse parser)."""

import argparse
import json

import numpy as np
import pytest

from genbound.commands import train as train_cmd
from genbound.errors import UserInputError



def parse(argv):
    p = argparse.ArgumentParser()
    train_cmd.add_arguments(p)
    return p.parse_args(argv)


def test_train_command_writes_loadable_weights_and_record(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    args = parse(["--data", "digits", "--model", "mlp", "--model-arg", "hidden=[32]", "--epochs", "2", "--lr", "3e-3",
                  "--out", str(out), "--device", "cpu", "--no-progress"])
    assert train_cmd.run(args) == 0
    rec = json.loads((tmp_path / "m.safetensors.json").read_text())
    assert rec["factory"] == "mlp" and rec["kwargs"]["hidden"] == [32] and rec["split"]["seed"] == 0
    assert rec["heldout_error"] < 0.3 and "held-out error" in capsys.readouterr().out
    from genbound.collect import collect
    from genbound.data import Normalization, load_dataset
    from genbound.models import load_model
    model = load_model(rec["factory"], out, device="cpu", normalization=Normalization(**rec["normalization"]),
                       **rec["kwargs"])
    held = load_dataset("digits", split="heldout")
    assert np.isclose(collect(model, held, device="cpu", progress_bar=False).error, rec["heldout_error"])


def test_train_command_rejects_bad_output_name(tmp_path):
    with pytest.raises(UserInputError, match="--out"):
        train_cmd.run(parse(["--data", "digits", "--out", str(tmp_path / "m.bin")]))
