"""A user's images in an ImageFolder-style directory: ``root/<class name>/<image file>``.

Labels are positions in a class list: the model's own (``classes``: see
:func:`genbound.data.classes.class_list`), in which every folder name must appear, or by default
the sorted folder names. Images are decoded with PIL on demand (only the requested batch is in
memory), prepared by a :class:`~genbound.data.preprocess.Preprocess` (colour mode, resize, centre
crop) and scaled to [0, 1] by /255. Without resize and crop every image must already have the
same size.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from genbound.data.preprocess import Preprocess
from genbound.data.source import DataSource, Normalization
from genbound.errors import UserInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageFolderSource(DataSource):
    """Images under ``root/<class>/``; see the module docstring.

    Parameters: ``preprocess`` (:class:`Preprocess`: mode, resize, centre crop; recorded),
    ``classes`` (the model's class names in index order, or None for the sorted folder names),
    ``normalization`` (what the model expects), ``extensions``.
    """

    decodes = True

    def __init__(self, root: str | os.PathLike, *, preprocess: Preprocess | None = None,
                 classes: Sequence[str] | None = None, normalization: Normalization | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, name: str | None = None) -> None:
        super().__init__()
        try:
            from PIL import Image  # noqa: F401
        except ImportError as exc:  # pragma: no cover
            raise UserInputError("image folders need Pillow: pip install pillow") from exc
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise UserInputError(f"image folder {root!r} does not exist or is not a directory")
        folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        if not folders:
            raise UserInputError(f"{root!r} has no class sub-directories; expected root/<class name>/<image files>")
        if classes is None:
            classes = folders
        else:
            classes = list(classes)
            unknown = [f for f in folders if f not in classes]
            if unknown:
                raise UserInputError(f"{root!r}: folder(s) {unknown[:5]} are not among the {len(classes)} classes given "
                                     f"(first: {classes[:3]}); name each folder after one of the model's classes")
        index = {c: i for i, c in enumerate(classes)}
        exts = tuple(e.lower() for e in extensions)
        files: list[str] = []
        labels: list[int] = []
        for cname in folders:
            for dirpath, _, names in sorted(os.walk(os.path.join(root, cname))):
                for fn in sorted(names):
                    if fn.lower().endswith(exts):
                        files.append(os.path.join(dirpath, fn))
                        labels.append(index[cname])
        if not files:
            raise UserInputError(f"no images with extensions {exts} found under {root!r}")
        self.root, self.classes, self.files = root, list(classes), files
        self._labels = np.asarray(labels, dtype=np.int64)
        pre = preprocess or Preprocess()
        first = self._open(files[0], mode=None)
        if pre.mode is None:
            pre = replace(pre, mode="L" if first.mode in ("L", "1", "I", "I;16", "F") else "RGB")
        self.preprocess = pre
        h, w = pre.output_size(*first.size)
        self.shape = (3 if pre.mode == "RGB" else 1, int(h), int(w))
        self.num_classes = len(classes)
        self.name = name or os.path.basename(os.path.normpath(root))
        self.normalization = normalization or Normalization()
        self.provenance = {"root": os.path.abspath(root), "classes": (self.classes if len(self.classes) <= 100 else
                                                                       f"{len(self.classes)} classes"),
                           "folders": folders, "preprocess": pre.record()}

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
        img = self.preprocess(self._open(path, self.preprocess.mode))
        arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[None]
        else:
            arr = arr.transpose(2, 0, 1)
        if arr.shape != self.shape:
            raise UserInputError(f"image {path!r} has shape {arr.shape}, expected {self.shape}; resize (and crop) all "
                                 "images to one size")
        return arr

    def __len__(self) -> int:
        return len(self.files)

    def identifiers(self, indices: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``index`` (position in the folder's sorted file list) and ``path`` (the file, relative to
        the folder, ``/``-separated): a flag in ``samples.npz`` maps back to its image."""
        ids = super().identifiers(indices)
        rel = [os.path.relpath(self.files[i], self.root).replace(os.sep, "/") for i in ids["index"]]
        return {**ids, "path": np.array(rel, dtype=str) if rel else np.zeros(0, dtype="<U1")}

    def get(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        x = np.stack([self._decode(self.files[i]) for i in idx]) if idx.size else np.zeros((0, *self.shape), np.uint8)
        return torch.from_numpy(x).to(torch.float32).div_(255.0), torch.from_numpy(self._labels[idx])

    @property
    def labels(self) -> np.ndarray:
        return self._labels
