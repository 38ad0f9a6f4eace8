"""The verifier's entry points: :class:`SoundEngine` (the stability engine of methods ``ibp``,
``crown`` and ``exact``) and :func:`sound_stability` (the same on an in-memory tensor).

Per batch and per kappa (ascending), the samples still proven are certified by
:func:`certify_batch`: the compiled graph is checked against the model's own forward pass
(:func:`structure_mismatch`), then the margin lower bounds of
:func:`~genbound.stability.sound.propagate.margin_lower_bounds` must exceed the tolerance;
``exact`` decides the rest with :class:`~genbound.stability.sound.exact.ExactSearch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from genbound import names
from genbound.errors import UserInputError
from genbound.stability.engine import BatchResult, merge_batches
from genbound.stability.sound.exact import ExactSearch
from genbound.stability.sound.graph import Net, UnsupportedModelError, compile_network
from genbound.stability.sound.propagate import InputSet, margin_lower_bounds
from genbound.kappas import check_kappas
from genbound.torch_utils import model_mode, refuse_train_mode, resolve_device

__all__ = ["DEFAULT_RTOL", "EXACT_MAX_DIM", "RADIUS_INFLATION", "SOUND_METHODS", "SoundEngine", "SoundStabilityResult",
           "certify_batch", "sound_stability", "structure_mismatch"]

SOUND_METHODS = names.SOUND_METHODS
DEFAULT_RTOL = 1e-9
RADIUS_INFLATION = 1e-9
EXACT_MAX_DIM = 8


@dataclass
class SoundStabilityResult:
    """``stable[i, j]``: sample i proven stable at ``kappas[j]``; ``evidence``: how."""

    stable: np.ndarray  # bool[n, J]
    evidence: dict
    margin_lb: np.ndarray = field(repr=False, default=None)  # float64[n, J], nan where not tried
    status: np.ndarray = field(repr=False, default=None)  # str codes per (i, j), see evidence


def _validate(x, kappas, norm, method, domain):
    if method not in SOUND_METHODS:
        raise UserInputError(f"unknown sound stability method {method!r}; use one of {', '.join(SOUND_METHODS)}")
    if norm not in ("linf", "l2"):
        raise UserInputError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    # radii are bounded by the cube only when the domain is the unit cube
    k = check_kappas(kappas, norm=norm if tuple(domain or ()) == (0.0, 1.0) else "unbounded",
                     dim=int(np.prod(x.shape[1:])) if x.dim() >= 2 else None)
    if x.dim() < 2:
        raise UserInputError(f"x must be a batch [n, ...] of inputs, got shape {tuple(x.shape)}")
    if not torch.all(torch.isfinite(x)):
        raise UserInputError("x contains NaN or inf")
    if domain is not None:
        dlo, dhi = domain
        if x.numel() and (x.min().item() < dlo or x.max().item() > dhi):
            raise UserInputError(
                f"x has values in [{x.min().item():.4g}, {x.max().item():.4g}] outside the input domain "
                f"[{dlo}, {dhi}]; pass inputs in pre-normalization pixel units (put normalization "
                "inside the model, e.g. genbound.stability.sound.Normalize) or set domain="
            )
    if method == "exact":
        if norm != "linf":
            raise UserInputError("method 'exact' supports norm='linf' only; use method='crown' for l2")
        d = x[0].numel()
        if d > EXACT_MAX_DIM:
            raise UserInputError(
                f"method 'exact' is for tiny inputs (d <= {EXACT_MAX_DIM}); this input has d={d}: use 'crown'"
            )
    return x, k


class SoundEngine:
    """Sound stability (``ibp``, ``crown`` or ``exact``) as a
    :class:`~genbound.stability.engine.StabilityEngine`: every flag is a proof (module docstring of
    :mod:`genbound.stability.sound`). A model the verifier cannot compile, or whose compiled graph
    does not reproduce its forward pass on a batch, is ``unverified``: every flag False."""

    sound = True

    def __init__(self, method: str = "crown", *, norm: str = "linf", domain: tuple | None = (0.0, 1.0),
                 batch_size: int = 64, rtol: float = DEFAULT_RTOL, max_rows: int = 4096,
                 intermediate: str = "crown", exact_max_lps: int = 20000) -> None:
        if method not in SOUND_METHODS:
            raise UserInputError(f"unknown sound stability method {method!r}; use one of {', '.join(SOUND_METHODS)}")
        if norm not in names.NORMS:
            raise UserInputError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if method == "exact" and norm != "linf":
            raise UserInputError("method 'exact' supports norm='linf' only; use method='crown' for l2")
        if intermediate not in ("crown", "ibp"):
            raise UserInputError(f"intermediate must be 'crown' or 'ibp', got {intermediate!r}")
        if int(batch_size) < 1 or int(max_rows) < 2:
            raise UserInputError("batch_size must be >= 1 and max_rows >= 2")
        self.name = self.method = method
        self.norm, self.domain, self.batch_size, self.rtol = norm, domain, int(batch_size), float(rtol)
        self.max_rows, self.intermediate, self.exact_max_lps = int(max_rows), intermediate, int(exact_max_lps)

    def start(self, model: nn.Module, kappas: np.ndarray, device: torch.device) -> None:
        self.model, self.k = model.to(device), np.asarray(kappas, dtype=np.float64)
        self.device = device
        self.param_dtype = next((p.dtype for p in model.parameters()), torch.float32)
        self.reason: str | None = None
        try:
            self.net: Net | None = compile_network(model, device)
        except UnsupportedModelError as e:
            self.net, self.reason = None, str(e)

    def update(self, x: torch.Tensor, index: np.ndarray) -> BatchResult:
        k, J, b = self.k, self.k.size, x.shape[0]
        if self.method == "exact" and x[0].numel() > EXACT_MAX_DIM:
            raise UserInputError(f"method 'exact' is for tiny inputs (d <= {EXACT_MAX_DIM}); this input has "
                                 f"d={x[0].numel()}: use 'crown'")
        stable = np.zeros((b, J), dtype=bool)
        margin_lb = np.full((b, J), np.nan)
        status = np.full((b, J), "untried", dtype=object)
        counts: dict[str, Any] = {"proven_stable_per_kappa": [0] * J, "tried_per_kappa": [0] * J,
                                  "unverified_reason": self.reason}
        if self.method == "exact":
            counts.update(exact_unstable_per_kappa=[0] * J, exact_undecided_per_kappa=[0] * J,
                          exact_crown_proven_per_kappa=[0] * J)
        with torch.no_grad():
            pred = self.model(x.to(device=self.device, dtype=self.param_dtype)).argmax(1).cpu().numpy().astype(np.int64)
        arrays = {"margin_lb": margin_lb, "status": status}
        if self.net is None:
            status[:] = "unverified"
            return BatchResult(index, stable, pred, counts, arrays)
        alive = np.arange(b)
        for j in range(J):
            kap = float(k[j]) * (1.0 + RADIUS_INFLATION)
            proven_j = []
            for s in range(0, alive.size, self.batch_size):
                idx = alive[s : s + self.batch_size]
                ok, lbs, st = certify_batch(
                    self.net, self.model, x[idx], kap, self.norm, self.method, self.domain, self.rtol, self.device,
                    self.param_dtype, self.max_rows, self.exact_max_lps, self.intermediate,
                )
                if ok is None:  # forward mismatch: the model is not what the structure says
                    self.net, self.reason = None, st
                    counts = {key: ([0] * J if isinstance(v, list) else v) for key, v in counts.items()}
                    counts["unverified_reason"] = st
                    status[:] = "unverified"
                    return BatchResult(index, np.zeros((b, J), dtype=bool), pred, counts,
                                       {"margin_lb": np.full((b, J), np.nan), "status": status})
                margin_lb[idx, j] = lbs
                status[idx, j] = st
                proven_j.append(idx[ok])
            counts["tried_per_kappa"][j] = int(alive.size)
            alive = np.concatenate(proven_j) if proven_j else np.zeros(0, dtype=np.int64)
            stable[alive, j] = True
            counts["proven_stable_per_kappa"][j] = int(alive.size)
            if self.method == "exact":
                col = status[:, j]
                counts["exact_unstable_per_kappa"][j] = int(np.sum(col == "unstable"))
                counts["exact_undecided_per_kappa"][j] = int(np.sum(col == "undecided"))
                counts["exact_crown_proven_per_kappa"][j] = int(np.sum(col == "stable_crown"))
            if alive.size == 0:
                break
        # monotone by construction (early stop); enforce anyway: a proof at kappa_j carries down
        stable = np.flip(np.maximum.accumulate(np.flip(stable, 1), axis=1), 1).copy()
        return BatchResult(index, stable, pred, counts, arrays)

    def evidence(self, counts: dict[str, Any], n: int) -> dict[str, Any]:
        J, method, domain = self.k.size, self.method, self.domain
        reason = counts.get("unverified_reason")
        zeros = [0] * J
        get = (lambda key: zeros if reason else list(counts.get(key, zeros)))  # noqa: E731
        ev: dict[str, Any] = {
            "method": method,
            "sound": True,
            "norm": self.norm,
            "kappas": self.k.tolist(),
            "domain": None if domain is None else [float(domain[0]), float(domain[1])],
            "tolerance": {"rtol": self.rtol, "rule": "margin lower bound > rtol * (1 + max_j |logit_j(x)|)"},
            "radius_inflation": RADIUS_INFLATION,
            "arithmetic": "float64",
            "intermediate_bounds": None
            if method == "ibp"
            else ("crown (unstable neurons) intersected with ibp" if self.intermediate == "crown" else "ibp"),
            "relu_relaxation": None if method == "ibp" else "upper: chord; lower: adaptive slope (1 if u >= -l else 0)",
            "status": "unverified" if reason else "verified",
            "unsupported_reason": reason,
            "n": int(n),
            "proven_stable_per_kappa": get("proven_stable_per_kappa"),
            "tried_per_kappa": get("tried_per_kappa"),
        }
        if method == "exact":
            ev["exact"] = {
                "algorithm": "linear-region enumeration with LPs (HiGHS) and safe dual bounds, after crown",
                "complete": "up to tolerance; undecided samples are not proven",
                "max_lps": self.exact_max_lps,
                "unstable_per_kappa": get("exact_unstable_per_kappa"),
                "undecided_per_kappa": get("exact_undecided_per_kappa"),
                "crown_proven_per_kappa": get("exact_crown_proven_per_kappa"),
            }
        return ev


def sound_stability(
    model: nn.Module,
    x,
    kappas,
    *,
    norm: str = "linf",
    method: str = "crown",
    domain: tuple | None = (0.0, 1.0),
    batch_size: int = 64,
    rtol: float = DEFAULT_RTOL,
    device=None,
    progress: bool = True,
    max_rows: int = 4096,
    intermediate: str = "crown",
    exact_max_lps: int = 20000,
) -> SoundStabilityResult:
    """Prove per-sample stability of ``model``'s prediction in kappa-balls (see module docstring).

    Parameters
    ----------
    model : a network of supported modules (module docstring), in eval mode; its input is in
        pre-normalization pixel units (normalization inside the model).
    x : ``[n, *input_shape]`` inputs in ``domain``.
    kappas : strictly ascending radii, pixel units (:func:`genbound.kappas.check_kappas`).
    norm : ``"linf"`` or ``"l2"``. method : ``"ibp"``, ``"crown"`` (combined) or ``"exact"``.
    domain : ``(lo, hi)`` the input domain intersected with every ball, or None for all of R^d.
    rtol : certified iff every margin lower bound > ``rtol * (1 + max_j |z_j(x)|)``.
    max_rows : cap on rows (over the batch) of one back-substitution: the memory knob of CROWN
        intermediates (memory ~ max_rows x largest activation size x 8 bytes).
    intermediate : ``"crown"`` (default: CROWN bounds for the neurons IBP leaves unstable,
        intersected with IBP) or ``"ibp"`` (IBP intermediates only; much cheaper on large conv
        nets, still sound, looser).
    device : where the verifier runs; ``None``: the model's device (the one device policy,
        :func:`genbound.torch_utils.resolve_device`; the model is never moved).

    Returns :class:`SoundStabilityResult` with ``stable`` bool[n, J] (monotone in kappa) and
    ``evidence`` (method, sound=True, norm, tolerance, per-kappa counts, status, reason).
    """
    x, k = _validate(x, kappas, norm, method, domain)
    engine = SoundEngine(method, norm=norm, domain=domain, batch_size=batch_size, rtol=rtol, max_rows=max_rows,
                         intermediate=intermediate, exact_max_lps=exact_max_lps)
    n = x.shape[0]
    if n == 0:
        engine.k = k
        ev = engine.evidence({}, 0)
        return SoundStabilityResult(np.zeros((0, k.size), bool), ev, np.full((0, k.size), np.nan),
                                    np.full((0, k.size), "untried", dtype=object))
    from tqdm.auto import tqdm

    refuse_train_mode(model, "certifying stability")
    engine.start(model, k, resolve_device(device, model))
    batches = []
    with model_mode(model, grad=False, warn=False):
        for s in tqdm(range(0, n, engine.batch_size), desc=f"sound stability ({method}, {norm})", unit="batch",
                      disable=not progress):
            batches.append(engine.update(x[s : s + engine.batch_size], np.arange(s, min(s + engine.batch_size, n))))
    _, stable, _, counts, arrays = merge_batches(batches, k.size)
    if counts.get("unverified_reason"):
        arrays["status"][:] = "unverified"
        arrays["margin_lb"][:] = np.nan
    return SoundStabilityResult(stable, engine.evidence(counts, n), arrays["margin_lb"], arrays["status"])


def structure_mismatch(net: Net, model: nn.Module, xb: torch.Tensor, kap: float, domain, device, param_dtype):
    """Check that the compiled graph reproduces ``model`` on ``xb`` and on random points of the
    ``kap``-box around it; returns ``(x64, z64, ref)`` (``xb`` in float64, the float64 logits of the
    graph and of the model at ``xb``) or a string saying what does not match."""
    x64 = xb.to(device=device, dtype=torch.float64)
    with torch.no_grad():
        vals = net.forward(x64)
        z = vals[-1]
        if z.dim() != 2:
            return f"model output has shape {tuple(z.shape)}; expected logits [n, classes]"
        ref = model(xb.to(device=device, dtype=param_dtype)).to(torch.float64)
    if ref.shape != z.shape or not torch.allclose(ref, z, rtol=1e-4, atol=1e-4 * (1 + z.abs().max().item())):
        return (
            "the verifier's forward pass does not reproduce model(x) (max difference "
            f"{(ref - z).abs().max().item() if ref.shape == z.shape else float('nan'):.3g}); "
            "a module's forward does not match its documented structure"
        )
    # structural check away from the data too: random points of the (inflated) box around x
    gen = torch.Generator(device="cpu").manual_seed(0)
    xr = x64 + (2 * torch.rand(x64.shape, generator=gen, dtype=torch.float64) - 1).to(device) * kap
    if domain is not None:
        xr = xr.clamp(float(domain[0]), float(domain[1]))
    with torch.no_grad():
        zr = net.forward(xr)[-1]
        rr = model(xr.to(param_dtype)).to(torch.float64)
    if not torch.allclose(rr, zr, rtol=1e-4, atol=1e-4 * (1 + zr.abs().max().item())):
        return (
            "the verifier's forward pass does not reproduce model(x') near the data (max difference "
            f"{(rr - zr).abs().max().item():.3g}); a module's forward does not match its documented structure"
        )
    return x64, z, ref


def certify_batch(net, model, xb, kap, norm, method, domain, rtol, device, param_dtype, max_rows, max_lps, intermediate):
    checked = structure_mismatch(net, model, xb, kap, domain, device, param_dtype)
    if isinstance(checked, str):
        return None, None, checked
    x64, z, ref = checked
    B, nclass = z.shape
    pred = z.argmax(1)
    agree = (ref.argmax(1) == pred).cpu().numpy()
    scale = 1.0 + z.abs().max(1).values
    tol = rtol * scale
    if nclass == 1:
        ok = agree.copy()
        lbs = np.full(B, np.inf)
        return ok, lbs, np.where(ok, "stable", "not_proven").astype(object)
    inset = InputSet.ball(x64, kap, norm, domain)
    lo, hi = inset.lo, inset.hi
    with torch.no_grad():
        ibp_lb, crown_lb = margin_lower_bounds(
            net, x64, pred, inset, "ibp" if method == "ibp" else "crown", max_rows, intermediate
        )
    lb = ibp_lb if crown_lb is None else torch.maximum(ibp_lb, crown_lb)
    worst = lb.min(1).values
    ok = ((worst > tol).cpu().numpy()) & agree
    lbs = worst.cpu().numpy()
    st = np.where(ok, "stable", "not_proven").astype(object)
    if method == "exact":
        st = np.where(ok, "stable_crown", "not_proven").astype(object)
        for b in np.nonzero(~ok & agree)[0]:
            search = ExactSearch(
                net, x64[b : b + 1], int(pred[b]), lo[b].reshape(-1).cpu().numpy(), hi[b].reshape(-1).cpu().numpy(),
                float(tol[b]), max_lps, slack=1e-9,
            )
            res = search.run()
            st[b] = res
            if res == "stable":
                ok[b] = True
    return ok, lbs, st