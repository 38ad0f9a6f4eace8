"""How image files become the model's input pixels: resize, centre crop, colour mode.

A pretrained classifier is only right on inputs prepared the way it was evaluated: ImageNet models
take the short side resized to 256 and the centre 224 x 224 crop; squashing the whole image to
224 x 224 costs accuracy. :class:`Preprocess` declares these steps, applies them to decoded PIL
images and records them, so a run's record alone rebuilds its inputs. Normalization (mean/std) is
not a step here: it belongs to the model (:class:`genbound.data.Normalization`, put in front of
the model), so that kappa stays in [0, 1] pixel units of the cropped image.

Resize and crop follow torchvision's conventions (``Resize(int)``: the short side becomes ``int``
and the long side ``int(size * long / short)``; ``Resize((h, w))``: exactly ``h x w``;
``CenterCrop``: offsets ``round((H - h) / 2)``), with PIL's antialiased filters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Sequence

from genbound.errors import UserInputError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")

#: ``preset`` names: common evaluation transforms of pretrained models
PRESETS: dict[str, dict[str, Any]] = {
    # torchvision's and most papers' ImageNet evaluation: Resize(256), CenterCrop(224)
    "imagenet": {"resize": 256, "crop": 224, "interpolation": "bilinear", "mode": "RGB"},
    # timm's default for many ImageNet models (crop_pct 0.875, bicubic)
    "imagenet-bicubic": {"resize": 256, "crop": 224, "interpolation": "bicubic", "mode": "RGB"},
    # CIFAR-sized models: images used as they are
    "cifar": {"resize": None, "crop": None, "interpolation": "bilinear", "mode": "RGB"},
}


def _size(value: Any, what: str) -> int | tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, Integral) and not isinstance(value, bool):
        if value < 1:
            raise UserInputError(f"{what} must be >= 1 pixel, got {value}")
        return int(value)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 and all(
            isinstance(v, Integral) and not isinstance(v, bool) and v >= 1 for v in value):
        return int(value[0]), int(value[1])
    raise UserInputError(f"{what} must be a positive integer or [height, width], got {value!r}")


@dataclass(frozen=True)
class Preprocess:
    """Decode-time steps, in order: colour ``mode``, ``resize``, centre ``crop``.

    ``resize``: an int resizes the short side to it (aspect kept); ``[h, w]`` resizes to exactly
    that; None keeps the size. ``crop``: an int or ``[h, w]`` centre crop; None keeps the image.
    ``interpolation``: one of :data:`INTERPOLATIONS`. ``mode``: "RGB", "L", or None for the first
    image's ("L" for greyscale files, else "RGB").
    """

    resize: int | tuple[int, int] | None = None
    crop: int | tuple[int, int] | None = None
    interpolation: str = "bilinear"
    mode: str | None = None
    #: where the steps came from when not declared by the user (e.g. a model's pretrained_cfg); recorded
    origin: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resize", _size(self.resize, "resize"))
        object.__setattr__(self, "crop", _size(self.crop, "crop"))
        if self.interpolation not in INTERPOLATIONS:
            raise UserInputError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {self.interpolation!r}")
        if self.mode not in (None, "RGB", "L"):
            raise UserInputError(f"mode must be 'RGB' or 'L'; got {self.mode!r}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Preprocess":
        """A named preset of :data:`PRESETS`, with some fields overridden."""
        if name not in PRESETS:
            raise UserInputError(f"unknown preprocessing preset {name!r}; use one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def is_identity(self) -> bool:
        return self.resize is None and self.crop is None

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) of an image of ``width x height`` after resize and crop."""
        w, h = self._resized(width, height)
        if self.crop is not None:
            h, w = (self.crop, self.crop) if isinstance(self.crop, int) else self.crop
        return h, w

    def _resized(self, width: int, height: int) -> tuple[int, int]:
        if self.resize is None:
            return width, height
        if isinstance(self.resize, tuple):
            return self.resize[1], self.resize[0]
        short, long_ = (width, height) if width <= height else (height, width)
        new_long = int(self.resize * long_ / short)
        return (self.resize, new_long) if width <= height else (new_long, self.resize)

    def __call__(self, img: Any) -> Any:
        """Apply the steps to a PIL image (already converted to the source's colour mode)."""
        from PIL import Image
        resample = getattr(Image.Resampling, self.interpolation.upper())
        w, h = self._resized(*img.size)
        if (w, h) != img.size:
            img = img.resize((w, h), resample)
        if self.crop is not None:
            ch, cw = (self.crop, self.crop) if isinstance(self.crop, int) else self.crop
            if ch > h or cw > w:
                raise UserInputError(f"crop {ch}x{cw} is larger than the resized image {h}x{w}; resize to at least "
                                     "the crop size")
            top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            img = img.crop((left, top, left + cw, top + ch))
        return img

    def record(self) -> dict[str, Any]:
        """What a run records (enough to rebuild the inputs)."""
        as_list = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
        return {"resize": as_list(self.resize), "resize_rule": ("short side" if isinstance(self.resize, int) else
                                                                "exact" if self.resize else None),
                "crop": as_list(self.crop), "crop_rule": "centre" if self.crop else None,
                "interpolation": self.interpolation, "mode": self.mode,
                **({"origin": self.origin} if self.origin else {})}
