"""AutoAttack stability: the official APGD attacks of ``pyautoattack`` on the model's own prediction.

For sample x with clean prediction c = argmax f(x) and radius kappa (l_inf or l_2, [0, 1] pixel
units before normalization), the attacks of AutoAttack (Croce & Hein, ICML 2020) that follow
the gradient run in its standard order and settings, each on the pairs no earlier attack flipped:

- ``apgd-ce``: APGD on the cross-entropy ``CE(f(x'), c)``, ``restarts`` runs (standard: 1);
- ``apgd-dlr``: APGD on the DLR loss (not in the standard version; for gradient-masking checks);
- ``apgd-t``: targeted APGD on the targeted DLR loss, one run per target class, the ``targets``
  classes ranked 2nd, 3rd, ... by the clean logits (standard: 9), ``restarts`` runs each.

Each run is ``iters`` iterations (standard: 100) of ``APGDAttack.attack_single_run`` from
``pyautoattack`` itself: the step-size schedule (2 kappa, halved at the checkpoints where the loss
stalls, rho = 0.75), the momentum 0.75, the projection onto the ball and onto [0, 1] are the
official code's. The sample is unstable at kappa as soon as one iterate of any run (the random
start included) is classified differently from c, and the flipping point, evaluated again by
the model on its own, is still classified differently and lies in the ball (a flip that does not
reproduce is not counted, and is counted under ``unconfirmed``).

An attack whose loss needs more classes than the model has is skipped and recorded under
``skipped`` (the DLR loss needs 3 classes, its targeted form 4; with 2 classes only ``apgd-ce``
runs).

Not run: ``fab-t`` and ``square``, the two remaining attacks of AutoAttack's standard version.
Their randomness is drawn from torch's global generator for the whole batch inside the library,
so their result for a sample would depend on its batch; on models without gradient masking they
add few or no flips to APGD-CE + APGD-T (Croce & Hein 2020, Table 2). The flags are therefore
those of "APGD-CE + APGD-T", which is how the evidence names them.

Randomness: the random start of (sample i, radius kappa, attack a, target t, restart r) is the
distribution APGD itself draws (l_inf: ``kappa * u / ||u||_inf`` with u uniform in [-1, 1]^d, a
point on the ball's surface; l_2: ``kappa * g / ||g||_2`` with g standard normal), drawn from a
generator seeded with ``derive_seed(seed, i, bits(kappa), a, t, r)`` and handed to the attack as
its initial point. Every other step of APGD is deterministic and per sample (its step sizes and
checkpoints are kept per sample), so a sample's flags do not depend on its batch, its shard or
the other radii of the grid (up to the floating-point summation order of a batched forward pass).
The library also draws a start of its own from torch's global generator and then discards it;
that generator's state is saved and restored around every batch, so a run leaves it untouched.

Flips carry over the kappa grid as in :mod:`genbound.stability.pgd`: a sample unstable at
kappa_j is unstable at every larger kappa and is not attacked again; flags are monotone.
Model evaluations are counted in samples (one input through one forward or backward pass).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from genbound import names
from genbound.data.source import DEFAULT_BATCH_SIZE, DataSource
from genbound.errors import UserInputError, first_line
from genbound.stability.engine import UNITS, BatchResult, StabilityResult, run_engine
from genbound.torch_utils import check_kappas, float_key, generator

__all__ = ["AUTOATTACK_ATTACKS", "AutoAttackEngine", "autoattack_stability", "import_pyautoattack"]

#: The attacks this engine runs, in AutoAttack's order (``apgd-dlr`` is not in the standard set).
AUTOATTACK_ATTACKS = names.AUTOATTACK_ATTACKS
STANDARD = {"attacks": ("apgd-ce", "apgd-t"), "iters": 100, "restarts": 1, "targets": 9}
_CODE = {"apgd-ce": 1, "apgd-dlr": 2, "apgd-t": 3}  # the attack's part of a random start's seed
PIP = "pip install -c constraints.txt 'genbound[autoattack]' (pyautoattack==0.2.0)"


def import_pyautoattack() -> Any:
    """The ``pyautoattack`` module, or a one-line error saying how to install it and why it failed."""
    try:
        import pyautoattack
        from pyautoattack import autopgd_base  # noqa: F401  (the part the engine uses)
    except Exception as e:  # noqa: BLE001  (any failure to import is the same user problem)
        raise UserInputError(f"stability method 'autoattack' needs the optional package pyautoattack: {PIP}; "
                             f"importing it failed: {first_line(e)}") from None
    return pyautoattack


def _start_point(norm: str, kappa: float, shape: tuple[int, ...], seed: int, i: int, code: int, target: int,
                 restart: int) -> torch.Tensor:
    """APGD's own random start (module docstring), from this pair's generator; CPU float32."""
    g = generator(seed, i, float_key(kappa), code, target, restart)
    if norm == "linf":
        t = 2 * torch.rand(shape, generator=g) - 1
        return kappa * t / (t.abs().max() + 1e-12)
    t = torch.randn(shape, generator=g)
    return kappa * t / (t.norm() + 1e-12)


class AutoAttackEngine:
    """AutoAttack's APGD attacks as a :class:`~genbound.stability.engine.StabilityEngine` (module doc)."""

    name, sound = "autoattack", False

    def __init__(self, *, norm: str = "linf", attacks: Sequence[str] = STANDARD["attacks"],
                 iters: int = STANDARD["iters"], restarts: int = STANDARD["restarts"],
                 targets: int = STANDARD["targets"], seed: int = 0, carry_flips: bool = True,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        if norm not in names.NORMS:
            raise UserInputError(f"AutoAttack norm must be 'linf' or 'l2'; got {norm!r}")
        if isinstance(attacks, str) or not isinstance(attacks, Sequence) or not attacks or any(
                a not in AUTOATTACK_ATTACKS for a in attacks) or len(set(attacks)) != len(attacks):
            raise UserInputError(f"autoattack attacks must be a non-empty list of distinct names from "
                                 f"{', '.join(AUTOATTACK_ATTACKS)}; got {attacks!r}")
        for what, v in (("iters", iters), ("restarts", restarts), ("targets", targets), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise UserInputError(f"autoattack {what} must be an integer >= 1; got {v!r}")
        self.pya = import_pyautoattack()
        # AutoAttack's order (its run_standard_evaluation): untargeted CE, untargeted DLR, targeted
        self.attacks = tuple(a for a in AUTOATTACK_ATTACKS if a in attacks)
        self.norm, self.iters, self.restarts, self.targets = norm, int(iters), int(restarts), int(targets)
        self.seed, self.carry_flips, self.batch_size = int(seed), bool(carry_flips), int(batch_size)

    def start(self, model: nn.Module, kappas: np.ndarray, device: torch.device) -> None:
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
        self.k, self.dev, self.model = kappas, device, model.to(device)
        lib_norm = {"linf": "Linf", "l2": "L2"}[self.norm]
        log = logging.getLogger("auto-attack")
        common = dict(n_iter=self.iters, norm=lib_norm, n_restarts=self.restarts, eps=1.0, seed=self.seed,
                      eot_iter=1, rho=0.75, verbose=False, device=device, logger=log)
        self.apgd = APGDAttack(self.model, loss="ce", **common)
        self.apgd_t = APGDAttack_targeted(self.model, n_target_classes=self.targets, **common)
        self.targets_used: int | None = None
        self.classes: int | None = None

    def skipped(self, classes: int) -> dict[str, str]:
        """Attacks whose loss the model's number of classes does not allow (pyautoattack would crash)."""
        need = {"apgd-dlr": 3, "apgd-t": 4}  # DLR divides by z_1 - z_3, targeted DLR by z_1 - (z_3 + z_4) / 2
        return {a: f"its DLR loss needs >= {need[a]} classes; the model has {classes}" for a in self.attacks
                if classes < need.get(a, 0)}

    def _runs(self, attack: str, classes: int) -> list[tuple[int, int]]:
        """(target rank, restart) of each run of ``attack``: rank 0 for the untargeted ones."""
        ranks = range(2, min(self.targets, classes - 1) + 2) if attack == "apgd-t" else [0]
        return [(t, r) for t in ranks for r in range(self.restarts)]

    def update(self, x: torch.Tensor, index: np.ndarray) -> BatchResult:
        with torch.random.fork_rng(devices=[]):  # the library's discarded draws leave the caller's RNG alone
            return self._update(x, index)

    def _update(self, x: torch.Tensor, index: np.ndarray) -> BatchResult:
        model, k, dev, norm = self.model, self.k, self.dev, self.norm
        x = x.to(dev).contiguous()  # APGD-T reshapes with .view: a non-contiguous batch would crash it
        b, J, shape = x.shape[0], k.size, tuple(x.shape[1:])
        with torch.no_grad():
            logits = model(x)
        pred = logits.argmax(1)
        ranking = logits.sort(dim=1)[1]  # APGD-T's targets: the classes ranked 2nd, 3rd, ... on the clean input
        classes = logits.shape[1]
        skipped = self.skipped(classes)
        self.classes, self.targets_used = classes, (min(self.targets, classes - 1) if "apgd-t" not in skipped else 0)
        fwd, bwd = b, 0
        found = torch.zeros(b, J, dtype=torch.bool)
        by_attack = {a: [0] * J for a in self.attacks}
        unconfirmed = [0] * J
        for j, kappa in enumerate(k):
            if kappa == 0:
                continue
            for attack in (a for a in self.attacks if a not in skipped):
                obj = self.apgd_t if attack == "apgd-t" else self.apgd
                if attack != "apgd-t":
                    obj.loss = "ce" if attack == "apgd-ce" else "dlr"
                obj.eps = obj.eps_orig = float(kappa)
                obj.init_hyperparam(x)
                for target, restart in self._runs(attack, classes):
                    alive = ~found[:, j]
                    if self.carry_flips and j > 0:
                        alive &= ~found[:, :j].any(1)
                    ids = torch.nonzero(alive).flatten()
                    if ids.numel() == 0:
                        break
                    idd = ids.to(dev)
                    xs, ys = x[idd], pred[idd]
                    start = torch.stack([_start_point(norm, float(kappa), shape, self.seed, int(index[int(i)]),
                                                      _CODE[attack], target, restart) for i in ids]).to(dev)
                    x_init = (xs + start).contiguous()
                    if attack == "apgd-t":
                        obj.y_target = ranking[idd, -target]
                    _, acc, _, x_adv = obj.attack_single_run(xs, ys, x_init=x_init)
                    fwd += ids.numel() * (self.iters + 1)
                    bwd += ids.numel() * (self.iters + 1)
                    hit = torch.nonzero(~acc).flatten()
                    if hit.numel() == 0:
                        continue
                    # a flip counts only if the flipping point, evaluated again, flips and lies in the ball
                    xa = x_adv[hit].detach()
                    with torch.no_grad():
                        again = model(xa).argmax(1) != ys[hit]
                    fwd += hit.numel()
                    d = (xa - xs[hit]).flatten(1)
                    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
                    inside = size <= float(kappa) * (1 + 1e-5) + 1e-7
                    ok = (again & inside).cpu()
                    unconfirmed[j] += int((~ok).sum())
                    new = ids[hit.cpu()[ok]]
                    found[new, j] = True
                    by_attack[attack][j] += int(new.numel())
        fnp = found.numpy()
        if self.carry_flips:
            fnp = np.logical_or.accumulate(fnp, axis=1)
        counts: dict[str, Any] = {"forward": fwd, "backward": bwd, "unconfirmed": unconfirmed}
        counts.update({f"flips_{a}": v for a, v in by_attack.items()})
        return BatchResult(index=index, stable=~fnp, pred=pred.cpu().numpy().astype(np.int64), counts=counts)

    def evidence(self, counts: dict[str, Any], n: int) -> dict[str, Any]:
        fwd, bwd = int(counts.get("forward", 0)), int(counts.get("backward", 0))
        J = len(self.k)
        standard = {"attacks": self.attacks, "iters": self.iters, "restarts": self.restarts,
                    "targets": self.targets} == STANDARD
        return {"method": "autoattack", "sound": False, "norm": self.norm, "units": UNITS, "kappas": self.k.tolist(),
                "implementation": f"pyautoattack {getattr(self.pya, '__version__', '?')} "
                                  "(official AutoAttack, Croce & Hein 2020): APGDAttack.attack_single_run",
                "attacks": list(self.attacks), "not_run": ["fab-t", "square"],
                "skipped": self.skipped(self.classes) if self.classes is not None else {},
                "standard_apgd_settings": bool(standard),
                "iters": self.iters, "restarts": self.restarts, "targets": self.targets,
                "targets_used": self.targets_used, "rho": 0.75, "eot_iter": 1,
                "step_size": "APGD's adaptive schedule: 2 * kappa, halved at checkpoints where the loss stalls",
                "random_start": f"APGD's: a point on the {self.norm} sphere of radius kappa, clipped to [0,1]",
                "target": "predicted label (untargeted; apgd-t aims at the classes ranked 2nd.. by the clean logits)",
                "seed": self.seed, "seed_scheme": "random start of (sample i, radius kappa, attack a, target t, "
                "restart r) from a torch.Generator seeded with derive_seed(seed, i, float64 bits of kappa, a, t, r)",
                "carry_flips": self.carry_flips, "clip": [0.0, 1.0], "batch_size": self.batch_size, "n": int(n),
                "flips_by_attack": {a: list(counts.get(f"flips_{a}", [0] * J)) for a in self.attacks},
                "unconfirmed": list(counts.get("unconfirmed", [0] * J)),
                "model_evals": {"forward": fwd, "backward": bwd, "total": fwd + bwd}}


def autoattack_stability(model: nn.Module, source: DataSource, kappas: Sequence[float] | np.ndarray, *,
                         norm: str = "linf", attacks: Sequence[str] = STANDARD["attacks"],
                         iters: int = STANDARD["iters"], restarts: int = STANDARD["restarts"],
                         targets: int = STANDARD["targets"], seed: int = 0, carry_flips: bool = True,
                         batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = None,
                         progress_bar: bool = True, indices: np.ndarray | None = None) -> StabilityResult:
    """Stable flags bool[n, J] for the whole kappa grid from AutoAttack's APGD-CE + APGD-T (module doc).

    Needs the optional package ``pyautoattack`` (``pip install -c constraints.txt 'genbound[autoattack]'``).
    ``indices``: only these positions of the source (a shard or a subsample).
    """
    engine = AutoAttackEngine(norm=norm, attacks=attacks, iters=iters, restarts=restarts, targets=targets, seed=seed,
                              carry_flips=carry_flips, batch_size=batch_size)
    k = check_kappas(kappas, norm=norm, dim=source.dim)
    return run_engine(engine, model, source, k, batch_size=batch_size, device=device, indices=indices,
                      progress_bar=progress_bar, desc=f"AutoAttack-{norm} {source.name}")
