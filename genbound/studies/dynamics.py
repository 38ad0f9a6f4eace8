"""Learning dynamics around a learning-rate decay (spec wci.md §5; reconstructed from the v2/v3
abstracts of Xu & Zhang, see background-wci.md).

Starting from a snapshot of an adversarial-training run taken just before its first decay
(weights and momentum), on one layer ``W`` (by default the last Linear weight):

1. Frozen adversarial examples of a fixed training subset at the snapshot; the top-``k``
   eigenpairs ``(h_i, u_i)`` of the Hessian of the mean CE w.r.t. ``W`` (power iteration), the
   per-example gradient covariance ``C`` of that layer (per-sample gradients), ``Tr C`` and
   ``c_i = u_i^T C u_i / B`` (mini-batch noise along ``u_i``, ``B`` the batch size).
2. Predictions, SGD with momentum ``beta`` on the local quadratic:
   ``1/2 Tr(H Sigma) ~ eta Tr C / (4 B (1 - beta))`` and per direction
   ``sigma_bar_i^2(eta) = eta c_i (1+beta) / (h_i (1-beta) (2(1+beta) - eta h_i))``;
   after the decay ``eta1 -> eta2``:
   ``sigma_i^2(t0+k) = rho_i^k sigma_i^2(t0) + (1 - rho_i^k) sigma_bar_i^2(eta2)``,
   ``rho_i = (1 - eta2 h_i)^2`` (the spec's formula, written for plain SGD; with momentum the
   relaxation is faster, so it is an upper envelope of the relaxation time).
3. Measurement: ``R`` replicas continue PGD-AT from the snapshot with their own mini-batches
   (``B`` indices drawn with replacement per step) and attack starts, ``steps1`` steps at ``eta1`` then ``steps2`` at ``eta2``; ``p_i(t) = u_i . W_t``
   every step. Measured variance: across replicas at each step (ensemble), and over the window of
   replica 0's iterates in the second half of the ``eta1`` phase (time window), beside the
   predictions.

The eigenvectors are those of the snapshot; the mean of the iterates drifts after the decay, which
the quadratic model ignores; these are recorded as they come.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from genbound.curvature import pgd, top_eigenvalues
from genbound.torch_utils import derive_seed
from genbound.train.adversarial import TrainConfig, _adv_batch


def _per_sample_grads(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(w: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**params, name: w}, (xi.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(out, yi.unsqueeze(0))

    g = vmap(grad(loss), in_dims=(None, 0, 0), chunk_size=64)(params[name], x, y)
    return g.flatten(1).double()


def learning_dynamics(
    model: nn.Module,
    snapshot: dict[str, Any],
    train: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    *,
    eta1: float,
    eta2: float,
    layer: str | None = None,
    k: int = 3,
    subset: int = 256,
    replicas: int = 4,
    steps1: int = 80,
    steps2: int = 80,
    seed: int = 0,
) -> dict[str, Any]:
    """Predicted vs measured weight-iterate variance along top Hessian directions (module doc)."""
    t0 = time.perf_counter()
    x, y = train
    model.load_state_dict(snapshot["model"])
    model.eval()
    if layer is None:
        layer = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1] + ".weight"
    B, beta = config.batch_size, config.momentum
    g = torch.Generator().manual_seed(derive_seed(seed, 21))
    idx = torch.randperm(x.shape[0], generator=g)[: min(subset, x.shape[0])]
    xs, ys = x[idx], y[idx]
    xa = pgd(model, xs, ys, eps=config.eps, norm=config.norm, steps=config.track.eval_steps, clip=config.clip,
             seed=derive_seed(seed, 22))
    eig = top_eigenvalues(model, (xa, ys), k=k, params=[layer], max_iter=100, tol=1e-4, seed=derive_seed(seed, 23))
    h = [float(v) for v in eig.eigenvalues]
    u = torch.stack([vec[layer].detach().flatten().double() for vec in eig.eigenvectors])  # (k, D)
    G = _per_sample_grads(model, layer, xa, ys)
    Gc = G - G.mean(0, keepdim=True)
    n = G.shape[0]
    tr_c = float(Gc.pow(2).sum() / (n - 1))
    c = [float(v) / B for v in ((Gc @ u.T).pow(2).sum(0) / (n - 1))]

    def stationary(eta: float, hi: float, ci: float) -> float | None:
        den = hi * (1 - beta) * (2 * (1 + beta) - eta * hi)
        return eta * ci * (1 + beta) / den if hi > 0 and den > 0 else None

    pred1 = [stationary(eta1, hi, ci) for hi, ci in zip(h, c)]
    pred2 = [stationary(eta2, hi, ci) for hi, ci in zip(h, c)]

    proj: list[list[list[float]]] = []  # replica -> step -> direction
    named = dict(model.named_parameters())
    for r in range(replicas):
        model.load_state_dict(snapshot["model"])
        opt = torch.optim.SGD(model.parameters(), lr=eta1, momentum=beta, weight_decay=config.weight_decay)
        opt.load_state_dict(snapshot["optimizer"])
        traj = []
        gen = torch.Generator().manual_seed(derive_seed(seed, 24, r))
        for t in range(steps1 + steps2):
            for grp in opt.param_groups:
                grp["lr"] = eta1 if t < steps1 else eta2
            bi = torch.randint(0, x.shape[0], (B,), generator=gen)
            xb = _adv_batch(model, config, x[bi], y[bi], derive_seed(seed, 25, r, t))
            model.train()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xb), y[bi]).backward()
            opt.step()
            traj.append((u @ named[layer].detach().flatten().double()).tolist())
        proj.append(traj)
    P = torch.tensor(proj, dtype=torch.float64)  # (R, T, k)
    ens_var = P.var(dim=0, unbiased=True) if replicas > 1 else torch.full(P.shape[1:], float("nan"))
    half = steps1 // 2
    win = P[0, half:steps1]
    window_var = win.var(dim=0, unbiased=True).tolist() if win.shape[0] > 1 else [None] * k
    ens_stat1 = ens_var[half:steps1].mean(0).tolist()
    ens_end2 = ens_var[-max(1, steps2 // 4):].mean(0).tolist()
    rho = [(1 - eta2 * hi) ** 2 for hi in h]
    s0 = ens_var[steps1 - 1].tolist()
    transient_pred = [[(rho[i] ** kk) * s0[i] + (1 - rho[i] ** kk) * (pred2[i] if pred2[i] is not None else float("nan"))
                       for i in range(k)] for kk in range(1, steps2 + 1)]

    def clean(v: Any) -> Any:
        if isinstance(v, list):
            return [clean(a) for a in v]
        return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

    return clean({
        "provenance": "reconstructed (spec wci.md §5)",
        "layer": layer, "k": k, "subset": int(xs.shape[0]), "batch_size": B, "momentum": beta,
        "eta1": eta1, "eta2": eta2, "replicas": replicas, "steps1": steps1, "steps2": steps2,
        "snapshot_epoch": int(snapshot.get("epoch", -1)),
        "h": h, "c": c, "trace_c_layer": tr_c,
        "predicted_half_tr_h_sigma_eta1": eta1 * tr_c / (4 * B * (1 - beta)),
        "predicted_half_tr_h_sigma_eta2": eta2 * tr_c / (4 * B * (1 - beta)),
        "predicted_var_eta1": pred1, "predicted_var_eta2": pred2,
        "measured_var_window_eta1": window_var,
        "measured_var_ensemble_eta1": ens_stat1,
        "measured_var_ensemble_end_eta2": ens_end2,
        "predicted_half_h_var_topk_eta1": 0.5 * sum(hi * v for hi, v in zip(h, pred1) if v is not None),
        "measured_half_h_var_ensemble_eta1": 0.5 * sum(hi * v for hi, v in zip(h, ens_stat1)),
        "rho": rho,
        "ensemble_var_by_step": ens_var.tolist(),
        "transient_predicted_by_step": transient_pred,
        "seconds": time.perf_counter() - t0,
    })
