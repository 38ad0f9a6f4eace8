"""Naming and loading models safely.

A model is named by a **factory** and an optional **weights file**:

- ``"mlp"``, ``"small_cnn"``, ``"small_resnet"``: the reference architectures;
- ``"package.module:function"``: any importable function returning an ``nn.Module`` (called with
  the keyword arguments given to :func:`load_model`);
- ``"torchvision:NAME"`` / ``"timm:NAME"``: ``torchvision.models.get_model(NAME, weights=None,
  **kwargs)`` / ``timm.create_model(NAME, pretrained=False, **kwargs)``, imported only when asked
  (optional extras: ``pip install genbound[vision]``). Nothing is ever downloaded: pretrained
  weights come from a local weights file.

Weights files are read without executing code: ``.safetensors`` with safetensors, anything else
with ``torch.load(weights_only=True)``. A checkpoint that needs arbitrary code to unpickle (a
whole pickled model, custom classes) is refused with :class:`UserInputError`; re-save it as a
state dict (``torch.save(model.state_dict(), path)``) or as safetensors.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from genbound.data.source import Normalization
from genbound.errors import UserInputError, first_line
from genbound.fileio import write_bytes
from genbound.models.architectures import ARCHITECTURES
from genbound.models.normalize import with_normalization
from genbound.models.validate import check_finite_weights
from genbound.torch_utils import resolve_device, save_torch

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def _unwrap(obj: Any, path: str) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserInputError(f"{path}: not a state dict of tensors (found {type(obj).__name__}); "
                             "save weights with torch.save(model.state_dict(), path) or safetensors")
    sd = dict(obj)
    for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel / torch.compile wrappers
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file, loaded on CPU without running code (see module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserInputError(f"weights file {path!r} not found")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return load_file(path, device="cpu")
        except Exception as exc:
            raise UserInputError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # a corrupt or foreign file, not a pickled class
            raise UserInputError(f"{path}: cannot read as a torch checkpoint (corrupt, or not written by torch.save: "
                                 f"{_weights_only_reason(exc)})") from exc
        raise UserInputError(
            f"{path}: refusing a checkpoint that needs arbitrary code to load (weights_only=True failed: "
            f"{_weights_only_reason(exc)}); re-save it as a state dict with "
            "torch.save(model.state_dict(), path) or as .safetensors") from exc
    except Exception as exc:  # torch.load fails in many ways on a file it did not write (IndexError on 0 bytes)
        raise UserInputError(f"{path}: cannot read as a torch checkpoint ({type(exc).__name__}: "
                             f"{first_line(exc) or 'empty or truncated file'})") from None
    return _unwrap(obj, path)


def _weights_only_reason(exc: Exception) -> str:
    """The line of torch's weights-only error that says what was found (its first line is boilerplate)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    hit = next((ln for ln in lines if ln.startswith(("Unsupported", "WeightsUnpickler"))), lines[0] if lines else "")
    return hit[:160]


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Save ``model.state_dict()``: safetensors if ``path`` ends in ``.safetensors``, else ``torch.save``."""
    path = os.fspath(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save
        write_bytes(path, save(sd))
    else:
        save_torch(sd, path)


def _refuse_non_factory(factory: str, fn: Any) -> None:
    """A guard against mistakes, not a security boundary (a config is code: see docs/config.md):
    builtins, standard-library callables and classes that are not modules cannot build a model."""
    home = getattr(fn, "__module__", None) or ""
    if inspect.isbuiltin(fn) or home.partition(".")[0] in _NOT_FACTORIES or (
            inspect.isclass(fn) and not issubclass(fn, nn.Module)) or not callable(fn):
        raise UserInputError(f"{factory!r} ({home or type(fn).__name__}) is not a model factory: give a function or "
                             "nn.Module class of your own code that returns the model, e.g. 'mypackage.models:build'")


# Top-level packages whose callables are never model factories: Python's own (os, subprocess,
# builtins, ...). From torch only nn.Module classes are accepted (``torch:load`` unpickles a file).
_NOT_FACTORIES = frozenset(sys.stdlib_module_names) | {"builtins"}


def _resolve_factory(factory: str) -> tuple[Any, str | None]:
    """The callable named by ``factory`` and the file it was imported from (None for built-in names)."""
    if not isinstance(factory, str):
        raise UserInputError(f"a model factory must be a string, got {factory!r}")
    if factory in ARCHITECTURES:
        return ARCHITECTURES[factory], inspect.getsourcefile(ARCHITECTURES[factory])
    mod_name, sep, fn_name = factory.partition(":")
    if not sep or not all(p.isidentifier() for p in mod_name.split(".")) or not all(
            p.isidentifier() for p in fn_name.split(".")):
        raise UserInputError(f"unknown model factory {factory!r}: use one of {sorted(ARCHITECTURES)}, "
                             "'package.module:function', 'torchvision:NAME' or 'timm:NAME'")
    if mod_name == "torchvision":
        tvm = _import_extra("torchvision.models", factory)
        return (lambda **kw: tvm.get_model(fn_name, weights=None, **kw)), getattr(tvm, "__file__", None)
    if mod_name == "timm":
        timm = _import_extra("timm", factory)
        return (lambda **kw: timm.create_model(fn_name, pretrained=False, **kw)), getattr(timm, "__file__", None)
    if mod_name.partition(".")[0] in _NOT_FACTORIES:  # refused before importing: importing runs code too
        raise UserInputError(f"{factory!r} names Python's standard library, which holds no model factory: give a "
                             "function of your own code that returns the model, e.g. 'mypackage.models:build'")
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:  # ImportError, and a SyntaxError or any error raised by the module's own code
        raise UserInputError(f"cannot import module {mod_name!r} of factory {factory!r} "
                             f"({type(exc).__name__}: {first_line(exc)})"
                             + ("; is its folder on PYTHONPATH?" if isinstance(exc, ModuleNotFoundError) else "")) from None
    fn: Any = module
    for part in fn_name.split("."):
        fn = getattr(fn, part, None)
    if fn is None:
        raise UserInputError(f"module {mod_name!r} ({getattr(module, '__file__', '?')}) has no {fn_name!r}")
    if mod_name.partition(".")[0] == "torch" and not (inspect.isclass(fn) and issubclass(fn, nn.Module)):
        raise UserInputError(f"{factory!r} is not a model factory: from torch only nn.Module classes can build a model")
    _refuse_non_factory(factory, fn)
    try:
        source = inspect.getsourcefile(fn)
    except TypeError:
        source = None
    return fn, source or getattr(module, "__file__", None)


def _import_extra(module: str, factory: str) -> Any:
    """torchvision or timm, or a one-line error that says whether it is missing or broken, and why."""
    package = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in ("torchvision", "timm"):
            raise UserInputError(f"{factory!r}: {package} is installed but needs {exc.name!r}, which is missing") from None
        raise UserInputError(f"{factory!r} needs {exc.name}, which is not installed: pip install genbound[vision] "
                             "(or pip install torchvision timm)") from None
    except Exception as exc:  # installed, but fails at import: say why
        hint = (" PyPI's torchvision wheels for x86_64 need a CUDA build of torch; install torch and torchvision as a "
                "matching pair (e.g. both from the PyTorch index for CPU)" if "torchvision::" in str(exc) else "")
        raise UserInputError(f"{factory!r}: {package} is installed but cannot be imported "
                             f"({type(exc).__name__}: {first_line(exc)}).{hint}") from None


def model_normalization(model: nn.Module, factory: str) -> Normalization:
    """The mean/std a model declares for its inputs (timm's ``pretrained_cfg``)."""
    from genbound.models.pretrained_cfg import pretrained_cfg
    cfg = pretrained_cfg(model)
    if cfg is None or "mean" not in cfg or "std" not in cfg:
        raise UserInputError(f"{factory!r} declares no input mean/std (no pretrained_cfg); give the normalization "
                             "explicitly (a preset such as 'imagenet', or mean and std)")
    return Normalization(tuple(cfg["mean"]), tuple(cfg["std"]))


def load_model(factory: str, weights: str | os.PathLike | None = None, *, device: str | torch.device | None = None,
               normalization: Normalization | str | None = None, strict: bool = True, **kwargs: Any) -> nn.Module:
    """Build ``factory(**kwargs)``, load ``weights`` (if given), wrap with ``normalization`` (if
    given and not the identity, so the model takes [0, 1] pixels; ``"model"`` takes the model's
    own, see :func:`model_normalization`), move to ``device`` and return it in eval mode. The
    description is recorded in ``model.genbound_model``.
    """
    fn, factory_file = _resolve_factory(factory)
    try:
        model = fn(**kwargs)
    except TypeError as exc:
        raise UserInputError(f"factory {factory!r} rejected its arguments {sorted(kwargs)}: {first_line(exc)}") from None
    except (torch.OutOfMemoryError, UserInputError):  # a reference architecture's own one-line error
        raise
    except Exception as exc:  # the user's factory failed: its message says why
        raise UserInputError(f"factory {factory!r} raised {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UserInputError(f"factory {factory!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        sd = load_state_dict_file(weights)
        try:
            result = model.load_state_dict(sd, strict=False)
        except RuntimeError as exc:  # shape mismatches
            msg = " ".join(str(exc).split())[:300]
            raise UserInputError(f"{os.fspath(weights)} does not fit {factory!r}: {msg} (check the factory arguments)") from exc
        if strict and (result.missing_keys or result.unexpected_keys):
            miss, unexp = result.missing_keys, result.unexpected_keys
            raise UserInputError(f"{os.fspath(weights)} does not fit {factory!r}: missing keys {miss[:5]}"
                                 f"{'...' if len(miss) > 5 else ''}, unexpected keys {unexp[:5]}"
                                 f"{'...' if len(unexp) > 5 else ''} (check the factory arguments)")
    check_finite_weights(model, f"model {factory!r}" + (f" with weights {os.fspath(weights)!r}" if weights else ""))
    norm_from = ("pretrained_cfg" if normalization == "model" else f"preset {normalization!r}"
                 if isinstance(normalization, str) else "given" if normalization is not None else None)
    if isinstance(normalization, str):
        normalization = (model_normalization(model, factory) if normalization == "model"
                         else Normalization.preset(normalization))
    model = with_normalization(model, normalization).to(resolve_device(device)).eval()
    model.genbound_model = {"factory": factory, "factory_file": factory_file, "weights": os.fspath(weights) if weights is not None else None,  # type: ignore[assignment]
                            "kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()},
                            "normalization": normalization.as_dict() if normalization else None,
                            "normalization_from": norm_from if normalization else None}
    return model
