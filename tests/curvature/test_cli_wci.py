"""``genbound wci``: happy path and user errors (exit 2, one line, no traceback)."""

from __future__ import annotations

import json

import pytest
import torch

from genbound.cli import main
from tests.curvature.models import digits_net

pytest.importorskip("sklearn")

FACTORY = "tests.curvature.models:digits_net"


@pytest.fixture()
def weights(tmp_path):
    path = tmp_path / "net.pt"
    torch.save(digits_net().state_dict(), path)
    return path


def test_happy_path_writes_json(weights, tmp_path, capsys):
    out = tmp_path / "wci.json"
    rc = main(["wci", "--model", FACTORY, "--weights", str(weights), "--data", "digits", "--eps", "0.1",
               "--steps", "2", "--subset", "64", "--probes", "4", "--batch-size", "32", "--json", str(out), "--quiet"])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["protocol"]["data"]["dataset"] == "digits" and d["protocol"]["eps"] == 0.1
    assert d["readout"]["n"] == 1438  # the train part of the default 80/20 split and len(d["layers"]) == 2
    assert "WCI" in capsys.readouterr().out


def test_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "net.safetensors"
    save_file(digits_net().state_dict(), str(path))
    rc = main(["wci", "--model", FACTORY, "--weights", str(path), "--data", "digits", "--estimator", "fisher",
               "--steps", "1", "--subset", "32", "--quiet"])
    assert rc == 0


def _one_line_error(capsys, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("genbound wci: error:") and match in err, err


def test_missing_weights_file(capsys, tmp_path):
    _one_line_error(capsys, ["wci", "--model", FACTORY, "--weights", str(tmp_path / "nope.pt"), "--data", "digits"],
                    "not found")


def test_unknown_dataset(capsys, weights):
    _one_line_error(capsys, ["wci", "--model", FACTORY, "--weights", str(weights), "--data", "cifar99"],
                    "unknown dataset 'cifar99'")


def test_bad_factory_and_mismatched_weights(capsys, weights, tmp_path):
    _one_line_error(capsys, ["wci", "--model", "digits_net", "--data", "digits"], "package.module:function")
    _one_line_error(capsys, ["wci", "--model", "no_such_pkg.mod:f", "--data", "digits"], "cannot import")
    other = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(2)}, other)
    _one_line_error(capsys, ["wci", "--model", FACTORY, "--weights", str(other), "--data", "digits"],
                    "does not fit")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    _one_line_error(capsys, ["wci", "--model", FACTORY, "--weights", str(junk), "--data", "digits"],
                    "cannot read")
