"""Which class index each label names: the model's class list, not the folders' sorted order.

An ImageFolder's labels are positions in a class list. By default that list is the sorted folder
names, which is right only when the folders hold every class the model knows, in the model's
order. A pretrained ImageNet model on a folder of a few synsets, or a CIFAR-10 model on a folder
with 8 of the 10 class names, needs the model's own list: :func:`class_list` gives it from a
known name (``"imagenet"``: the 1,000 WordNet synsets ``n01440764 ...`` in the standard index
order, the list timm ships; ``"cifar10"``: CIFAR-10's class names), an explicit list, or a labels
file (one class per line, the line number is the index).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources

from genbound.errors import UserInputError

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
KNOWN = ("imagenet", "cifar10")


def _imagenet() -> list[str]:
    text = resources.files("genbound.data").joinpath("classes/imagenet_synsets.txt").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def class_list(spec: str | Sequence[str], *, base: str | None = None) -> tuple[list[str], str]:
    """The class names in index order, and a short description of where they came from.

    ``spec``: ``"imagenet"``, ``"cifar10"``, a list of names, or the path of a labels file (one
    name per line; relative to ``base`` if given).
    """
    if isinstance(spec, str):
        if spec == "imagenet":
            return _imagenet(), "imagenet (1,000 WordNet synsets, standard order)"
        if spec == "cifar10":
            return list(CIFAR10), "cifar10"
        path = spec if os.path.isabs(spec) or base is None else os.path.join(base, spec)
        if not os.path.isfile(path):
            raise UserInputError(f"classes {spec!r} is neither one of {', '.join(KNOWN)} nor a labels file "
                                 "(one class name per line)")
        try:
            with open(path, encoding="utf-8") as fh:
                names = [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
        except (OSError, UnicodeDecodeError) as exc:
            raise UserInputError(f"cannot read labels file {path!r}: {exc}") from None
        where = f"labels file {os.path.abspath(path)}"
    elif isinstance(spec, Sequence) and all(isinstance(c, str) and c for c in spec):
        names, where = list(spec), "explicit list"
    else:
        raise UserInputError(f"classes must be {', '.join(KNOWN)}, a labels file or a list of class names; got {spec!r}")
    if len(names) < 2:
        raise UserInputError(f"a class list needs at least 2 classes; got {names}")
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise UserInputError(f"class names must be unique; repeated: {dup[:5]}")
    return names, where
