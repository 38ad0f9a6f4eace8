"""AWP restores the weights after the perturbed step; TRADES loss sanity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genbound.train import AWP, trades_attack, trades_loss, train_epoch
from genbound.train.trades import kl_div
from tests.train.helpers import toy_config, toy_data, toy_model


def test_awp_perturbs_relative_size_and_restores_exactly():
    x, y = toy_data(64)
    model = toy_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    awp = AWP(model, gamma=0.01)
    awp.perturb(lambda: F.cross_entropy(model(x), y))
    moved = {k: (model.state_dict()[k] - before[k]).norm() / before[k].norm() for k in before if before[k].ndim >= 2}
    assert all(abs(float(v) - 0.01) < 1e-4 for v in moved.values())
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before if before[k].ndim < 2)
    # the perturbation ascends the loss
    loss_pert_t = F.cross_entropy(model(x), y)
    loss_pert = float(loss_pert_t.detach())
    loss_pert_t.backward()
    awp.restore()
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)
    with torch.no_grad():
        assert loss_pert > float(F.cross_entropy(model(x), y))
    assert all(p.grad is not None for p in model.parameters())  # the step's gradient survives the restore


def test_trades_loss_sanity():
    x, y = toy_data(64)
    model = toy_model()
    model.eval()
    # identical inputs: KL term vanishes, loss is the clean CE
    assert torch.allclose(trades_loss(model, x, x, y, beta=6.0), F.cross_entropy(model(x), y), atol=1e-6)
    g = torch.Generator().manual_seed(0)
    xa = trades_attack(model, x, eps=0.1, steps=5, generator=g)
    assert (xa - x).abs().max() <= 0.1 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    with torch.no_grad():
        kl = float(kl_div(model(x), model(xa)))
    assert kl > 0
    rand = (x + 0.1 * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
    with torch.no_grad():
        assert kl > float(kl_div(model(x), model(rand)))  # the attack beats a random point of the ball
    l1 = trades_loss(model, x, xa, y, beta=1.0)
    l6 = trades_loss(model, x, xa, y, beta=6.0)
    assert torch.allclose(l6 - l1, 5 * kl_div(model(x), model(xa)), atol=1e-5)



@pytest.mark.parametrize("method", ["pgd", "trades", "awp"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_every_method_and_norm_takes_steps(method, norm):
    x, y = toy_data(80)
    model = toy_model()
    cfg = toy_config(method, epochs=1, norm=norm)
    if norm == "l2":
        cfg.eps = 0.5
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss = train_epoch(model, opt, cfg, x, y, epoch=0, awp=AWP(model, 5e-3) if method == "awp" else None)
    assert loss > 0 and all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
