"""Piecewise, cosine and WCI-guarded schedules (the guard on synthetic WCI sequences)."""

from __future__ import annotations

import math

import pytest

from genbound.errors import UserInputError
from genbound.train import Cosine, Piecewise, WCIGuarded, make_schedule


def test_piecewise():
    s = Piecewise(0.1, [3, 5], 0.1)
    assert [round(s.lr(e), 12) for e in range(7)] == [0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert s.decay_epochs == [3, 5]
    with pytest.raises(UserInputError):
        Piecewise(0.1, [5, 3])


def test_cosine():
    s = Cosine(0.2, 10, min_lr=0.0)
    assert s.lr(0) == pytest.approx(0.2)
    assert s.lr(5) == pytest.approx(0.1)
    assert s.lr(10) == pytest.approx(0.0, abs=1e-15)
    assert all(s.lr(e) >= s.lr(e + 1) for e in range(10))
    assert s.lr(3) == pytest.approx(0.1 * (1 + math.cos(math.pi * 0.3)))


def _drive(s, seq):
    lrs = []
    for epoch, w in enumerate(seq):
        lrs.append(s.lr(epoch))
        s.observe(epoch, w)
    return lrs


def test_guard_freeze_cancels_later_decays():
    s = WCIGuarded(0.1, [2, 6], 0.1, tau=0.1, patience=2, mode="freeze")
    # WCI ignored before the first decay; after it: min 1.0, 1.05 within tau, then two values above 1.1
    # (epochs 4, 5) -> freeze at epoch 5
    lrs = _drive(s, [9, 9, 1.0, 1.05, 1.2, 1.3, 0.5, 0.5, 0.5])
    assert s.frozen_at == 5 and s.events[0]["action"] == "freeze"
    assert lrs[:2] == [0.1, 0.1]
    assert all(lr == pytest.approx(0.01) for lr in lrs[2:])  # the decay planned at 6 is cancelled


def test_guard_needs_consecutive_evaluations():
    s = WCIGuarded(0.1, [2, 6], 0.1, tau=0.1, patience=2, mode="freeze")
    lrs = _drive(s, [9, 9, 1.0, 1.2, 1.0, 1.2, 1.0, 1.2, 1.0])
    assert s.frozen_at is None and not s.events
    assert lrs[6] == pytest.approx(0.001)  # planned decay happens


def test_guard_raise_with_cap():
    s = WCIGuarded(0.1, [2], 0.1, tau=0.0, patience=1, mode="raise", gamma_up=3.0, cap=0.05)
    lrs = _drive(s, [5, 5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert lrs[2] == pytest.approx(0.01) and lrs[3] == pytest.approx(0.01)
    assert lrs[4] == pytest.approx(0.03)  # raised after epoch 3
    assert lrs[5] == pytest.approx(0.05)  # capped
    assert [e["action"] for e in s.events] == ["raise"] * 4


def test_guard_state_roundtrip():
    s = WCIGuarded(0.1, [1], tau=0.0, patience=1)
    _drive(s, [1, 1, 2])
    t = WCIGuarded(0.1, [1], tau=0.0, patience=1)
    t.load_state_dict(s.state_dict())
    assert all(t.lr(e) == s.lr(e) for e in range(6))


def test_make_schedule():
    assert isinstance(make_schedule({"name": "cosine"}, epochs=5, base_lr=0.1), Cosine)
    with pytest.raises(UserInputError):
        make_schedule({"name": "nope"}, epochs=5, base_lr=0.1)
    with pytest.raises(UserInputError):
        make_schedule({"name": "wci_guarded", "milestones": [2], "mode": "sideways"}, epochs=5, base_lr=0.1)
