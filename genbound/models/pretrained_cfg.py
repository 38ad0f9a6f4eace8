"""The evaluation preprocessing a model declares for itself: timm's ``pretrained_cfg``.

A timm model carries ``pretrained_cfg`` (``input_size``, ``crop_pct``, ``crop_mode``,
``interpolation``, ``mean``, ``std``): the transform its published accuracy was measured with.
:func:`preprocess_from_cfg` turns it into a :class:`~genbound.data.preprocess.Preprocess` by
timm's own rules (``timm.data.resolve_data_config`` then ``transforms_imagenet_eval``):

- missing fields take timm's defaults: ``crop_pct`` 0.875, ``interpolation`` bicubic,
  ``crop_mode`` center, ``input_size`` (3, 224, 224);
- ``scale = floor(size / crop_pct)`` per side; ``center``: the short side resized to ``scale``
  (square targets), then the centre ``input_size`` crop; ``squash``: resized to exactly
  ``scale x scale``, then the centre crop;
- ``border`` (pad to keep the whole image) and non-square centre targets have no
  :class:`Preprocess` equivalent: an error asks for an explicit ``[data] preprocess``.

The mean/std go in front of the model (:func:`genbound.models.loading.model_normalization`), so
kappa stays in [0, 1] pixel units of the cropped image. The record names every field it used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from genbound.data.preprocess import INTERPOLATIONS, Preprocess
from genbound.errors import UserInputError

#: timm's defaults (timm.data.constants / resolve_data_config) for fields a cfg leaves out
TIMM_DEFAULTS = {"input_size": (3, 224, 224), "crop_pct": 0.875, "crop_mode": "center", "interpolation": "bicubic"}


def pretrained_cfg(model: Any) -> Mapping[str, Any] | None:
    """The model's ``pretrained_cfg`` (timm; older timm: ``default_cfg``), or None."""
    # genbound's wrapper is nn.Sequential(Normalize, model): look one level down too
    children = list(model.children()) if hasattr(model, "children") else []
    for m in (model, *children[1:2]):
        cfg = getattr(m, "pretrained_cfg", None) or getattr(m, "default_cfg", None)
        if isinstance(cfg, Mapping):
            return cfg
    return None


def preprocess_from_cfg(cfg: Mapping[str, Any], *, what: str = "the model") -> Preprocess:
    """The :class:`Preprocess` of timm's evaluation transform for ``cfg`` (module docstring)."""
    get = lambda k: cfg.get(k) or TIMM_DEFAULTS[k]  # noqa: E731  (timm treats None and 0 as unset)
    size = tuple(int(v) for v in get("input_size"))
    crop_pct, mode, interp = float(get("crop_pct")), str(get("crop_mode")), str(get("interpolation"))
    if len(size) != 3 or size[0] not in (1, 3) or min(size[1:]) < 1:
        raise UserInputError(f"{what}: pretrained_cfg input_size {list(size)} is not (channels, height, width)")
    if not 0 < crop_pct <= 1:  # timm accepts > 1 only for 'border'; nothing else here needs it
        raise UserInputError(f"{what}: pretrained_cfg crop_pct {crop_pct} is not in (0, 1]")
    if interp not in INTERPOLATIONS:
        raise UserInputError(f"{what}: pretrained_cfg interpolation {interp!r} is not one of {', '.join(INTERPOLATIONS)}; "
                             "give [data] preprocess explicitly")
    h, w = size[1:]
    scale = (math.floor(h / crop_pct), math.floor(w / crop_pct))
    crop = h if h == w else (h, w)
    origin = {"from": "pretrained_cfg", "model": what, "input_size": list(size), "crop_pct": crop_pct,
              "crop_mode": mode, "interpolation": interp,
              "defaults_used": sorted(k for k in TIMM_DEFAULTS if not cfg.get(k))}
    if mode == "center" and scale[0] == scale[1]:
        return Preprocess(resize=scale[0], crop=crop, interpolation=interp, mode="RGB" if size[0] == 3 else "L",
                          origin=origin)
    if mode == "squash":
        return Preprocess(resize=scale, crop=crop, interpolation=interp, mode="RGB" if size[0] == 3 else "L",
                          origin=origin)
    raise UserInputError(f"{what}: pretrained_cfg crop_mode {mode!r} with input size {h}x{w} has no genbound equivalent "
                         "(only 'center' with a square input and 'squash'); give [data] preprocess explicitly")
