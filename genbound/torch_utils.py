"""Small helpers shared by the torch layers: devices, seeds, progress bars, array checks.

Nothing here is specific to one layer; ``genbound/bounds`` never imports this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from typing import Any, Iterable, Iterator, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from genbound.errors import UserInputError
from genbound.fileio import available_memory, write_bytes
from genbound.kappas import check_kappas  # noqa: F401  (the one kappa validation; re-exported)

T = TypeVar("T")

_MASK64 = (1 << 64) - 1


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` lives: the device of its first parameter or buffer (CPU if it has none)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None = None, model: nn.Module | None = None) -> torch.device:
    """The one device policy of genbound.

    - ``device`` given: that device (``'cpu'``, ``'cuda'``, ``'cuda:N'``; CUDA must be available).
    - ``device=None`` with a ``model``: the model's own device. Functions that analyse a model they
      are handed (collect, stability, curvature) pass it and never move it, as PyTorch's own
      functions never move a module; an explicit ``device`` other than the model's is an error that
      says how to fix it.
    - ``device=None`` without a model: CUDA when available, else CPU. This is where genbound
      *places* the models it owns: :func:`~genbound.models.load_model`, the trainers and
      :func:`~genbound.pipeline.evaluate` resolve the run's device this way and move the model
      there once, before any analysis.
    """
    if device is None:
        if model is not None:
            return model_device(model)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UserInputError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for but CUDA is not available; use device='cpu'")
    if model is not None:
        have = model_device(model)
        if dev.type != have.type or (dev.index is not None and dev.index != have.index):
            raise UserInputError(f"the model is on {have} but device={str(dev)!r} was asked; move the model "
                                 f"first (model.to({str(dev)!r})) or leave device=None")
        return have
    return dev


def derive_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (SplitMix64 mixing of each part in order).

    Used to give every (sample index, kappa index, restart, ...) its own random stream, so a
    sample's random draws do not depend on which other samples share its batch.
    """
    z = 0x9E3779B97F4A7C15
    for p in parts:
        z = (z + (int(p) & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        z = z ^ (z >> 31)
    return z & ((1 << 63) - 1)


def float_key(value: float) -> int:
    """The IEEE-754 bit pattern of ``float(value)`` as an int (to seed a stream by a radius's value)."""
    return int(np.float64(value).view(np.int64))


def generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` ``(seed, *parts)``."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *parts))
    return g


def progress(iterable: Iterable[T], *, enabled: bool = True, desc: str | None = None,
             total: int | None = None, unit: str = "it") -> Iterator[T]:
    """tqdm progress bar over ``iterable``; ``enabled=False`` turns it off."""
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled,
                     leave=False, dynamic_ncols=True))


def progress_counter(total: int, *, enabled: bool = True, desc: str | None = None, unit: str = "it") -> Any:
    """A tqdm bar moved by hand (``update(k)``, or set ``n`` then ``refresh()``; ``close()`` at the end)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True)


def array_hash(a: Any) -> str:
    """Short SHA-256 of an integer array (used to record which indices a split/partition used)."""
    arr = np.ascontiguousarray(np.asarray(a, dtype=np.int64))
    return "sha256:" + hashlib.sha256(arr.tobytes()).hexdigest()[:16]


@contextlib.contextmanager
def model_mode(model: nn.Module, *, training: bool = False, grad: bool | None = None,
               grad_only: Iterable[nn.Parameter] | None = None, warn: bool = True,
               what: str = "the pass") -> Iterator[nn.Module]:
    """Put ``model`` (every submodule) in eval mode (``training=True``: train mode) for the block and,
    with ``grad`` given, set ``requires_grad`` of every parameter to it (``False``: input gradients
    only, the backward pass skips weight gradients), or with ``grad_only`` given, of those
    parameters alone (every other off); afterwards restore each submodule's ``training`` flag and
    each parameter's flag. Warns when an eval-mode pass gets a model in train mode (BatchNorm
    statistics and dropout in train mode give wrong numbers)."""
    saved = [(m, m.training) for m in model.modules()]
    wanted = None if grad_only is None else {id(p) for p in grad_only}
    flags = [(p, p.requires_grad) for p in model.parameters()] if grad is not None or wanted is not None else []
    if warn and model.training and not training:
        warnings.warn(f"model was in train mode; {what} runs it in eval mode (BatchNorm running statistics, "
                      "no dropout) and restores train mode afterwards. Call model.eval() to silence this.",
                      UserWarning, stacklevel=3)
    model.train(training)
    for p, _ in flags:
        p.requires_grad_(bool(grad) if wanted is None else id(p) in wanted)
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag
        for p, flag in flags:
            p.requires_grad_(flag)


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``: on CUDA the driver's free memory plus what
    PyTorch's allocator holds unused; on CPU :func:`genbound.fileio.available_memory`; ``None``
    where it cannot be known."""
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0]) + int(cached)
    return available_memory() if device.type == "cpu" else None


def _matmul_precision_switches() -> list[Any]:
    """The per-backend float32 matmul precision switches of this torch (CUDA's and oneDNN's
    ``fp32_precision``; empty before torch 2.9, which has only the process-wide setting)."""
    found = []
    for backend in (torch.backends.cuda, torch.backends.mkldnn):
        sw = getattr(backend, "matmul", None)
        if sw is not None and hasattr(sw, "fp32_precision"):
            found.append(sw)
    return found


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """Float32 matrix products at full float32 precision inside the block, whatever the process set
    (``torch.set_float32_matmul_precision("high")``, common in training scripts, or the per-backend
    ``torch.backends.cuda.matmul.fp32_precision = "tf32"`` let CUDA use TF32 and oneDNN TF32 or
    bfloat16: 10 or 8 significand bits, enough to move a nearest-centroid decision). The previous
    settings are restored on exit."""
    switches = _matmul_precision_switches()
    if switches:  # the per-backend switches override the process-wide one, whichever API the caller used
        before = [sw.fp32_precision for sw in switches]
        for sw in switches:
            sw.fp32_precision = "ieee"
        try:
            yield
        finally:
            for sw, value in zip(switches, before):
                sw.fp32_precision = value
        return
    legacy = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(legacy)


def refuse_train_mode(model: nn.Module, what: str) -> None:
    """UserInputError if a BatchNorm or Dropout module is in training mode: the model's output is
    then not a fixed function of its input, and a proof about it would be about another function."""
    for name, m in model.named_modules():
        if m.training and isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)):
            raise UserInputError(
                f"module '{name or type(m).__name__}' ({type(m).__name__}) is in training mode; "
                f"call model.eval() before {what}"
            )


def save_torch(obj: Any, path: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically (no partial file on a full disk or a killed run).

    Serialized in memory first: torch reports a failed write as a RuntimeError, Python's own file
    write as the OSError that :mod:`genbound.fileio` turns into a one-line error naming the path.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getbuffer())
