"""PGD stability: an untargeted projected-gradient attack on the model's own prediction.

For sample x with clean prediction c = argmax f(x) (the *predicted* label, not the true one) and
radius kappa (l_inf or l_2, [0, 1] pixel units before normalization), each restart starts at a
random point of the ball (uniform; the same sampler as the noise engine), clipped to [0, 1], and
takes ``steps`` ascent steps on the cross-entropy ``CE(f(x'), c)``:

Radii: l_inf kappa in [0, 1]; l_2 kappa in [0, sqrt(d)] (the cube's diameter).

- l_inf: ``x' <- clip_[0,1]( Proj_{||x'-x||_inf <= kappa}( x' + alpha * sign(grad) ) )``
- l_2:   ``x' <- clip_[0,1]( Proj_{||x'-x||_2 <= kappa}( x' + alpha * grad / ||grad||_2 ) )``
  (clipping to the cube after the ball projection keeps x' in the ball because x is in the cube)

with ``alpha = 2.5 * kappa / steps`` by default (Madry et al.). Every iterate is evaluated,
including the random start; the sample is unstable at kappa as soon as one iterate's prediction
differs from c (spec §7).

Early exit (default): a sample leaves the attacked batch at the first flipping iterate. The kappa
grid runs from the smallest radius to the largest and flips carry over: the kappa_j-ball lies in
every larger ball, so a sample unstable at kappa_j is unstable at every kappa >= kappa_j and is
not attacked again. Flags are monotone non-increasing in kappa. ``early_exit=False,
carry_flips=False`` runs every step of every restart on every sample at every kappa (the
reference a benchmark compares against; its flags need not be monotone).

Sound pre-screen (``prescreen``): before the attack, pairs whose margins a sound bound proves
positive on the whole ball (:mod:`genbound.stability.sound.prescreen`) are marked stable and not
attacked. No iterate of any attack can flip such a pair, so the flags are those of the attack
alone; only the cost falls (a stable pair otherwise runs every step). ``"auto"`` (default) uses it
with early exit where the bound's body runs in float32 with its rounding errors enclosed (CPU,
supported layers), where it costs a few model evaluations a sample; ``True`` also with float64
bounds; ``False`` never. Its attempts, proofs and wall time are recorded under
``evidence["prescreen"]``; the model evaluations count PGD's passes.

Randomness: the random start of (sample i, radius kappa, restart r) comes from a generator seeded
with ``derive_seed(seed, i, bits(kappa), r)`` (bits = the float64 bit pattern), so it does not
depend on the batch, on early exit, or on the other radii of the grid;
early-exit and full runs start from the same points and follow the same iterates until the first
flip. Model evaluations are counted in samples (one input through one forward or backward pass);
weight gradients are never computed (parameters are frozen during the attack).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genbound import names
from genbound.attacks import DEFAULT_REL_STEP, default_step_size, project_step, random_start
from genbound.data.source import DEFAULT_BATCH_SIZE, DataSource
from genbound.errors import UserInputError
from genbound.stability.engine import UNITS, BatchResult, StabilityResult, run_engine
from genbound.stability.sound.prescreen import PGDPrescreen
from genbound.torch_utils import check_kappas


class PGDEngine:
    """The PGD attack as a :class:`~genbound.stability.engine.StabilityEngine` (module docstring)."""

    name, sound = "pgd", False

    def __init__(self, *, norm: str = "linf", steps: int = 10, restarts: int = 1, step_size: float | None = None,
                 rel_step_size: float = DEFAULT_REL_STEP, seed: int = 0, early_exit: bool = True, carry_flips: bool = True,
                 prescreen: bool | str = "auto", batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if norm not in names.NORMS:
            raise UserInputError(f"PGD norm must be 'linf' or 'l2'; got {norm!r}")
        if steps < 0 or restarts < 1 or batch_size < 1:
            raise UserInputError("need steps >= 0, restarts >= 1, batch_size >= 1")
        if step_size is not None and step_size <= 0:
            raise UserInputError(f"step_size must be positive; got {step_size}")
        if prescreen not in (True, False, "auto"):
            raise UserInputError(f"prescreen must be true, false or 'auto'; got {prescreen!r}")
        self.norm, self.steps, self.restarts, self.step_size = norm, int(steps), int(restarts), step_size
        self.rel_step_size, self.seed, self.early_exit, self.carry_flips = rel_step_size, int(seed), early_exit, carry_flips
        self.prescreen, self.batch_size = prescreen, int(batch_size)

    def start(self, model: nn.Module, kappas: np.ndarray, device: torch.device) -> None:
        self.k = kappas
        self.alphas = [float(self.step_size) if self.step_size is not None
                       else default_step_size(kp, self.steps, self.rel_step_size) for kp in kappas]
        self.dev = device
        self.model = model.to(device)
        use = self.prescreen is True or (self.prescreen == "auto" and self.early_exit)
        self.screen = PGDPrescreen(self.model, self.norm, kappas, device, float32_only=self.prescreen == "auto") if use else None

    def update(self, x: torch.Tensor, index: np.ndarray) -> BatchResult:
        model, k, norm, steps, dev = self.model, self.k, self.norm, self.steps, self.dev
        early_exit, carry_flips = self.early_exit, self.carry_flips
        b, J = x.shape[0], k.size
        fwd = bwd = 0
        with torch.no_grad():
            logits = model(x)
            pred = logits.argmax(1)
        fwd += b
        screened = self.screen.certify_counted(x, logits) if self.screen is not None else None
        certified = screened[0] if screened is not None else torch.zeros(b, J, dtype=torch.bool)
        found = torch.zeros(b, J, dtype=torch.bool)  # flip found at kappa_j (this batch)
        for j, kappa in enumerate(k):
            if kappa == 0:
                continue  # the 0-ball is {x}: never a flip
            cand = ~found[:, :j].any(1) if (carry_flips and j > 0) else torch.ones(b, dtype=torch.bool)
            cand &= ~certified[:, j]
            for r in range(self.restarts):
                act = cand & ~found[:, j] if early_exit else cand
                ids = torch.nonzero(act).flatten()
                if ids.numel() == 0:
                    break
                xs = x[ids.to(dev)]
                x_adv = (xs + random_start(norm, float(kappa), xs.shape[1:], self.seed,
                                           [int(index[int(i)]) for i in ids], r).to(dev)).clamp_(0.0, 1.0)
                for t in range(steps + 1):
                    need_grad = t < steps
                    x_adv.requires_grad_(need_grad)
                    with torch.set_grad_enabled(need_grad):
                        logits = model(x_adv)
                        fwd += ids.numel()
                        target = pred[ids.to(dev)]
                        flipped = (logits.detach().argmax(1) != target).cpu()
                        if flipped.any():
                            found[ids[flipped], j] = True
                        if not need_grad:
                            break
                        if early_exit and flipped.all():
                            break
                        loss = F.cross_entropy(logits, target, reduction="sum")
                        (grad,) = torch.autograd.grad(loss, x_adv)
                        bwd += ids.numel()
                    with torch.no_grad():
                        x_adv = project_step(x_adv.detach(), xs, grad, float(kappa), self.alphas[j], norm)
                    if early_exit and flipped.any():
                        keep = ~flipped
                        ids, xs, x_adv = ids[keep], xs[keep.to(dev)], x_adv[keep.to(dev)]
        fnp = found.numpy()
        if carry_flips:
            fnp = np.logical_or.accumulate(fnp, axis=1)
        counts: dict[str, Any] = {"forward": fwd, "backward": bwd}
        if screened is not None:
            counts.update(screened[1])
        return BatchResult(index=index, stable=~fnp, pred=pred.cpu().numpy().astype(np.int64), counts=counts)

    def evidence(self, counts: dict[str, Any], n: int) -> dict[str, Any]:
        fwd, bwd = int(counts.get("forward", 0)), int(counts.get("backward", 0))
        step_size, norm = self.step_size, self.norm
        return {"method": "pgd", "sound": False, "norm": norm, "units": UNITS, "kappas": self.k.tolist(),
                "steps": self.steps, "restarts": self.restarts,
                "step_size": float(step_size) if step_size is not None else f"{self.rel_step_size} * kappa / steps",
                "step_sizes": self.alphas, "random_start": f"uniform in the {norm} ball, clipped to [0,1]",
                "target": "predicted label (untargeted)", "loss": "cross-entropy w.r.t. the predicted label",
                "seed": self.seed, "seed_scheme": "random start of (sample i, radius kappa, restart r) from a "
                "torch.Generator seeded with derive_seed(seed, i, float64 bits of kappa, r)",
                "early_exit": bool(self.early_exit), "carry_flips": bool(self.carry_flips), "clip": [0.0, 1.0],
                "batch_size": self.batch_size, "n": int(n),
                "model_evals": {"forward": fwd, "backward": bwd, "total": fwd + bwd},
                "prescreen": self.screen.evidence(counts) if self.screen is not None else None}


def pgd_stability(model: nn.Module, source: DataSource, kappas: Sequence[float] | np.ndarray, *, norm: str = "linf", steps: int = 10,
                  restarts: int = 1, step_size: float | None = None, rel_step_size: float = DEFAULT_REL_STEP, seed: int = 0,
                  early_exit: bool = True, carry_flips: bool = True, prescreen: bool | str = "auto",
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  device: str | torch.device | None = None, progress_bar: bool = True,
                  indices: np.ndarray | None = None) -> StabilityResult:
    """Stable flags bool[n, J] for the whole kappa grid from an untargeted PGD attack (module doc).

    ``step_size``: absolute step in pixel units for every kappa; default
    ``rel_step_size * kappa / steps`` (2.5 kappa / steps).
    ``prescreen``: skip the pairs a sound bound proves stable (:mod:`genbound.stability.sound.prescreen`;
    no attack could flip them, so the flags are unchanged): ``"auto"`` with early exit where the
    float32 bound applies, ``True`` always (float64 where float32 does not apply), ``False`` never.
    ``indices``: only these positions of the source (a shard or a subsample).
    """
    engine = PGDEngine(norm=norm, steps=steps, restarts=restarts, step_size=step_size, rel_step_size=rel_step_size,
                       seed=seed, early_exit=early_exit, carry_flips=carry_flips, prescreen=prescreen,
                       batch_size=batch_size)
    k = check_kappas(kappas, norm=norm, dim=source.dim)
    return run_engine(engine, model, source, k, batch_size=batch_size, device=device, indices=indices,
                      progress_bar=progress_bar, desc=f"PGD-{norm} {source.name}")
