"""A killed run resumes from its checkpoint and ends with the uninterrupted run's metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genbound.train import train_adversarial
from tests.train.helpers import toy_config, toy_data, toy_model


class Killed(Exception):
    pass


def _kill_after(k: int):
    def cb(epoch: int, rec: dict) -> None:
        if epoch == k:
            raise Killed
    return cb


def _close(a, b, rel=1e-6):
    if a is None or b is None:
        return a is b
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(u, v, rel) for u, v in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
    return a == b


SKIP = {"measure_s", "epoch_s"}  # wall-clock fields


@pytest.mark.parametrize("method", ["pgd", "awp"])
def test_killed_run_resumes_to_same_metrics(tmp_path, method):
    torch.manual_seed(123)  # global state that a resumed run must also restore
    x, y = toy_data()
    train, test, val = (x[:100], y[:100]), (x[100:], y[100:]), (x[60:100], y[60:100])
    sched = {"name": "wci_guarded", "milestones": [2], "tau": 0.0, "patience": 1} if method == "pgd" else None
    cfg = toy_config(method, epochs=4, schedule=sched)
    full = train_adversarial(toy_model(), train, test, cfg, out_dir=tmp_path / "full", val=val, resume=False)

    torch.manual_seed(123)
    with pytest.raises(Killed):
        train_adversarial(toy_model(), train, test, cfg, out_dir=tmp_path / "cut", val=val, resume=False,
                          callbacks=[_kill_after(1)])
    # a partial line written after the checkpoint (killed while logging) must be discarded
    with open(tmp_path / "cut" / "epochs.jsonl", "a") as f:
        f.write('{"epoch": 2, "garbage"')
    torch.manual_seed(999)  # the resumed process starts from another global RNG state
    resumed = train_adversarial(toy_model(seed=7), train, test, cfg, out_dir=tmp_path / "cut", val=val, resume=True)

    assert len(resumed.epochs) == len(full.epochs) == 4
    for a, b in zip(full.epochs, resumed.epochs):
        a = {k: v for k, v in a.items() if k not in SKIP}
        b = {k: v for k, v in b.items() if k not in SKIP}
        assert _close(a, b), (a, b)
    assert _close(full.best, resumed.best) and _close(full.last, resumed.last)
    assert full.schedule == resumed.schedule
    lines = (tmp_path / "cut" / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(s)["epoch"] for s in lines] == [0, 1, 2, 3]


def test_resume_refuses_other_config(tmp_path):
    from genbound.errors import UserInputError

    x, y = toy_data()
    cfg = toy_config(epochs=1)
    train_adversarial(toy_model(), (x[:100], y[:100]), (x[100:], y[100:]), cfg, out_dir=tmp_path)
    cfg2 = toy_config(epochs=1, seed=5)
    with pytest.raises(UserInputError, match="another configuration"):
        train_adversarial(toy_model(), (x[:100], y[:100]), (x[100:], y[100:]), cfg2, out_dir=tmp_path)
