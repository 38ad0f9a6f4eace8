"""Random-noise stability: Q random perturbations per sample and radius (weakest evidence).

For sample i and radius kappa_j, draw Q perturbations (uniform in the l_inf ball, uniform in the
l_2 ball, or N(0, kappa_j^2 I); see :func:`genbound.attacks.sample_ball`), clip
``x + delta`` to [0, 1], and call the sample unstable at kappa_j if any draw changes the predicted
class. Flips carry upward: a flip found at kappa_j lies in every larger l_inf / l_2 ball, so the
sample is unstable at every kappa >= kappa_j and is not tested again (for ``gaussian`` the flag
reads "no flip found at any sigma <= kappa"). Flags are therefore monotone non-increasing in kappa.

Each (sample, kappa) pair has its own generator seeded with ``derive_seed(seed, i, bits(kappa))``
(i = index in the source, bits = the float64 bit pattern of kappa), so the draws do not depend on
batch size, on which samples were already unstable, or on the other radii of the grid. Memory: ``batch_size * draws * d`` floats per batch; evaluation is chunked by ``eval_batch``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from genbound import names
from genbound.attacks import sample_ball
from genbound.data.source import DEFAULT_BATCH_SIZE, DataSource
from genbound.errors import UserInputError
from genbound.stability.engine import UNITS, BatchResult, StabilityResult, run_engine
from genbound.torch_utils import check_kappas, float_key, generator


class NoiseEngine:
    """Random-noise stability as a :class:`~genbound.stability.engine.StabilityEngine` (module doc)."""

    name, sound = "noise", False

    def __init__(self, *, kind: str = "linf", draws: int = 32, seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE,
                 eval_batch: int = 4096) -> None:
        if kind not in names.NOISE_KINDS:
            raise UserInputError(f"noise kind must be 'linf', 'l2' or 'gaussian'; got {kind!r}")
        if draws < 1 or batch_size < 1 or eval_batch < 1:
            raise UserInputError("draws, batch_size and eval_batch must be >= 1")
        self.kind, self.draws, self.seed = kind, int(draws), int(seed)
        self.batch_size, self.eval_batch = int(batch_size), int(eval_batch)

    def start(self, model: nn.Module, kappas: np.ndarray, device: torch.device) -> None:
        self.k, self.dev, self.model = kappas, device, model.to(device)

    @torch.no_grad()
    def update(self, x: torch.Tensor, index: np.ndarray) -> BatchResult:
        model, k, dev, draws, kind, eval_batch = self.model, self.k, self.dev, self.draws, self.kind, self.eval_batch
        b, shape = x.shape[0], tuple(x.shape[1:])
        pred = model(x).argmax(1)
        fwd = b
        unstable = np.zeros((b, k.size), dtype=bool)
        alive = torch.ones(b, dtype=torch.bool)
        for j, kappa in enumerate(k):
            ids = torch.nonzero(alive).flatten()
            if kappa == 0 or ids.numel() == 0:
                continue
            delta = torch.stack([sample_ball(kind, float(kappa), draws, shape, generator(self.seed, int(index[int(i)]), float_key(kappa)))
                                 for i in ids])  # [a, Q, *shape]
            xp = (x[ids.to(dev)].unsqueeze(1) + delta.to(dev)).clamp_(0.0, 1.0).reshape(-1, *shape)
            flips = torch.cat([model(xp[s:s + eval_batch]).argmax(1) for s in range(0, xp.shape[0], eval_batch)])
            fwd += xp.shape[0]
            flipped = (flips.reshape(ids.numel(), draws) != pred[ids.to(dev)].unsqueeze(1)).any(1).cpu()
            hit = ids[flipped]
            unstable[hit.numpy(), j:] = True
            alive[hit] = False
        return BatchResult(index=index, stable=~unstable, pred=pred.cpu().numpy().astype(np.int64), counts={"forward": fwd})

    def evidence(self, counts: dict[str, Any], n: int) -> dict[str, Any]:
        fwd = int(counts.get("forward", 0))
        return {"method": "noise", "sound": False, "kind": self.kind, "norm": self.kind, "units": UNITS,
                "kappas": self.k.tolist(), "draws": self.draws, "seed": self.seed,
                "seed_scheme": "one torch.Generator per (sample index i, radius kappa), seed derive_seed(seed, i, float64 bits of kappa)",
                "clip": [0.0, 1.0], "carry_flips": True, "batch_size": self.batch_size, "n": int(n),
                "model_evals": {"forward": fwd, "backward": 0, "total": fwd}}


def noise_stability(model: nn.Module, source: DataSource, kappas: Sequence[float] | np.ndarray, *, kind: str = "linf", draws: int = 32,
                    seed: int = 0, batch_size: int = DEFAULT_BATCH_SIZE, eval_batch: int = 4096,
                    device: str | torch.device | None = None, progress_bar: bool = True,
                    indices: np.ndarray | None = None) -> StabilityResult:
    """Stable flags bool[n, J] for the whole kappa grid from Q = ``draws`` random perturbations
    (``indices``: only these positions of the source, e.g. a shard or a subsample)."""
    engine = NoiseEngine(kind=kind, draws=draws, seed=seed, batch_size=batch_size, eval_batch=eval_batch)
    k = check_kappas(kappas, norm=kind, dim=source.dim)
    return run_engine(engine, model, source, k, batch_size=batch_size, device=device, indices=indices,
                      progress_bar=progress_bar, desc=f"noise stability {source.name}")
