"""Adversarial training (PGD-AT, TRADES, AWP), learning-rate schedules (piecewise, cosine, the
WCI-guarded schedule of genbound's own design), per-epoch tracking and resumable checkpoints.

Public API:

- :func:`train_adversarial`, :class:`TrainConfig`, :class:`TrainResult`, :func:`train_epoch`
- :class:`TrackConfig`, :class:`Tracker`, :data:`RECORD_FIELDS` (spec wci.md §1 record)
- :class:`Piecewise`, :class:`Cosine`, :class:`WCIGuarded`, :func:`make_schedule`
- :class:`AWP`; :func:`trades_loss`, :func:`trades_attack`
- :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`rng_state`, :func:`set_rng_state`
"""

from genbound.train.adversarial import (
           TrainConfig,
           TrainResult,
           train_adversarial,
           train_epoch,
)
from genbound.train.awp import AWP
from genbound.train.checkpoint import (
           load_checkpoint,
           rng_state,
           save_checkpoint,
           set_rng_state,
)
from genbound.train.schedules import (
           Cosine,
           Piecewise,
           Schedule,
           WCIGuarded,
           make_schedule,
)
from genbound.train.tracking import RECORD_FIELDS, TrackConfig, Tracker
from genbound.train.trades import trades_attack, trades_loss

__all__ = [
           "AWP",
           "RECORD_FIELDS",
           "Cosine",
           "Piecewise",
           "Schedule",
           "TrackConfig",
           "Tracker",
           "TrainConfig",
           "TrainResult",
           "WCIGuarded",
           "load_checkpoint",
           "make_schedule",
           "rng_state",
           "save_checkpoint",
           "set_rng_state",
           "trades_attack",
           "trades_loss",
           "train_adversarial",
           "train_epoch",
]
