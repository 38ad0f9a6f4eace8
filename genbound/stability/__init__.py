"""Stability layer: per-sample "stable at kappa_j" flags for a whole kappa grid in one call.

One protocol (:mod:`genbound.stability.engine`): an engine processes batches of a
:class:`~genbound.data.source.DataSource` and returns per-batch results that merge into one
:class:`StabilityResult` (``stable`` bool[n, J] = spec §1 ``train_stable``, predictions,
evidence). One registry (:mod:`genbound.stability.registry`): ``noise``, ``pgd``, ``autoattack``
(the official APGD attacks, optional package ``pyautoattack``) and their union ``pgd+autoattack``
(empirical, ``sound=False``: a flip not found is evidence, not proof) and ``ibp``, ``crown``, ``exact`` (the
sound verifier, :mod:`genbound.stability.sound`: every ``True`` flag is a proof).
:func:`stability_flags` runs any of them by name.
"""

from __future__ import annotations

from genbound.attacks import sample_ball
from genbound.stability.autoattack import AutoAttackEngine, autoattack_stability
from genbound.stability.combined import UnionEngine
from genbound.stability.engine import BatchResult, StabilityEngine, StabilityResult, merge_batches, run_engine
from genbound.stability.noise import NoiseEngine, noise_stability
from genbound.stability.pgd import PGDEngine, pgd_stability
from genbound.stability.registry import ENGINES, make_engine, stability_flags
from genbound.stability.sound.certify import SoundEngine

__all__ = ["ENGINES", "AutoAttackEngine", "BatchResult", "NoiseEngine", "PGDEngine", "SoundEngine", "StabilityEngine",
           "StabilityResult", "UnionEngine", "autoattack_stability", "make_engine", "merge_batches", "noise_stability",
           "pgd_stability", "run_engine", "sample_ball", "stability_flags"]
