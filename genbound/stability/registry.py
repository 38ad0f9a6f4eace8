"""The one registry of stability engines: method name -> engine factory.

Every method of :data:`genbound.names.STABILITY_METHODS` is here, and only here: the pipeline, the
config and the CLI reach engines through :func:`make_engine` / :func:`stability_flags`. A new
engine (a corruption suite, say) is a class following
:class:`~genbound.stability.engine.StabilityEngine` plus one line in :data:`ENGINES` and its name
in :mod:`genbound.names`.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from genbound import names
from genbound.data.source import DataSource
from genbound.distributed import Ranks
from genbound.errors import UserInputError
from genbound.stability.autoattack import AutoAttackEngine
from genbound.stability.combined import pgd_autoattack
from genbound.stability.batch_store import BatchStore
from genbound.stability.engine import StabilityEngine, StabilityResult, run_engine
from genbound.stability.noise import NoiseEngine
from genbound.stability.pgd import PGDEngine
from genbound.stability.sound.certify import SoundEngine
from genbound.torch_utils import check_kappas

__all__ = ["ENGINES", "make_engine", "stability_flags"]

ENGINES: dict[str, Callable[..., StabilityEngine]] = {
    "pgd": PGDEngine,
    "noise": NoiseEngine,
    "autoattack": AutoAttackEngine,
    "pgd+autoattack": pgd_autoattack,
    "ibp": partial(SoundEngine, "ibp"),
    "crown": partial(SoundEngine, "crown"),
    "exact": partial(SoundEngine, "exact"),
}
assert tuple(ENGINES) == names.STABILITY_METHODS


def make_engine(method: str, **params: Any) -> StabilityEngine:
    """The engine ``method`` with its parameters (each engine validates its own)."""
    if method not in ENGINES:
        raise UserInputError(f"stability method must be one of {', '.join(ENGINES)}; got {method!r}")
    try:
        return ENGINES[method](**params)
    except TypeError as e:
        raise UserInputError(f"stability method {method!r}: {e}") from None


def stability_flags(model: nn.Module, source: DataSource, kappas: Sequence[float] | np.ndarray, method: str = "pgd", *,
                    device: str | torch.device | None = None, progress_bar: bool = True,
                    indices: np.ndarray | None = None, store: BatchStore | None = None, ranks: Ranks | None = None,
                    workers: int | str = 0, **params: Any) -> StabilityResult:
    """Run engine ``method`` over ``source`` (or its positions ``indices``: a shard or a subsample)
    for the whole kappa grid; ``params`` go to the engine (``batch_size`` also sets the batches);
    ``store``, ``ranks`` and ``workers``: resume, sharding and decoding processes, as in
    :func:`~genbound.stability.engine.run_engine`."""
    engine = make_engine(method, **params)
    norm = params.get("kind", "linf") if method == "noise" else params.get("norm", "linf")
    k = check_kappas(kappas, norm=norm, dim=source.dim)
    return run_engine(engine, model, source, k, batch_size=int(params.get("batch_size", 256)), device=device,
                      indices=indices, progress_bar=progress_bar, store=store, ranks=ranks, workers=workers)
