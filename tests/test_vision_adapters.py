"""``timm:NAME`` and ``torchvision:NAME`` factories: built with genbound's loader from a weights file
(state dict and safetensors), they must agree with the package's own model and forward pass."""

from __future__ import annotations

import pytest
import torch

from genbound.models import load_model, save_weights



@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm", reason="test extra: pip install -c constraints.txt -e '.[test]'")


@pytest.fixture(scope="module")
def tvm():
    return pytest.importorskip("torchvision.models", reason="test extra: pip install -c constraints.txt -e '.[test]'")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("factory", ["timm:resnet18", "torchvision:resnet18"])
def test_adapter_matches_the_package(factory, suffix, tmp_path, timm, tvm):
    torch.manual_seed(0)
    ref = (timm.create_model("resnet18", pretrained=False, num_classes=10) if factory.startswith("timm")
           else tvm.resnet18(weights=None, num_classes=10)).eval()
    path = tmp_path / f"w{suffix}"
    save_weights(ref, path)
    model = load_model(factory, path, device="cpu", num_classes=10)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))  # same weights, same ops: float32 rounding at most
    assert model.genbound_model["factory"] == factory


def test_timm_declares_its_normalization(timm):
    model = load_model("timm:resnet18", device="cpu", normalization="model", num_classes=10)
    norm = model.genbound_model["normalization"]
    assert norm["mean"] == pytest.approx([0.485, 0.456, 0.406]) and norm["std"] == pytest.approx([0.229, 0.224, 0.225])


def test_unknown_names_are_user_errors(timm, tvm):
    from genbound.errors import UserInputError
    with pytest.raises(UserInputError, match="timm"):
        load_model("timm:no_such_net_xyz")
    with pytest.raises(UserInputError, match="torchvision"):
        load_model("torchvision:no_such_net_xyz")


@pytest.mark.parametrize("error, expected", [
    (ModuleNotFoundError("No module named 'timm'", name="timm"), "not installed: pip install genbound[vision]"),
    (RuntimeError("operator torchvision::nms does not exist"), "is installed but cannot be imported (RuntimeError"),
])
def test_a_missing_or_broken_extra_says_which(error, expected, monkeypatch):
    import importlib

    from genbound.errors import UserInputError
    real = importlib.import_module

    def fake(name, *a, **k):
        if name.startswith(("timm", "torchvision")):
            raise error
        return real(name, *a, **k)
    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(UserInputError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        load_model("timm:resnet18")
