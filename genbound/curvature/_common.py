"""Shared plumbing of the curvature estimators: parameter selection, data batching, model mode.

Nothing here is an estimator. The rules every estimator follows:

- The loss is the **mean cross-entropy** over all examples handed over; with several batches the
  per-batch quantities are averaged with weights ``n_b / N``, so every estimate is of the curvature
  of the dataset-mean loss, not of a per-batch mean.
- Examples are used as given (frozen): nothing here differentiates with respect to the inputs.
- The caller's model is left as it was found: training flags, ``requires_grad`` flags, BatchNorm
  running statistics (see :func:`model_mode`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from genbound.errors import UserInputError
from genbound.torch_utils import model_mode as shared_model_mode

Batch = tuple[torch.Tensor, torch.Tensor]

BN_MODES = ("eval", "train")

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    _BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter tensor an estimator works on: its qualified name and its group.

    ``group`` is ``"weight"`` (a Conv*d / Linear weight, ndim >= 2: the WCI layers),
    ``"bias"`` (a Conv*d / Linear bias) or ``"norm"`` (a normalization layer's affine parameter),
    or ``"other"`` for a parameter named explicitly by the caller.
    """

    name: str
    group: str


def wci_parameters(
    model: nn.Module, *, include_biases: bool = False, include_norm: bool = False
) -> list[ParamSpec]:
    """The parameter tensors of WCI (spec wci.md §1), in module order.

    Layers are the weight tensors (ndim >= 2) of ``Conv*d`` (``torch.nn.modules.conv._ConvNd``,
    transposed convolutions included) and ``Linear`` modules. Optional groups: their biases
    (``include_biases``) and the affine parameters of normalization layers (``include_norm``).
    """
    out: list[ParamSpec] = []
    seen: set[int] = set()
    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(mod, (_ConvNd, nn.Linear)):
            w = getattr(mod, "weight", None)
            if isinstance(w, nn.Parameter) and w.ndim >= 2 and id(w) not in seen:
                seen.add(id(w))
                out.append(ParamSpec(prefix + "weight", "weight"))
            b = getattr(mod, "bias", None)
            if include_biases and isinstance(b, nn.Parameter) and id(b) not in seen:
                seen.add(id(b))
                out.append(ParamSpec(prefix + "bias", "bias"))
        elif include_norm and isinstance(mod, _NORM_TYPES):
            for pname in ("weight", "bias"):
                p = getattr(mod, pname, None)
                if isinstance(p, nn.Parameter) and id(p) not in seen:
                    seen.add(id(p))
                    out.append(ParamSpec(prefix + pname, "norm"))
    return out


def resolve_params(
    model: nn.Module, params: Sequence[str] | str | None
) -> tuple[list[ParamSpec], list[nn.Parameter]]:
    """Turn a parameter selection into specs and the parameter tensors.

    ``params`` is ``None`` (the WCI layers, :func:`wci_parameters`), ``"all"`` (every parameter
    of the model, as PyHessian uses) or a sequence of qualified parameter names.
    """
    named = dict(model.named_parameters())
    if params is None:
        specs = wci_parameters(model)
    elif isinstance(params, str):
        if params != "all":
            raise UserInputError(
                f"params={params!r} is not understood; pass None (WCI layers), 'all', or a list of "
                "parameter names from model.named_parameters()"
            )
        specs = [ParamSpec(n, _group_of(model, n)) for n in named]
    else:
        specs = []
        for n in params:
            if n not in named:
                close = [k for k in named if k.split(".")[-1] == n.split(".")[-1]][:5]
                raise UserInputError(
                    f"parameter {n!r} is not in the model; names look like {close or list(named)[:5]}"
                )
            specs.append(ParamSpec(n, _group_of(model, n)))
    if not specs:
        raise UserInputError(
            "no parameters selected: the model has no Conv*d/Linear weight tensors; pass params=[...] "
            "with names from model.named_parameters()"
        )
    return specs, [named[s.name] for s in specs]


def _group_of(model: nn.Module, name: str) -> str:
    mod_name, _, pname = name.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    if isinstance(mod, (_ConvNd, nn.Linear)):
        return "weight" if pname == "weight" and getattr(mod, pname).ndim >= 2 else "bias"
    if isinstance(mod, _NORM_TYPES):
        return "norm"
    return "other"


def model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def as_batches(
    data: Batch | Iterable[Batch],
    *,
    batch_size: int | None = None,
    device: torch.device,
    dtype: torch.dtype,
) -> list[Batch]:
    """Normalize ``data`` to a list of ``(x, y)`` batches on ``device``.

    ``data`` is either one pair of tensors ``(x, y)`` (split into chunks of ``batch_size`` when
    given) or an iterable of such pairs (a ``DataLoader``, a list). Inputs are cast to ``dtype``
    (the model's), labels to ``long``. The batches are kept (they are frozen examples, reused by
    every probe or iteration).
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
        isinstance(t, torch.Tensor) for t in data
    ) and data[0].ndim >= 1 and data[1].ndim == 1 and data[0].shape[0] == data[1].shape[0]:
        x, y = data
        n = x.shape[0]
        step = n if batch_size is None else int(batch_size)
        if step <= 0:
            raise UserInputError(f"batch_size must be positive, got {batch_size}")
        pairs: Iterable[Batch] = [(x[i : i + step], y[i : i + step]) for i in range(0, n, step)]
    else:
        pairs = data  # type: ignore[assignment]
    out: list[Batch] = []
    try:
        for item in pairs:
            x, y = item[0], item[1]
            if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
                raise TypeError
            if x.shape[0] != y.shape[0]:
                raise UserInputError(
                    f"a batch has {x.shape[0]} inputs but {y.shape[0]} labels; pass (x, y) pairs of equal length"
                )
            if x.shape[0] == 0:
                continue
            out.append((x.to(device=device, dtype=dtype), y.to(device=device, dtype=torch.long)))
    except (TypeError, IndexError):
        raise UserInputError(
            "data must be a pair of tensors (x, y) or an iterable of (x, y) batches (e.g. a DataLoader)"
        ) from None
    if not out:
        raise UserInputError("data is empty: pass at least one example")
    return out


def batch_weights(batches: Sequence[Batch]) -> tuple[list[float], int]:
    """Weights ``n_b / N`` that turn per-batch means into the dataset mean, and ``N``."""
    sizes = [int(x.shape[0]) for x, _ in batches]
    total = sum(sizes)
    return [s / total for s in sizes], total


@contextlib.contextmanager
def model_mode(
    model: nn.Module, bn_mode: str, *, params: Sequence[nn.Parameter] = ()
) -> Iterator[nn.Module]:
    """Put ``model`` in the state the curvature estimators need, and restore it afterwards.

    - Every module goes to eval mode (dropout off); with ``bn_mode="train"`` the BatchNorm modules
      alone go to train mode, i.e. normalize with the statistics of each batch.
    - BatchNorm running statistics are never changed: in train mode tracking is switched off for
      the duration (``track_running_stats=False``, so no buffer is written, which also keeps
      ``torch.func`` transforms working), and all buffers are snapshotted and restored anyway.
    - ``params`` get ``requires_grad=True`` and all other parameters ``False`` for the duration
      (less graph to build); the caller's flags are restored.
    - A model handed over in train mode triggers a ``UserWarning`` (its mode is restored after).
    """
    if bn_mode not in BN_MODES:
        raise UserInputError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
    if model.training:
        warnings.warn(
            f"the model was handed over in train mode; curvature is computed with bn_mode={bn_mode!r} "
            "(dropout off) and the model's train mode is restored afterwards. Call model.eval() first "
            "to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    tracking = {m: m.track_running_stats for m in bns}
    buffers = {
        (m, name): b.detach().clone() for m in bns for name, b in m.named_buffers(recurse=False)
    }
    # eval mode and the gradient flags (restored by the shared context), then BatchNorm's own state
    with shared_model_mode(model, grad_only=params, warn=False):
        try:
            if bn_mode == "train":
                for m in bns:
                    m.train()
                    m.track_running_stats = False
            yield model
        finally:
            for m, was in tracking.items():
                m.track_running_stats = was
            with torch.no_grad():
                for (m, name), saved in buffers.items():
                    cur = getattr(m, name)
                    if cur is not None:
                        cur.copy_(saved)


def rademacher_like(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A tensor of independent +-1 entries shaped like ``t``."""
    r = torch.randint(0, 2, t.shape, generator=generator, device=t.device, dtype=torch.int8)
    return r.to(t.dtype).mul_(2).sub_(1)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def stable_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in float64, written so that its first and second derivatives are exact
    to rounding even for a saturated softmax (``1 - p_max`` far below the dtype's epsilon).

    With ``m = argmax_c z_c`` (held fixed: a piecewise-constant choice) and
    ``s = sum_{c != m} exp(z_c - z_m)``,

        CE(z, y) = logsumexp(z) - z_y = z_m + log1p(s) - z_y.

    Every derivative autograd (reverse or forward mode, ``torch.func`` included) takes through
    this form is a sum of non-negative small terms: ``1 - p_m = s / (1 + s)`` and the Hessian in
    the logits ``diag(p) - p p^T`` come out with relative accuracy near float64's epsilon, where
    ``torch.nn.functional.cross_entropy`` forms ``p_m - p_m^2`` by cancellation (in float32 it is
    0 once ``1 - p_m < 6e-8``, which halves the curvature of a network at adversarial inputs; in
    float64 it loses all digits below ``1 - p_m ~ 1e-16``). The logits are cast to float64 first
    (a few numbers per example); the network itself stays in its own dtype, and the gradient flows
    back into it in that dtype.
    """
    z = logits.to(torch.float64)
    m = z.detach().argmax(dim=1, keepdim=True)
    zm = z.gather(1, m)
    others = torch.arange(z.shape[1], device=z.device) != m
    s = (torch.exp(z - zm) * others).sum(dim=1)
    zy = z.gather(1, y.view(-1, 1).to(torch.long))
    return (zm.squeeze(1) + torch.log1p(s) - zy.squeeze(1)).mean()


def mean_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on a batch, the loss every estimator works on
    (:func:`stable_cross_entropy` of the logits: float64, exact curvature at saturation)."""
    return stable_cross_entropy(model(x), y)


def softmax_stable(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(p, one_minus_p, m)`` in float64 for a batch of logits ``(B, C)``.

    ``1 - p_c`` is formed without cancellation: ``s / (1 + s)`` for the top class ``m``
    (``s = sum_{c != m} exp(z_c - z_m)``), ``1 - p_c`` directly for the others (``p_c <= 1/2``).
    """
    z = logits.detach().to(torch.float64)
    m = z.argmax(dim=1, keepdim=True)
    e = torch.exp(z - z.gather(1, m))
    top = torch.arange(z.shape[1], device=z.device) == m
    s = (e * ~top).sum(dim=1, keepdim=True)
    p = e / (1.0 + s)
    one_minus = torch.where(top, s / (1.0 + s), 1.0 - p)
    return p, one_minus, m


def softmax_hessian_product(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``(diag p_i - p_i p_i^T) u_i`` for every row ``i``: the Hessian of ``CE(z_i, y)`` in the
    logits applied to ``u_i`` (it does not depend on ``y``), float64, without cancellation.

    ``(H u)_c = p_c (w_c - p . w)`` with ``w = u - u_m`` (``H`` annihilates constant vectors, so
    the shift is free); ``w_m = 0``, so ``p . w`` sums only the small ``p_c`` of the other classes.
    """
    p, _, m = softmax_stable(logits)
    u = u.to(torch.float64)
    w = u - u.gather(1, m)
    return p * (w - (p * w).sum(dim=1, keepdim=True))


def ce_logit_gradients(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(p, G)`` with ``G[i, c] = p_i - e_c``, the gradient of ``CE(z_i, c)`` in the logits, for
    every class ``c``: shape ``(B, C, C)``, float64; the diagonal ``p_c - 1 = -(1 - p_c)`` is
    taken from :func:`softmax_stable` (no cancellation when ``p_c`` is near 1).

    ``sum_c p_c G[i, c] G[i, c]^T = diag p_i - p_i p_i^T`` (the Fisher identity of cross-entropy).
    """
    p, one_minus, _ = softmax_stable(logits)
    g = p.unsqueeze(1).expand(-1, p.shape[1], -1).clone()
    g.diagonal(dim1=1, dim2=2).copy_(-one_minus)
    return p, g
