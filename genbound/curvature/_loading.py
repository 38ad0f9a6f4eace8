"""Stop-gap loaders for ``genbound wci`` until the shared data/model layers are merged.

- Data: ``genbound.data.load_dataset(name)`` when that module exists; otherwise the built-in
  ``digits`` (scikit-learn ``load_digits``: 1,797 real 8x8 images, pixels / 16 in [0, 1], shape
  ``(N, 1, 8, 8)``, 10 classes).
- Model: ``genbound.models.load_model(spec, weights)`` when that module exists; otherwise
  ``package.module:function`` factory strings (called without arguments, must return an
  ``nn.Module``) with weights from ``torch.load(..., weights_only=True)`` or safetensors.

After the merge this file should shrink to calls of the shared loaders (see the module docstring
of ``genbound/commands/wci.py``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genbound.errors import UserInputError

BUILTIN_DATASETS = ("digits",)


def load_data(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Training inputs and labels of dataset ``name`` as tensors ``(x, y)``."""
    try:
        from genbound.data import load_dataset  # type: ignore[attr-defined]
    except ImportError:
        load_dataset = None
    if load_dataset is not None and name not in BUILTIN_DATASETS:
        return _to_tensors(load_dataset(name), name)
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise UserInputError(
                "--data digits needs scikit-learn: pip install scikit-learn"
            ) from None
        d = load_digits()
        x = torch.as_tensor(d.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
        return x, torch.as_tensor(d.target, dtype=torch.long)
    raise UserInputError(
        f"unknown dataset {name!r}; available here: {', '.join(BUILTIN_DATASETS)}"
    )


def _to_tensors(obj: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(obj, dict) and "train" in obj:
        obj = obj["train"]
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        x, y = (torch.as_tensor(t) for t in obj)
        return x, y.long()
    try:
        items = [obj[i] for i in range(len(obj))]
        return torch.stack([torch.as_tensor(i[0]) for i in items]), torch.as_tensor([int(i[1]) for i in items])
    except Exception as exc:  # noqa: BLE001 - any shape mismatch is a loader contract problem
        raise UserInputError(f"dataset {name!r} could not be turned into (x, y) tensors: {exc}") from None


def load_model(spec: str, weights: str | None) -> nn.Module:
    """Build the model of ``spec`` (``package.module:function``) and load ``weights`` into it."""
    try:
        from genbound.models import load_model as shared  # type: ignore[attr-defined]
    except ImportError:
        shared = None
    if shared is not None and ":" not in spec:
        return shared(spec, weights)
    model = _build(spec)
    if weights is not None:
        _load_weights(model, weights)
    return model


def _build(spec: str) -> nn.Module:
    mod_name, sep, fn_name = spec.partition(":")
    if not sep or not mod_name or not fn_name:
        raise UserInputError(
            f"--model {spec!r} is not a factory string; use package.module:function "
            "(a function that returns the nn.Module, called without arguments)"
        )
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise UserInputError(f"--model: cannot import {mod_name!r} ({exc}); is it on PYTHONPATH?") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserInputError(f"--model: {mod_name!r} has no callable {fn_name!r}")
    model = fn()
    if not isinstance(model, nn.Module):
        raise UserInputError(f"--model: {spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_weights(model: nn.Module, weights: str) -> None:
    path = Path(weights)
    if not path.is_file():
        raise UserInputError(f"--weights: no such file {weights!r}; pass the path of a saved state_dict")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable file: tell the user what it was
        raise UserInputError(
            f"--weights: cannot read {weights!r} as a state_dict ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "save it with torch.save(model.state_dict(), path) or safetensors"
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise UserInputError(f"--weights: {weights!r} does not hold a state_dict (found {type(state).__name__})")
    missing, unexpected = _diff_keys(model, state)
    if missing or unexpected:
        raise UserInputError(
            f"--weights: {weights!r} does not match the model ({len(missing)} missing keys, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}); check --model"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UserInputError(f"--weights: shapes do not match the model ({first[-1].strip()[:200]})") from None


def _diff_keys(model: nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    want = set(model.state_dict().keys())
    have = set(state.keys())
    return sorted(want - have), sorted(have - want)
