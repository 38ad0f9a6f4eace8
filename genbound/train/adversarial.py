"""Adversarial training with per-epoch tracking, checkpoints and exact resume.

Methods (``TrainConfig.method``):

- ``"pgd"``: PGD-AT (Madry et al. 2018): minimize ``CE(f(x_adv), y)`` with ``x_adv`` from PGD on
  the true label (l_inf or l_2, random start, ``attack_steps`` steps of ``attack_step_size``,
  default ``2.5 * eps / steps``), generated in eval mode against the current weights;
- ``"trades"``: TRADES (:mod:`genbound.train.trades`), ``beta = trades_beta``;
- ``"awp"``: PGD-AT at adversarially perturbed weights (:mod:`genbound.train.awp`), relative size
  ``awp_gamma``, from epoch ``awp_warmup`` on (PGD-AT before).

SGD with momentum and weight decay; the rate of every epoch comes from a schedule
(:mod:`genbound.train.schedules`). After every epoch the :class:`~genbound.train.tracking.Tracker`
measures the record of spec wci.md §1, which is appended to ``epochs.jsonl`` in the output folder,
the schedule is told the WCI, and a checkpoint is written (:mod:`genbound.train.checkpoint`).
With a validation split the run also records ``val_rob_acc`` and keeps the weights of the epoch with
the best validation robust accuracy (``best_val.pt``); ``early_stopping_patience`` stops the run after
that many epochs without improvement.

Randomness: the order of every epoch and the random start of every attack come from generators
seeded by ``derive_seed(seed, purpose, epoch, step)``, so a run resumed from its checkpoint draws
exactly what the uninterrupted run draws.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genbound.attacks import default_step_size
from genbound.curvature import pgd
from genbound.errors import UserInputError
from genbound.fileio import append_text, make_output_folder, write_text
from genbound.torch_utils import derive_seed, progress, save_torch
from genbound.train.awp import AWP
from genbound.train.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from genbound.train.schedules import Schedule, make_schedule
from genbound.train.tracking import TrackConfig, Tracker
from genbound.train.trades import trades_attack, trades_loss

METHODS = ("pgd", "trades", "awp")
LOG_NAME = "epochs.jsonl"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Everything that defines an adversarial-training run (recorded in ``study.json``)."""

    method: str = "pgd"
    eps: float = 0.1
    norm: str = "linf"
    attack_steps: int = 5
    attack_step_size: float | None = None
    clip: tuple[float, float] | None = (0.0, 1.0)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "piecewise", "milestones": [5], "factor": 0.1})
    trades_beta: float = 6.0
    awp_gamma: float = 5e-3
    awp_warmup: int = 0
    early_stopping_patience: int | None = None
    seed: int = 0
    track: TrackConfig = field(default_factory=TrackConfig)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserInputError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.norm not in ("linf", "l2"):
            raise UserInputError(f"norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.eps < 0 or self.attack_steps < 1:
            raise UserInputError("need eps >= 0 and attack_steps >= 1")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.weight_decay < 0:
            raise UserInputError("need epochs >= 1, batch_size >= 1, lr > 0, weight_decay >= 0")
        if not 0 <= self.momentum < 1:
            raise UserInputError(f"momentum must be in [0, 1), got {self.momentum}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clip"] = list(self.clip) if self.clip is not None else None
        return d

    @property
    def step_size(self) -> float:
        return self.attack_step_size if self.attack_step_size is not None else default_step_size(self.eps, self.attack_steps)


@dataclass
class TrainResult:
    """The run: its records (one per epoch), best/last summaries, schedule events, timings."""

    config: dict[str, Any]
    epochs: list[dict[str, Any]]
    best: dict[str, Any]
    last: dict[str, Any]
    best_val: dict[str, Any] | None
    schedule: dict[str, Any]
    protocol: dict[str, Any]
    seconds: float
    stopped_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "epochs": self.epochs, "best": self.best, "last": self.last,
                "best_val": self.best_val, "schedule": self.schedule, "protocol": self.protocol,
                "seconds": self.seconds, "stopped_early": self.stopped_early}


Callback = Callable[[int, dict[str, Any]], None]


def _summary(rec: dict[str, Any]) -> dict[str, Any]:
    keys = ("epoch", "lr", "train_rob_acc", "test_rob_acc", "clean_test_acc", "gap_acc", "wci")
    return {k: rec.get(k) for k in keys}


def _read_log(path: Path, nbytes: int) -> list[dict[str, Any]]:
    with open(path, "r+b") as f:
        f.truncate(nbytes)
        f.seek(0)
        return [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]


def _adv_batch(model: nn.Module, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    return pgd(model, x, y, eps=cfg.eps, norm=cfg.norm, steps=cfg.attack_steps, step_size=cfg.step_size,
               clip=cfg.clip, batch_size=x.shape[0], seed=seed)


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor,
                epoch: int, awp: AWP | None = None, on_step: Callable[[int], None] | None = None) -> float:
    """One epoch of ``cfg.method`` over ``(x, y)`` in a seeded order; returns the mean training loss."""
    n = x.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, 1, epoch)))
    total, steps = 0.0, 0
    for step, i in enumerate(range(0, n, cfg.batch_size)):
        idx = order[i : i + cfg.batch_size]
        xb, yb = x[idx], y[idx]
        aseed = derive_seed(cfg.seed, 2, epoch, step)
        if cfg.method == "trades":
            gen = torch.Generator(device=xb.device).manual_seed(aseed)
            xa = trades_attack(model, xb, eps=cfg.eps, norm=cfg.norm, steps=cfg.attack_steps,
                               step_size=cfg.step_size, clip=cfg.clip, generator=gen)
            model.train()
            loss = trades_loss(model, xb, xa, yb, cfg.trades_beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        else:
            xa = _adv_batch(model, cfg, xb, yb, aseed)
            model.train()
            use_awp = awp is not None and epoch >= cfg.awp_warmup
            if use_awp:
                awp.perturb(lambda xa=xa, yb=yb: F.cross_entropy(model(xa), yb))  # type: ignore[union-attr,misc]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xa), yb)
            loss.backward()
            if use_awp:
                awp.restore()  # type: ignore[union-attr]
        opt.step()
        total += float(loss.detach())
        steps += 1
        if on_step is not None:
            on_step(step)
    return total / max(steps, 1)


def train_adversarial(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    *,
    out_dir: str | Path,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    callbacks: Sequence[Callback] = (),
    snapshot_epochs: Sequence[int] = (),
    resume: bool = True,
    show_progress: bool = False,
) -> TrainResult:
    """Train ``model`` in place; write ``epochs.jsonl``, ``checkpoint.pt`` (and snapshots) to ``out_dir``.

    ``callbacks`` are called as ``cb(epoch, record)`` after the epoch's checkpoint is written (an
    exception there stops the run, which ``resume=True`` later continues from that checkpoint).
    ``snapshot_epochs``: epochs whose end-of-epoch model and optimizer state are also saved as
    ``snapshot_<epoch>.pt`` (the learning-dynamics experiment starts from one).
    """
    config.validate()
    out = Path(out_dir)
    make_output_folder(out)
    x_tr, y_tr = train
    x_te, y_te = test
    if x_tr.shape[0] == 0 or x_te.shape[0] == 0:
        raise UserInputError("the training and test sets must not be empty")
    sched: Schedule = make_schedule(config.schedule, epochs=config.epochs, base_lr=config.lr)
    opt = torch.optim.SGD(model.parameters(), lr=sched.lr(0), momentum=config.momentum,
                          weight_decay=config.weight_decay)
    awp = AWP(model, config.awp_gamma) if config.method == "awp" else None
    tracker = Tracker(config.track, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, eps=config.eps,
                      norm=config.norm, clip=config.clip, seed=config.seed, decay_epochs=sched.decay_epochs,
                      epochs=config.epochs, x_val=None if val is None else val[0], y_val=None if val is None else val[1])
    log = out / LOG_NAME
    ck = out / CHECKPOINT_NAME
    records: list[dict[str, Any]] = []
    start = 0
    best: dict[str, Any] = {}
    best_val: dict[str, Any] | None = None
    since_best = 0
    seconds = 0.0
    if resume and ck.exists():
        state = load_checkpoint(ck)
        if state.get("config") != config.to_dict():
            raise UserInputError(f"{ck} belongs to a run with another configuration; use a fresh --out or resume=False")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        start = int(state["epoch"]) + 1
        best = dict(state["best"])
        best_val = dict(state["best_val"]) if state["best_val"] is not None else None
        since_best = int(state["since_best"])
        seconds = float(state["seconds"])
        records = _read_log(log, int(state["log_bytes"]))
        set_rng_state(state["rng"])
    else:
        write_text(log, "")
    stopped = False
    for epoch in progress(range(start, config.epochs), enabled=show_progress, desc=config.method, unit="epoch"):
        if stopped:
            break
        t0 = time.perf_counter()
        lr = sched.lr(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        train_loss = train_epoch(model, opt, config, x_tr, y_tr, epoch, awp)
        rec = tracker.measure(model, epoch, lr)
        rec["train_loss"] = train_loss
        rec["phase"] = sum(1 for d in sched.decay_epochs if d <= epoch)
        sched.observe(epoch, rec["wci"])
        rec["epoch_s"] = time.perf_counter() - t0
        seconds += rec["epoch_s"]
        records.append(rec)
        append_text(log, json.dumps(rec) + "\n")  # a torn last line is cut off on resume (log_bytes)
        if not best or (rec["test_rob_acc"] is not None and rec["test_rob_acc"] > best["test_rob_acc"]):
            best = _summary(rec)
        if val is not None:
            if best_val is None or rec["val_rob_acc"] > best_val["val_rob_acc"]:
                best_val = {**_summary(rec), "val_rob_acc": rec["val_rob_acc"]}
                since_best = 0
                save_torch(model.state_dict(), out / "best_val.pt")
            else:
                since_best += 1
            if config.early_stopping_patience is not None and since_best >= config.early_stopping_patience:
                stopped = True
        if epoch in snapshot_epochs:
            save_torch({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "lr": lr},
                       out / f"snapshot_{epoch}.pt")
        save_checkpoint(ck, {
            "config": config.to_dict(), "model": model.state_dict(), "optimizer": opt.state_dict(),
            "schedule": sched.state_dict(), "epoch": epoch, "best": best, "best_val": best_val,
            "since_best": since_best, "seconds": seconds, "log_bytes": log.stat().st_size,
        })
        for cb in callbacks:
            cb(epoch, rec)
    return TrainResult(
        config=config.to_dict(), epochs=records, best=best, last=_summary(records[-1]) if records else {},
        best_val=best_val, schedule={**sched.describe(), "decay_epochs": sched.decay_epochs, **sched.state_dict()},
        protocol=tracker.protocol, seconds=seconds, stopped_early=stopped,
    )
