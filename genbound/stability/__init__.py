"""Stability layer: per-sample "stable at kappa_j" flags for a whole kappa grid in one call.

Engines (all empirical, ``sound=False``): :func:`noise_stability` (uniform l_inf / l_2 ball or
Gaussian draws) and :func:`pgd_stability` (untargeted PGD on the predicted label, l_inf / l_2,
early exit with flips carried up the grid). :func:`stability_flags` dispatches by method name.
All return a :class:`StabilityResult` (``stable`` bool[n, J] = spec §1 ``train_stable``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch import nn

from genbound.data.source import DataSource
from genbound.errors import UserInputError
from genbound.stability.base import StabilityResult, sample_ball
from genbound.stability.noise import noise_stability
from genbound.stability.pgd import pgd_stability

METHODS = {"noise": noise_stability, "pgd": pgd_stability}


def stability_flags(model: nn.Module, source: DataSource, kappas: Sequence[float] | np.ndarray, method: str = "pgd", **kwargs: Any) -> StabilityResult:
    """Run stability engine ``method`` ("noise" or "pgd") over the whole kappa grid; kwargs go to the engine."""
    if method not in METHODS:
        raise UserInputError(f"stability method must be one of {sorted(METHODS)}; got {method!r} "
                             "(sound methods such as IBP/CROWN are not available in this layer)")
    return METHODS[method](model, source, kappas, **kwargs)


__all__ = ["METHODS", "StabilityResult", "noise_stability", "pgd_stability", "sample_ball", "stability_flags"]
