"""Learning-rate schedules of the adversarial trainer: piecewise, cosine, WCI-guarded.

Every schedule answers ``lr(epoch)`` (0-based epoch, the rate used for the whole epoch), lists the
epochs at which it decays (``decay_epochs``, used to mark plots and to densify the expensive
measurements), may be told the WCI measured at the end of an epoch (``observe``), and saves /
restores its state (``state_dict`` / ``load_state_dict``) so a resumed run continues identically.

- :class:`Piecewise`: ``lr = base * factor ** (number of milestones <= epoch)`` (Rice et al. 2020
  use 0.1 / 0.01 / 0.001 at epochs 100 and 150 of 200).
- :class:`Cosine`: ``lr = min_lr + (base - min_lr) * (1 + cos(pi * epoch / epochs)) / 2``
  (Loshchilov & Hutter 2017, no restarts).
- :class:`WCIGuarded`: **genbound's own design** (spec wci.md §4; the paper's rule was not
  available to us). It follows a piecewise schedule; after the first decay it watches WCI at the
  end of every epoch: when WCI exceeds ``(1 + tau)`` times its running minimum (the minimum since
  the first decay) for ``patience`` consecutive evaluations, it either cancels every further decay
  (``mode="freeze"``: the rate stays where it is) or multiplies the current rate by ``gamma_up``,
  capped at ``cap`` (``mode="raise"``; the count restarts after each raise). The trigger events
  are logged in ``events``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from genbound.errors import UserInputError


class Schedule:
    """Base class: a learning rate per epoch, optional WCI feedback, a saveable state."""

    name = "constant"

    def __init__(self, base_lr: float) -> None:
        if not base_lr > 0:
            raise UserInputError(f"the learning rate must be positive, got {base_lr}")
        self.base_lr = float(base_lr)

    def lr(self, epoch: int) -> float:
        return self.base_lr

    @property
    def decay_epochs(self) -> list[int]:
        """Epochs whose rate is lower than the previous epoch's (by design, before any feedback)."""
        return []

    def observe(self, epoch: int, wci: float | None) -> None:
        """Feedback after ``epoch`` (WCI measured at its end); the default ignores it."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "base_lr": self.base_lr}


class Piecewise(Schedule):
    """``lr(epoch) = base_lr * factor ** #{m in milestones : m <= epoch}``."""

    name = "piecewise"

    def __init__(self, base_lr: float, milestones: Sequence[int], factor: float = 0.1) -> None:
        super().__init__(base_lr)
        ms = [int(m) for m in milestones]
        if ms != sorted(ms) or len(set(ms)) != len(ms) or any(m < 1 for m in ms):
            raise UserInputError(f"milestones must be distinct increasing epochs >= 1, got {list(milestones)}")
        if not 0 < factor < 1:
            raise UserInputError(f"the decay factor must be in (0, 1), got {factor}")
        self.milestones = ms
        self.factor = float(factor)

    def lr(self, epoch: int) -> float:
        return self.base_lr * self.factor ** sum(1 for m in self.milestones if m <= epoch)

    @property
    def decay_epochs(self) -> list[int]:
        return list(self.milestones)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "milestones": self.milestones, "factor": self.factor}


class Cosine(Schedule):
    """``lr(epoch) = min_lr + (base_lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2``."""

    name = "cosine"

    def __init__(self, base_lr: float, epochs: int, min_lr: float = 0.0) -> None:
        super().__init__(base_lr)
        if int(epochs) < 1:
            raise UserInputError(f"epochs must be positive, got {epochs}")
        if not 0 <= min_lr <= base_lr:
            raise UserInputError(f"min_lr must be in [0, base_lr], got {min_lr}")
        self.epochs = int(epochs)
        self.min_lr = float(min_lr)

    def lr(self, epoch: int) -> float:
        t = min(max(epoch, 0), self.epochs) / self.epochs
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "epochs": self.epochs, "min_lr": self.min_lr}


class WCIGuarded(Piecewise):
    """Piecewise decays guarded by WCI after the first decay (genbound's own rule, spec wci.md §4).

    State: ``running_min`` (minimum WCI observed since the first decay), ``count`` (consecutive
    evaluations above ``(1 + tau) * running_min``), ``frozen_at`` (epoch after which further decays
    were cancelled, ``mode="freeze"``), ``current`` (the rate in force once the guard has acted,
    ``None`` before) and ``events`` (list of ``{epoch, wci, running_min, action, lr}``).
    """

    name = "wci_guarded"

    def __init__(self, base_lr: float, milestones: Sequence[int], factor: float = 0.1, *, tau: float = 0.1,
                 patience: int = 2, mode: str = "freeze", gamma_up: float = 2.0, cap: float | None = None) -> None:
        super().__init__(base_lr, milestones, factor)
        if not milestones:
            raise UserInputError("the WCI-guarded schedule needs at least one milestone (it acts after the first decay)")
        if tau < 0:
            raise UserInputError(f"tau must be non-negative, got {tau}")
        if int(patience) < 1:
            raise UserInputError(f"patience must be at least 1, got {patience}")
        if mode not in ("freeze", "raise"):
            raise UserInputError(f"mode must be 'freeze' or 'raise', got {mode!r}")
        if not gamma_up > 1:
            raise UserInputError(f"gamma_up must be > 1, got {gamma_up}")
        self.tau = float(tau)
        self.patience = int(patience)
        self.mode = mode
        self.gamma_up = float(gamma_up)
        self.cap = float(base_lr if cap is None else cap)
        self.running_min: float | None = None
        self.count = 0
        self.frozen_at: int | None = None
        self.current: float | None = None
        self.raised_at: int | None = None
        self.events: list[dict[str, Any]] = []

    def lr(self, epoch: int) -> float:
        planned = super().lr(epoch)
        if self.frozen_at is not None and epoch > self.frozen_at:
            return float(self.current)  # type: ignore[arg-type]
        if self.raised_at is not None and epoch > self.raised_at:
            # later planned decays still apply relative to the raised rate
            later = sum(1 for m in self.milestones if self.raised_at < m <= epoch)
            return float(self.current) * self.factor ** later  # type: ignore[arg-type]
        return planned

    def observe(self, epoch: int, wci: float | None) -> None:
        if wci is None or not math.isfinite(wci) or epoch < self.milestones[0] or self.frozen_at is not None:
            return
        if self.running_min is None or wci < self.running_min:
            self.running_min = float(wci)
        if wci > (1.0 + self.tau) * self.running_min:
            self.count += 1
        else:
            self.count = 0
        if self.count < self.patience:
            return
        rate = self.lr(epoch)
        if self.mode == "freeze":
            self.frozen_at = int(epoch)
            self.current = rate
            action = "freeze"
        else:
            self.current = min(rate * self.gamma_up, self.cap)
            self.raised_at = int(epoch)
            self.count = 0
            self.running_min = float(wci)
            action = "raise"
        self.events.append({"epoch": int(epoch), "wci": float(wci), "running_min": self.running_min,
                            "action": action, "lr": float(self.current)})

    def state_dict(self) -> dict[str, Any]:
        return {"running_min": self.running_min, "count": self.count, "frozen_at": self.frozen_at,
                "current": self.current, "raised_at": self.raised_at, "events": [dict(e) for e in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.running_min = state["running_min"]
        self.count = int(state["count"])
        self.frozen_at = state["frozen_at"]
        self.current = state["current"]
        self.raised_at = state["raised_at"]
        self.events = [dict(e) for e in state["events"]]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tau": self.tau, "patience": self.patience, "mode": self.mode,
                "gamma_up": self.gamma_up, "cap": self.cap, "design": "genbound's own (spec wci.md §4), not the paper's"}


def make_schedule(spec: dict[str, Any], *, epochs: int, base_lr: float | None = None) -> Schedule:
    """A schedule from a plain dict ``{"name": "piecewise"|"cosine"|"wci_guarded"|"constant", ...}``;
    ``base_lr`` is used when the dict has none."""
    spec = dict(spec)
    name = spec.pop("name", "piecewise")
    lr = spec.pop("base_lr", spec.pop("lr", base_lr))
    if lr is None:
        raise UserInputError("a schedule needs base_lr")
    try:
        if name == "piecewise":
            return Piecewise(lr, **spec)
        if name == "cosine":
            spec.setdefault("epochs", epochs)
            return Cosine(lr, **spec)
        if name == "wci_guarded":
            return WCIGuarded(lr, **spec)
        if name == "constant" and not spec:
            return Schedule(lr)
    except TypeError as exc:
        raise UserInputError(f"bad options for schedule {name!r}: {exc}") from None
    raise UserInputError(f"unknown schedule {name!r} (or stray options {sorted(spec)}); use piecewise, cosine, wci_guarded, constant")
