"""Test-only: lets PyPI's torchvision import beside a CPU-only torch build. Never shipped.

PyPI's x86_64 torchvision wheels link their C++ operators against CUDA libraries that a CPU-only
torch does not have, so ``torchvision/_C.so`` fails to load, its operators are never registered,
and ``import torchvision`` dies registering a fake kernel for ``torchvision::nms``. When (and only
when) that library cannot be loaded, this finder defines the schemas of the two operators
torchvision registers at import, so that its models and transforms (pure Python) work; the
detection operators themselves stay unavailable. On a machine with a working torchvision the
library loads and nothing is changed. timm imports torchvision, so its adapter tests need this too.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.util
import os
import sys

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_keep: list[object] = []  # the torch.library.Library must outlive the import


class _TorchvisionOpsFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)  # act once, then let the normal finders do the import
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.submodule_search_locations:
            return spec
        lib_path = os.path.join(next(iter(spec.submodule_search_locations)), "_C.so")
        try:
            ctypes.CDLL(lib_path)
            return spec  # a working build: leave it alone
        except OSError:
            pass
        import torch
        lib = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            lib.define(schema)
        _keep.append(lib)
        return spec


def install() -> None:
    """Activate the finder (before torchvision or timm is first imported)."""
    if "torchvision" not in sys.modules and not any(isinstance(f, _TorchvisionOpsFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionOpsFinder())
