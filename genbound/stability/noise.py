"""Random-noise stability: Q random perturbations per sample and radius (weakest evidence).

For sample i and radius kappa_j, draw Q perturbations (uniform in the l_inf ball, uniform in the
l_2 ball, or N(0, kappa_j^2 I); see :func:`genbound.stability.base.sample_ball`), clip
``x + delta`` to [0, 1], and call the sample unstable at kappa_j if any draw changes the predicted
class. Flips carry upward: a flip found at kappa_j lies in every larger l_inf / l_2 ball, so the
sample is unstable at every kappa >= kappa_j and is not tested again (for ``gaussian`` the flag
reads "no flip found at any sigma <= kappa"). Flags are therefore monotone non-increasing in kappa.

Each (sample, kappa) pair has its own generator seeded with ``derive_seed(seed, i, bits(kappa))``
(i = index in the source, bits = the float64 bit pattern of kappa), so the draws do not depend on
batch size, on which samples were already unstable, or on the other radii of the grid. Memory: ``batch_size * draws * d`` floats per batch; evaluation is chunked by ``eval_batch``.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from genbound.collect import eval_mode
from genbound.data.source import DEFAULT_BATCH_SIZE, DataSource
from genbound.errors import UserInputError
from genbound.stability.base import UNITS, EvalCounter, StabilityResult, sample_ball
from genbound.torch_utils import check_kappas, float_key, generator, progress, resolve_device


@torch.no_grad()
def noise_stability(model: nn.Module, source: DataSource, kappas: Sequence[float] | np.ndarray, *, kind: str = "linf", draws: int = 32,
                    seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE, eval_batch: int = 4096,
                    device: str | torch.device | None = None, progress_bar: bool = True) -> StabilityResult:
    """Stable flags bool[n, J] for the whole kappa grid from Q = ``draws`` random perturbations."""
    if kind not in ("linf", "l2", "gaussian"):
        raise UserInputError(f"noise kind must be 'linf', 'l2' or 'gaussian'; got {kind!r}")
    if draws < 1 or batch_size < 1 or eval_batch < 1:
        raise UserInputError("draws, batch_size and eval_batch must be >= 1")
    d = source.dim
    k = check_kappas(kappas, norm=kind, dim=d)
    dev = resolve_device(device)
    model = model.to(dev)
    n, J = len(source), k.size
    unstable = np.zeros((n, J), dtype=bool)
    preds = np.empty(n, dtype=np.int64)
    counter = EvalCounter()
    t0 = time.perf_counter()
    with eval_mode(model, what="the noise stability check"):
        offset = 0
        for x, _ in progress(source.batches(batch_size), enabled=progress_bar, desc=f"noise stability {source.name}",
                             total=source.num_batches(batch_size), unit="batch"):
            b, shape = x.shape[0], tuple(x.shape[1:])
            x = x.to(dev)
            pred = model(x).argmax(1)
            counter.forward += b
            preds[offset:offset + b] = pred.cpu().numpy()
            alive = torch.ones(b, dtype=torch.bool)
            for j, kappa in enumerate(k):
                ids = torch.nonzero(alive).flatten()
                if kappa == 0 or ids.numel() == 0:
                    continue
                delta = torch.stack([sample_ball(kind, float(kappa), draws, shape, generator(seed, offset + int(i), float_key(kappa)))
                                     for i in ids])  # [a, Q, *shape]
                xp = (x[ids.to(dev)].unsqueeze(1) + delta.to(dev)).clamp_(0.0, 1.0).reshape(-1, *shape)
                flips = torch.cat([model(xp[s:s + eval_batch]).argmax(1) for s in range(0, xp.shape[0], eval_batch)])
                counter.forward += xp.shape[0]
                flipped = (flips.reshape(ids.numel(), draws) != pred[ids.to(dev)].unsqueeze(1)).any(1).cpu()
                hit = ids[flipped]
                unstable[offset + hit.numpy(), j:] = True
                alive[hit] = False
            offset += b
    evidence = {"method": "noise", "sound": False, "kind": kind, "norm": kind, "units": UNITS, "kappas": k.tolist(),
                "draws": int(draws), "seed": int(seed),
                "seed_scheme": "one torch.Generator per (sample index i, radius kappa), seed derive_seed(seed, i, float64 bits of kappa)",
                "clip": [0.0, 1.0], "carry_flips": True, "batch_size": int(batch_size), "n": int(n),
                "model_evals": counter.as_dict(), "wall_s": round(time.perf_counter() - t0, 3), "device": str(dev)}
    return StabilityResult(stable=~unstable, kappas=k, pred=preds, evidence=evidence)
