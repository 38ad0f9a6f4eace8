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
positive on the whole ball (:mod:`genbound.stability.prescreen`) are marked stable and not
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

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genbound.collect import eval_mode
from genbound.data.source import DEFAULT_BATCH_SIZE, DataSource
from genbound.errors import UserInputError
from genbound.stability.prescreen import PGDPrescreen
from genbound.stability.base import UNITS, EvalCounter, StabilityResult, frozen_parameters, sample_ball
from genbound.torch_utils import check_kappas, float_key, generator, progress, resolve_device


def _step(x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, kappa: float, alpha: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        x_new = x_adv + alpha * grad.sign()
        x_new = torch.minimum(torch.maximum(x_new, x - kappa), x + kappa)
    else:
        flat = grad.reshape(grad.shape[0], -1)
        gn = flat.norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (grad.ndim - 1)))
        x_new = x_adv + alpha * grad / gn
        delta = x_new - x
        dn = delta.reshape(delta.shape[0], -1).norm(dim=1).view(-1, *([1] * (grad.ndim - 1)))
        x_new = x + delta * torch.clamp(kappa / dn.clamp_min(1e-12), max=1.0)
    return x_new.clamp_(0.0, 1.0)


def pgd_stability(model: nn.Module, source: DataSource, kappas: Sequence[float] | np.ndarray, *, norm: str = "linf", steps: int = 10,
                  restarts: int = 1, step_size: float | None = None, rel_step_size: float = 2.5, seed: int = 0,
                  early_exit: bool = True, carry_flips: bool = True, prescreen: bool | str = "auto",
                  batch_size: int = DEFAULT_BATCH_SIZE,
                  device: str | torch.device | None = None, progress_bar: bool = True) -> StabilityResult:
    """Stable flags bool[n, J] for the whole kappa grid from an untargeted PGD attack (module doc).

    ``step_size``: absolute step in pixel units for every kappa; default
    ``rel_step_size * kappa / steps`` (2.5 kappa / steps).
    ``prescreen``: skip the pairs a sound bound proves stable (:mod:`genbound.stability.prescreen`;
    no attack could flip them, so the flags are unchanged): ``"auto"`` with early exit where the
    float32 bound applies, ``True`` always (float64 where float32 does not apply), ``False`` never.
    """
    if norm not in ("linf", "l2"):
        raise UserInputError(f"PGD norm must be 'linf' or 'l2'; got {norm!r}")
    if steps < 0 or restarts < 1 or batch_size < 1:
        raise UserInputError("need steps >= 0, restarts >= 1, batch_size >= 1")
    if step_size is not None and step_size <= 0:
        raise UserInputError(f"step_size must be positive; got {step_size}")
    if prescreen not in (True, False, "auto"):
        raise UserInputError(f"prescreen must be true, false or 'auto'; got {prescreen!r}")
    d = source.dim
    k = check_kappas(kappas, norm=norm, dim=d)
    alphas = [float(step_size) if step_size is not None else rel_step_size * float(kp) / max(steps, 1) for kp in k]
    dev = resolve_device(device)
    model = model.to(dev)
    n, J = len(source), k.size
    unstable = np.zeros((n, J), dtype=bool)
    preds = np.empty(n, dtype=np.int64)
    counter = EvalCounter()
    t0 = time.perf_counter()
    with eval_mode(model, what="the PGD stability check"), frozen_parameters(model):
        use = prescreen is True or (prescreen == "auto" and early_exit)
        screen = PGDPrescreen(model, norm, k, dev, float32_only=prescreen == "auto") if use else None
        offset = 0
        for x, _ in progress(source.batches(batch_size), enabled=progress_bar, desc=f"PGD-{norm} {source.name}",
                             total=source.num_batches(batch_size), unit="batch"):
            b, shape = x.shape[0], tuple(x.shape[1:])
            x = x.to(dev)
            with torch.no_grad():
                logits = model(x)
                pred = logits.argmax(1)
            counter.forward += b
            certified = screen.certify(x, logits) if screen is not None else torch.zeros(b, J, dtype=torch.bool)
            preds[offset:offset + b] = pred.cpu().numpy()
            found = torch.zeros(b, J, dtype=torch.bool)  # flip found at kappa_j (this batch)
            for j, kappa in enumerate(k):
                if kappa == 0:
                    continue  # the 0-ball is {x}: never a flip
                cand = ~found[:, :j].any(1) if (carry_flips and j > 0) else torch.ones(b, dtype=torch.bool)
                cand &= ~certified[:, j]
                for r in range(restarts):
                    act = cand & ~found[:, j] if early_exit else cand
                    ids = torch.nonzero(act).flatten()
                    if ids.numel() == 0:
                        break
                    start = torch.stack([sample_ball(norm, float(kappa), 1, shape, generator(seed, offset + int(i), float_key(kappa), r))[0]
                                         for i in ids]).to(dev)
                    xs = x[ids.to(dev)]
                    x_adv = (xs + start).clamp_(0.0, 1.0)
                    for t in range(steps + 1):
                        need_grad = t < steps
                        x_adv.requires_grad_(need_grad)
                        with torch.set_grad_enabled(need_grad):
                            logits = model(x_adv)
                            counter.forward += ids.numel()
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
                            counter.backward += ids.numel()
                        with torch.no_grad():
                            x_adv = _step(x_adv.detach(), xs, grad, float(kappa), alphas[j], norm)
                        if early_exit and flipped.any():
                            keep = ~flipped
                            ids, xs, x_adv = ids[keep], xs[keep.to(dev)], x_adv[keep.to(dev)]
            fnp = found.numpy()
            if carry_flips:
                fnp = np.logical_or.accumulate(fnp, axis=1)
            unstable[offset:offset + b] = fnp
            offset += b
    evidence = {"method": "pgd", "sound": False, "norm": norm, "units": UNITS, "kappas": k.tolist(),
                "steps": int(steps), "restarts": int(restarts),
                "step_size": float(step_size) if step_size is not None else f"{rel_step_size} * kappa / steps",
                "step_sizes": alphas, "random_start": f"uniform in the {norm} ball, clipped to [0,1]",
                "target": "predicted label (untargeted)", "loss": "cross-entropy w.r.t. the predicted label",
                "seed": int(seed), "seed_scheme": "random start of (sample i, radius kappa, restart r) from a "
                "torch.Generator seeded with derive_seed(seed, i, float64 bits of kappa, r)", "early_exit": bool(early_exit),
                "carry_flips": bool(carry_flips), "clip": [0.0, 1.0], "batch_size": int(batch_size), "n": int(n),
                "model_evals": counter.as_dict(), "prescreen": screen.evidence() if screen is not None else None,
                "wall_s": round(time.perf_counter() - t0, 3), "device": str(dev)}
    return StabilityResult(stable=~unstable, kappas=k, pred=preds, evidence=evidence)
