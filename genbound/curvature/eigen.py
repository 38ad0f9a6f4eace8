"""Top Hessian eigenvalues of the mean cross-entropy on frozen examples.

``H = sum_b (n_b / N) H_b`` over the chosen parameter tensors (jointly: cross blocks included).
Two methods:

- ``"power"``: power iteration with deflation (as PyHessian's ``eigenvalues()``, Yao et al. 2020):
  for the j-th eigenpair, iterate ``v <- H v / ||H v||`` with ``v`` kept orthogonal to the
  eigenvectors already found (Gram-Schmidt), until the Rayleigh quotient ``v^T H v`` changes by
  less than ``tol`` relative. Converges to the eigenvalues of largest **magnitude**.
- ``"lanczos"``: ``scipy.sparse.linalg.eigsh(which="LA")`` (implicitly restarted Lanczos, ARPACK)
  on a ``LinearOperator`` of Hessian-vector products: the **largest algebraic** eigenvalues.

Hessian-vector products are double-backward products; with ``cache_graphs=True`` the gradient
graph of every batch is built once and kept (memory grows with the data), otherwise rebuilt for
every product.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from genbound.curvature._common import (
    Batch,
    as_batches,
    batch_weights,
    make_generator,
    mean_ce,
    model_dtype,
    model_mode,
    resolve_params,
)
from genbound.torch_utils import resolve_device
from genbound.errors import UserInputError


class HessianOperator:
    """``v -> H v`` for the Hessian of the mean CE over ``batches`` w.r.t. ``tensors``.

    Must be used inside :func:`genbound.curvature._common.model_mode` (the caller's job).
    Vectors are lists of tensors shaped like ``tensors``.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[Batch],
        tensors: Sequence[torch.Tensor],
        *,
        cache_graphs: bool | None = None,
    ) -> None:
        self.model = model
        self.batches = list(batches)
        self.tensors = list(tensors)
        self.weights, self.n_examples = batch_weights(self.batches)
        self.cache = len(self.batches) == 1 if cache_graphs is None else bool(cache_graphs)
        self._grads: list[tuple[torch.Tensor, ...]] | None = None
        self.n_products = 0

    def _grad(self, b: int) -> tuple[torch.Tensor, ...]:
        if self.cache:
            if self._grads is None:
                self._grads = [self._build(x, y) for x, y in self.batches]
            return self._grads[b]
        x, y = self.batches[b]
        return self._build(x, y)

    def _build(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.autograd.grad(mean_ce(self.model, x, y), self.tensors, create_graph=True)

    def matvec(self, v: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = [torch.zeros_like(t) for t in self.tensors]
        for b, w in enumerate(self.weights):
            g = self._grad(b)
            hv = torch.autograd.grad(g, self.tensors, grad_outputs=list(v), retain_graph=self.cache)
            for o, h in zip(out, hv):
                o.add_(h.detach(), alpha=w)
        self.n_products += 1
        return out

    def release(self) -> None:
        self._grads = None


@dataclass
class EigenResult:
    """Top eigenvalues (descending by the method's order) and unit eigenvectors.

    ``eigenvectors[j]`` is a dict ``{name: tensor}`` shaped like the parameters.
    """

    eigenvalues: list[float]
    eigenvectors: list[dict[str, torch.Tensor]]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"eigenvalues": list(self.eigenvalues), "info": dict(self.info)}


def _dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))  # type: ignore[return-value]


def _normalize(v: list[torch.Tensor]) -> list[torch.Tensor]:
    n = torch.sqrt(_dot(v, v))
    return [x / (n + 1e-30) for x in v]


def top_eigenvalues(
    model: nn.Module,
    data: Batch | Iterable[Batch],
    *,
    k: int = 1,
    params: Sequence[str] | str | None = None,
    method: str = "power",
    max_iter: int = 100,
    tol: float = 1e-4,
    bn_mode: str = "eval",
    batch_size: int | None = 256,
    cache_graphs: bool | None = None,
    seed: int | None = 0,
    device: torch.device | str | None = None,
) -> EigenResult:
    """Top-``k`` eigenvalues of the Hessian over the selected tensors (jointly).

    Args:
        k: number of eigenpairs.
        params: ``None`` = WCI layers, ``"all"``, or a list of names (the Hessian is over all of
            them jointly, cross blocks included).
        method: ``"power"`` (largest magnitude, deflation) or ``"lanczos"`` (largest algebraic).
        max_iter: power iterations per eigenpair, or Lanczos restarts' ``maxiter``.
        tol: relative tolerance on the eigenvalue.
        cache_graphs: keep every batch's gradient graph between products (default: only when
            there is a single batch).
    """
    if method not in ("power", "lanczos"):
        raise UserInputError(f"method must be 'power' or 'lanczos', got {method!r}")
    if int(k) < 1:
        raise UserInputError(f"k must be at least 1, got {k}")
    dev = resolve_device(device, model)
    specs, tensors = resolve_params(model, params)
    batches = as_batches(data, batch_size=batch_size, device=dev, dtype=model_dtype(model))
    dim = sum(t.numel() for t in tensors)
    if int(k) > dim:
        raise UserInputError(f"k={k} exceeds the number of selected parameters ({dim})")
    gen = make_generator(seed, dev)
    t0 = time.perf_counter()
    with model_mode(model, bn_mode, params=tensors):
        op = HessianOperator(model, batches, tensors, cache_graphs=cache_graphs)
        if method == "power":
            vals, vecs = _power(op, int(k), max_iter, tol, gen)
        else:
            vals, vecs = _lanczos(op, int(k), max_iter, tol, gen)
        op.release()
    info = {
        "method": method,
        "params": [s.name for s in specs],
        "bn_mode": bn_mode,
        "n_examples": op.n_examples,
        "hvp_products": op.n_products,
        "seed": seed,
        "seconds": time.perf_counter() - t0,
    }
    names = [s.name for s in specs]
    return EigenResult(vals, [dict(zip(names, v)) for v in vecs], info)


def _power(
    op: HessianOperator, k: int, max_iter: int, tol: float, gen: torch.Generator
) -> tuple[list[float], list[list[torch.Tensor]]]:
    vals: list[float] = []
    vecs: list[list[torch.Tensor]] = []
    for _ in range(k):
        v = _normalize([torch.randn(t.shape, generator=gen, device=t.device, dtype=t.dtype) for t in op.tensors])
        lam: float | None = None
        for _ in range(max_iter):
            for u in vecs:  # deflation: stay orthogonal to the eigenvectors found so far
                c = _dot(v, u)
                v = [a - c * b for a, b in zip(v, u)]
            v = _normalize(v)
            hv = op.matvec(v)
            new = float(_dot(hv, v))
            v = _normalize(hv)
            if lam is not None and abs(new - lam) <= tol * (abs(lam) + 1e-12):
                lam = new
                break
            lam = new
        vals.append(float(lam))  # type: ignore[arg-type]
        vecs.append(v)
    return vals, vecs


def _lanczos(
    op: HessianOperator, k: int, max_iter: int, tol: float, gen: torch.Generator
) -> tuple[list[float], list[list[torch.Tensor]]]:
    from scipy.sparse.linalg import LinearOperator, eigsh

    shapes = [t.shape for t in op.tensors]
    sizes = [t.numel() for t in op.tensors]
    ref = op.tensors[0]
    dim = sum(sizes)

    def split(flat: np.ndarray) -> list[torch.Tensor]:
        t = torch.as_tensor(np.asarray(flat, dtype=np.float64).reshape(-1)).to(device=ref.device, dtype=ref.dtype)
        return [p.view(s) for p, s in zip(torch.split(t, sizes), shapes)]

    def mv(flat: np.ndarray) -> np.ndarray:
        hv = op.matvec(split(flat))
        return torch.cat([h.reshape(-1) for h in hv]).double().cpu().numpy()

    v0 = torch.randn(dim, generator=gen, device=ref.device, dtype=torch.float64).cpu().numpy()
    lin = LinearOperator((dim, dim), matvec=mv, dtype=np.float64)
    w, u = eigsh(lin, k=k, which="LA", v0=v0, maxiter=max_iter * dim, tol=tol)
    order = np.argsort(w)[::-1]
    return [float(w[i]) for i in order], [split(u[:, i]) for i in order]
