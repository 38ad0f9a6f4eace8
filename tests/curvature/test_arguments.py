"""Bad values of the curvature estimators' Python arguments: one-line UserInputError each (the
``genbound wci`` flags are in tests/test_bad_input.py)."""

from __future__ import annotations

import pytest
import torch

from genbound.curvature import hutchinson, hutchpp, wci
from genbound.errors import UserInputError
from tests.curvature.models import conv_bn_net, toy_data



@pytest.mark.parametrize("bad", [float("nan"), -0.1, 0.0, 1.0, "x", float("inf")])
def test_rel_se_argument_refused(bad):
    model = conv_bn_net()
    x, y = toy_data(8)
    with pytest.raises(UserInputError, match="rel_se must be a number in"):
        hutchpp(model, (x, y), rel_se=bad)
    with pytest.raises(UserInputError, match="rel_se must be a number in"):
        hutchinson(model, (x, y), rel_se=bad)
    with pytest.raises(UserInputError, match="rel_se must be a number in"):
        wci(model, (x, y), rel_se=bad, eps=0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sketch=-1), "sketch must be an integer >= 0"),
        (dict(sketch=float("nan")), "sketch must be an integer >= 0"),
        (dict(sketch=2.5), "sketch must be an integer >= 0"),
        (dict(max_products=-5), "max_products must be an integer >= 2"),
        (dict(max_products=float("nan")), "max_products must be an integer >= 2"),
        (dict(min_probes=1), "min_probes must be an integer >= 2"),
        (dict(n_probes="ten", rel_se=None), "n_probes must be an integer >= 2"),
        (dict(sketch=16, max_products=20), "leaves no room"),
    ],
)
def test_hutchpp_arguments_refused(kwargs, match):
    model = conv_bn_net()
    x, y = toy_data(8)
    with pytest.raises(UserInputError, match=match):
        hutchpp(model, (x, y), **kwargs)


def test_hutchinson_rel_se_needs_room():
    model = conv_bn_net()
    x, y = toy_data(8)
    with pytest.raises(UserInputError, match="max_probes"):
        hutchinson(model, (x, y), rel_se=0.1, n_probes=8, max_probes=4)
    assert torch.isfinite(torch.tensor(hutchinson(model, (x, y), rel_se=0.5, n_probes=4).total))
