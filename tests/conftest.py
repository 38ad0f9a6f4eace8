import os

import numpy as np
import pytest
import torch

from tests import _torchvision_cpu

_torchvision_cpu.install()  # test-only: PyPI's torchvision (and timm) beside the CPU torch build


@pytest.fixture(scope="module")
def digits_mlp():
    """A small MLP trained on 300 of scikit-learn's digits, with those 300 and 120 held-out digits:
    the shared small real-data case of the pipeline tests (one per test module)."""
    from genbound.data import load_dataset, split_source
    from genbound.models import mlp, train_classifier

    torch.manual_seed(0)
    src = load_dataset("digits")
    train, held, _ = split_source(src, 0.3, seed=0)
    train, held = train.subset(np.arange(300)), held.subset(np.arange(120))
    model = train_classifier(mlp(input_shape=(1, 8, 8), hidden=(32,), seed=0), train, epochs=5, progress_bar=False)
    return model, train, held


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests use tiny tensors: one thread avoids OpenMP contention on a small shared CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_stats_arrays(rng, n, m, K, J, *, err=0.1, herr=0.12, consistent_cells=False, monotone=True):
    """Random per-sample statistics; with ``consistent_cells`` every cell holding a stable sample has
    constant loss (what a sound certificate on a kappa-fine label-pure cell implies)."""
    tc = rng.integers(0, K, n)
    hc = rng.integers(0, K, m)
    tl = (rng.random(n) < err).astype(np.uint8)
    hl = (rng.random(m) < herr).astype(np.uint8)
    if monotone:
        level = rng.integers(0, J + 1, n)
        st = np.arange(J)[None, :] < level[:, None]
    else:
        st = rng.random((n, J)) < 0.5
    if consistent_cells:
        pure = rng.random(K) < 0.5
        cell_loss = (rng.random(K) < 0.3).astype(np.uint8)
        tl = np.where(pure[tc], cell_loss[tc], tl).astype(np.uint8)
        hl = np.where(pure[hc], cell_loss[hc], hl).astype(np.uint8)
        st = st & pure[tc][:, None]
    kappas = np.sort(rng.uniform(0.01, 0.5, J)) if J else np.zeros(0)
    return dict(train_cell=tc, train_loss=tl, train_stable=st, kappas=kappas, heldout_cell=hc, heldout_loss=hl)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


EXAMPLE_WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                               "digits_mlp.safetensors")


def example_config(tmp_path, tables: str, *, data: str = "", model: str = "") -> str:
    """Write ``tmp_path/c.toml``, a ``genbound evaluate`` config for the shipped example (an MLP
    trained on scikit-learn's digits, ``examples/digits_mlp.safetensors``), and return its path.
    ``data``: more ``[data]`` lines; ``model``: the ``[[models]]`` entry's factory lines (default: the
    built-in ``mlp`` with the example's kwargs); ``tables``: the ``[bounds]``, ``[stability]`` and
    ``[run]`` tables."""
    model = model or 'factory = "mlp"\nkwargs = { input_shape = [1, 8, 8], num_classes = 10, hidden = [64] }\n'
    text = (f'[data]\ntrain = "digits"\n{data}[[models]]\nname = "m"\nweights = "{EXAMPLE_WEIGHTS}"\n'
            f"{model}{tables.lstrip()}")
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)
