"""Models layer and collect: architectures, Normalize, trainer, safe loading, eval-mode handling."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from genbound.collect import collect
from genbound.torch_utils import model_mode
from genbound.data import Normalization, make_prototypes
from genbound.errors import UserInputError
from genbound.models import (Normalize, load_model, load_state_dict_file, mlp, save_weights, small_cnn, small_resnet,
                             train_classifier, with_normalization)



class Pickled:  # a custom class: unpickling it needs this module's code
    def __init__(self):
        self.w = torch.zeros(2)


@pytest.fixture(scope="module")
def data():
    return make_prototypes(120, shape=(1, 8, 8), num_classes=3, spread=0.2, seed=0)


@pytest.mark.parametrize("factory", [lambda: mlp(input_shape=(1, 8, 8), num_classes=3, hidden=(16,)),
                                     lambda: small_cnn(num_classes=3, width=4, hidden=8),
                                     lambda: small_resnet(num_classes=3, width=4, batchnorm=True)])
def test_architectures_shapes_and_no_maxpool(factory):
    m = factory().eval()
    assert m(torch.rand(5, 1, 8, 8)).shape == (5, 3)
    assert not any(isinstance(s, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for s in m.modules())


def test_factories_are_seeded():
    a, b, c = small_cnn(seed=1), small_cnn(seed=1), small_cnn(seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_normalize_per_channel():
    n = Normalize(Normalization(mean=(0.5, 0.0), std=(0.5, 2.0)))
    x = torch.ones(1, 2, 3, 3)
    out = n(x)
    assert torch.allclose(out[:, 0], torch.ones(1, 3, 3)) and torch.allclose(out[:, 1], torch.full((1, 3, 3), 0.5))
    base = nn.Identity()
    assert with_normalization(base, Normalization()) is base


def test_trainer_learns_and_is_reproducible(data):
    def run():
        return train_classifier(mlp(input_shape=(1, 8, 8), num_classes=3, hidden=(16,)), data, epochs=3, lr=1e-2,
                                seed=5, device="cpu", progress_bar=False)
    m1, m2 = run(), run()
    assert not m1.training
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert collect(m1, data, device="cpu", progress_bar=False).error < 0.2  # learned (chance: 2/3); 11/120 here, margin for other CPUs
    assert m1.genbound_training["seed"] == 5


def test_trainer_random_labels_memorizes():
    data = make_prototypes(60, shape=(1, 8, 8), num_classes=3, spread=0.2, seed=0)
    m = train_classifier(mlp(input_shape=(1, 8, 8), num_classes=3, hidden=(128,)), data, epochs=150, lr=3e-3,
                         batch_size=16, seed=0, random_label_fraction=0.5, device="cpu", progress_bar=False)
    rec = m.genbound_training
    assert rec["random_labels"]["n_changed"] == 30
    from genbound.data import randomize_labels
    noisy, _ = randomize_labels(data, 0.5, seed=0)
    assert rec["final_epoch_train_accuracy"] > 0.9  # fits the random labels
    assert collect(m, noisy, device="cpu", progress_bar=False).error < 0.15


def test_weights_roundtrip_pt_and_safetensors(tmp_path):
    m = small_cnn(num_classes=3, width=4, hidden=8, seed=3)
    x = torch.rand(4, 1, 8, 8)
    for name in ("w.pt", "w.safetensors"):
        save_weights(m, tmp_path / name)
        m2 = load_model("small_cnn", tmp_path / name, device="cpu", num_classes=3, width=4, hidden=8, seed=None)
        assert torch.equal(m.eval()(x), m2(x)) and not m2.training
    torch.save({"state_dict": {"module." + k: v for k, v in m.state_dict().items()}, "epoch": 3}, tmp_path / "wrapped.pt")
    assert set(load_state_dict_file(tmp_path / "wrapped.pt")) == set(m.state_dict())


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    m = small_cnn(num_classes=3, width=4, hidden=8)
    torch.save(m, tmp_path / "whole_model.pt")  # pickles the class: needs code to load
    with pytest.raises(UserInputError, match="arbitrary code"):
        load_model("small_cnn", tmp_path / "whole_model.pt", num_classes=3, width=4, hidden=8)
    torch.save({"w": Pickled()}, tmp_path / "custom.pt")
    with pytest.raises(UserInputError, match="arbitrary code"):
        load_state_dict_file(tmp_path / "custom.pt")


def test_load_model_errors(tmp_path):
    with pytest.raises(UserInputError, match="unknown model factory"):
        load_model("resnet9000")
    with pytest.raises(UserInputError, match="cannot import"):
        load_model("no_such_pkg.mod:fn")
    save_weights(small_cnn(num_classes=3), tmp_path / "w.pt")
    with pytest.raises(UserInputError, match="does not fit"):
        load_model("small_cnn", tmp_path / "w.pt", num_classes=5)
    m = load_model("genbound.models.architectures:mlp", input_shape=(1, 4, 4), num_classes=2, device="cpu",
                   normalization=Normalization((0.5,), (0.25,)))
    assert isinstance(m[0], Normalize) and m.genbound_model["factory"].endswith(":mlp")


def test_optional_vision_names_fail_clearly():
    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision installed")
    except Exception:
        pass
    with pytest.raises(UserInputError, match="genbound\\[vision\\]"):
        load_model("torchvision:resnet18")


def test_collect_arrays_and_dtypes(data):
    m = mlp(input_shape=(1, 8, 8), num_classes=3, hidden=(8,)).eval()
    out = collect(m, data, batch_size=50, device="cpu", return_logits=True, progress_bar=False)
    x, y = data.tensors()
    with torch.no_grad():
        ref = m(x).argmax(1).numpy()
    assert out.pred.dtype == np.int64 and out.loss.dtype == np.uint8 and out.logits.dtype == np.float32
    assert np.array_equal(out.pred, ref) and np.array_equal(out.loss, (ref != y.numpy()).astype(np.uint8))
    assert out.logits.shape == (120, 3)


def test_collect_warns_in_train_mode_and_restores_mode(data):
    m = small_resnet(num_classes=3, width=4, batchnorm=True)
    m.train()
    m.layers[0].block[1].eval()  # a mixed state must be restored exactly
    with pytest.warns(UserWarning, match="train mode"):
        out_train = collect(m, data, device="cpu", progress_bar=False)
    assert m.training and not m.layers[0].block[1].training and m.layers[0].block[4].training
    m.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out_eval = collect(m, data, device="cpu", progress_bar=False)
    assert np.array_equal(out_train.pred, out_eval.pred)  # the pass really ran in eval mode
    with model_mode(m.train(), warn=False):
        assert not any(s.training for s in m.modules())
    assert m.training


def test_one_device_policy():
    """``resolve_device``: an analysed model is never moved (``None`` = its device, another device is
    a one-line error); without a model ``None`` is CUDA when available, else CPU."""
    from genbound.torch_utils import resolve_device

    cpu_net = nn.Linear(3, 2)
    assert resolve_device(None, cpu_net) == torch.device("cpu")
    assert resolve_device("cpu", cpu_net) == torch.device("cpu")
    assert resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meta_net = nn.Linear(3, 2, device="meta")
    assert resolve_device(None, meta_net) == torch.device("meta")
    with pytest.raises(UserInputError, match=r"model is on meta but device='cpu'.*model.to\('cpu'\)"):
        resolve_device("cpu", meta_net)
    with pytest.raises(UserInputError, match="unknown device"):
        resolve_device("gpu0")
    # analysis functions follow it: collect runs where the model is and leaves it there
    from genbound.data.source import TensorSource

    src = TensorSource(np.random.default_rng(0).random((4, 3), dtype=np.float32), np.array([0, 1, 0, 1]),
                      num_classes=2, name="tiny")
    with pytest.raises(UserInputError, match="model is on meta"):
        collect(meta_net, src, device="cpu", progress_bar=False)
    collect(cpu_net.eval(), src, progress_bar=False)
    assert next(cpu_net.parameters()).device.type == "cpu"
