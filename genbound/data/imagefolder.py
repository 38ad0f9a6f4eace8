"""A user's images in an ImageFolder-style directory: ``root/<class name>/<image file>``.

Classes are the sub-directories in sorted order (label = position). Images are decoded with PIL
on demand (only the requested batch is in memory), converted to ``mode`` ("RGB" or "L"),
optionally resized, and scaled to [0, 1] by /255. Without ``size`` every image must already have
the same size.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from genbound.data.source import DataSource, Normalization
from genbound.errors import UserInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageFolderSource(DataSource):
    """Images under ``root/<class>/``; see the module docstring.

    Parameters: ``size`` (int for a square or ``(height, width)``; resized with bilinear
    interpolation, recorded), ``mode`` ("RGB", "L", or None to take the first image's: "L" for
    greyscale, else "RGB"), ``normalization`` (what the model expects), ``extensions``.
    """

    def __init__(self, root: str | os.PathLike, *, size: int | Sequence[int] | None = None,
                 mode: str | None = None, normalization: Normalization | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, name: str | None = None) -> None:
        super().__init__()
        try:
            from PIL import Image  # noqa: F401
        except ImportError as exc:  # pragma: no cover
            raise UserInputError("image folders need Pillow: pip install pillow") from exc
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise UserInputError(f"image folder {root!r} does not exist or is not a directory")
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise UserInputError(f"{root!r} has no class sub-directories; expected root/<class name>/<image files>")
        exts = tuple(e.lower() for e in extensions)
        files: list[str] = []
        labels: list[int] = []
        for c, cname in enumerate(classes):
            for dirpath, _, names in sorted(os.walk(os.path.join(root, cname))):
                for fn in sorted(names):
                    if fn.lower().endswith(exts):
                        files.append(os.path.join(dirpath, fn))
                        labels.append(c)
        if not files:
            raise UserInputError(f"no images with extensions {exts} found under {root!r}")
        self.root, self.classes, self.files = root, classes, files
        self._labels = np.asarray(labels, dtype=np.int64)
        if size is not None:
            hw = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)  # type: ignore[arg-type]
            if len(hw) != 2 or min(hw) < 1:
                raise UserInputError(f"size must be an int or (height, width); got {size!r}")
            self.size: tuple[int, int] | None = hw
        else:
            self.size = None
        first = self._open(files[0], mode=None)
        self.mode = mode or ("L" if first.mode in ("L", "1", "I", "I;16", "F") else "RGB")
        if self.mode not in ("RGB", "L"):
            raise UserInputError(f"mode must be 'RGB' or 'L'; got {mode!r}")
        w, h = self.size[::-1] if self.size else first.size
        self.shape = (3 if self.mode == "RGB" else 1, int(h), int(w))
        self.num_classes = len(classes)
        self.name = name or os.path.basename(os.path.normpath(root))
        self.normalization = normalization or Normalization()
        self.provenance = {"root": os.path.abspath(root), "classes": classes, "size": list(self.size) if self.size else None,
                           "mode": self.mode, "resize": "bilinear" if self.size else None}

    @staticmethod
    def _open(path: str, mode: str | None):
        from PIL import Image
        try:
            img = Image.open(path)
            img.load()
        except Exception as exc:  # PIL raises many kinds
            raise UserInputError(f"cannot decode image {path!r}: {exc}") from exc
        return img.convert(mode) if mode else img

    def _decode(self, path: str) -> np.ndarray:
        from PIL import Image
        img = self._open(path, self.mode)
        if self.size is not None:
            img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[None]
        else:
            arr = arr.transpose(2, 0, 1)
        if arr.shape != self.shape:
            raise UserInputError(f"image {path!r} has shape {arr.shape}, expected {self.shape}; pass size=... to resize all images")
        return arr

    def __len__(self) -> int:
        return len(self.files)

    def get(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        x = np.stack([self._decode(self.files[i]) for i in idx]) if idx.size else np.zeros((0, *self.shape), np.uint8)
        return torch.from_numpy(x).to(torch.float32).div_(255.0), torch.from_numpy(self._labels[idx])

    @property
    def labels(self) -> np.ndarray:
        return self._labels
