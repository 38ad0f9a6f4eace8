"""Argument types shared by the commands: a number out of range is a usage error (one line, exit 2)
at parse time, never a NaN learning rate or a negative radius discovered mid-run.

Each factory returns an ``argparse`` ``type=`` callable; argparse turns its
``ArgumentTypeError`` into ``genbound CMD: error: argument --flag: <message>``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def real(*, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
         high_open: bool = False) -> Callable[[str], float]:
    """A finite float in the interval from ``low`` to ``high`` (ends open where asked)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if not math.isfinite(value) or below or above:
            lo = ("(" if low_open or low == -math.inf else "[") + f"{low:g}"
            hi = f"{high:g}" + (")" if high_open or high == math.inf else "]")
            raise argparse.ArgumentTypeError(f"expected a finite number in {lo}, {hi}, got {text!r}")
        return value
    return parse


def integer(*, low: int = 0) -> Callable[[str], int]:
    """An integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return parse


def delta(text: str) -> float:
    """``--delta``: a failure probability in (0, 1), by the rule the Python API applies
    (:func:`genbound.bounds.suite.validate_delta`)."""
    from genbound.bounds.suite import validate_delta
    from genbound.errors import UserInputError
    try:
        return validate_delta(text)
    except UserInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

#: a fraction of a data set, strictly between 0 and 1 (a split needs both parts)
split_fraction = real(low=0, high=1, low_open=True, high_open=True)
