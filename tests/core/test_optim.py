"""engine/training/optim.py: the optimizer each ``train.optimizer`` builds, and the lr schedule.

Gradient clipping (``train.grad_clip`` -> ``torch.nn.utils.clip_grad_norm_``) lives in the
training loop and is not tested here.
"""

from __future__ import annotations

import math

import pytest
import torch
from tlengine.config import TrainConfig
from tlengine.training.optim import LRSchedule, build_optimizer


def _groups(*base_lrs: float) -> list[dict]:
    """One group per base lr, each over its own small parameter (as strategies build them)."""
    return [
        {"name": f"g{i}", "params": [torch.nn.Parameter(torch.zeros(3))], "base_lr": lr, "lr": lr}
        for i, lr in enumerate(base_lrs)
    ]


def _lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [g["lr"] for g in optimizer.param_groups]


# ------------------------------------------------------------------ build_optimizer
@pytest.mark.parametrize("momentum, nesterov", [(0.9, True), (0.5, True), (0.0, False)])
def test_sgd_momentum_nesterov_and_weight_decay(momentum, nesterov):
    opt = build_optimizer(_groups(0.1), TrainConfig(optimizer="sgd", lr=0.1, momentum=momentum, weight_decay=0.01))
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert group["momentum"] == momentum
    assert group["nesterov"] is nesterov  # nesterov only when there is momentum (torch refuses otherwise)
    assert group["weight_decay"] == 0.01


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_adam_and_adamw_with_weight_decay(name, cls):
    opt = build_optimizer(_groups(1e-3, 1e-4), TrainConfig(optimizer=name, lr=1e-3, weight_decay=0.05))
    assert type(opt) is cls  # AdamW is not an Adam subclass in every torch, so compare exactly
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.05]
    assert [g["name"] for g in opt.param_groups] == ["g0", "g1"]
    assert _lrs(opt) == [1e-3, 1e-4]  # each group keeps its own lr, not train.lr


def test_default_optimizer_is_adamw():
    assert type(build_optimizer(_groups(1e-3), TrainConfig())) is torch.optim.AdamW


def test_built_optimizer_steps_the_parameters():
    groups = _groups(0.1)
    param = groups[0]["params"][0]
    opt = build_optimizer(groups, TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0))
    param.grad = torch.ones_like(param)
    opt.step()
    assert torch.allclose(param.detach(), torch.full((3,), -0.1))


# ------------------------------------------------------------------ LRSchedule
def _schedule(kind: str, total: int, warmup: int, *base_lrs: float) -> tuple[torch.optim.Optimizer, LRSchedule]:
    opt = build_optimizer(_groups(*base_lrs), TrainConfig(optimizer="sgd", lr=base_lrs[0]))
    return opt, LRSchedule(opt, kind=kind, total_steps=total, warmup_steps=warmup)


def test_constant_schedule_keeps_base_lr():
    opt, sched = _schedule("constant", 20, 0, 0.01)
    for _ in range(25):  # past total_steps too
        assert _lrs(opt) == [0.01]
        sched.step()


def test_cosine_decays_monotonically_to_zero_at_total_steps():
    total = 50
    opt, sched = _schedule("cosine", total, 0, 0.1)
    seen = [_lrs(opt)[0]]
    for _ in range(total):
        sched.step()
        seen.append(_lrs(opt)[0])
    assert seen[0] == pytest.approx(0.1)
    assert seen[total // 2] == pytest.approx(0.05)  # half way down the cosine
    assert seen[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(seen, seen[1:]))
    assert seen[1] < seen[0]
    sched.step()  # past the end it stays at 0 instead of rising again
    assert _lrs(opt)[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kind", ["constant", "cosine"])
def test_warmup_rises_linearly_then_follows_the_schedule(kind):
    warmup, total, base = 4, 20, 0.1
    opt, sched = _schedule(kind, total, warmup, base)
    warm = []
    for _ in range(warmup):
        warm.append(_lrs(opt)[0])
        sched.step()
    steps = [b - a for a, b in zip(warm, warm[1:])]
    assert warm[0] > 0  # the first batch already learns
    assert all(s > 0 for s in steps) and max(steps) == pytest.approx(min(steps))  # linear
    assert warm[-1] < base
    assert _lrs(opt)[0] == pytest.approx(base)  # warm-up done: the schedule starts at the full lr
    after = [_lrs(opt)[0]]
    for _ in range(total - warmup):
        sched.step()
        after.append(_lrs(opt)[0])
    if kind == "constant":
        assert after == pytest.approx([base] * len(after))
    else:
        assert after[-1] == pytest.approx(0.0, abs=1e-12)
        # cosine over the steps after warm-up
        n = total - warmup
        assert after == pytest.approx([base * 0.5 * (1 + math.cos(math.pi * i / n)) for i in range(n + 1)])


@pytest.mark.parametrize("kind, warmup", [("cosine", 0), ("cosine", 5), ("constant", 3)])
def test_group_multipliers_are_preserved_at_every_step(kind, warmup):
    opt, sched = _schedule(kind, 30, warmup, 1e-3, 1e-4)
    for _ in range(29):  # stop before the cosine reaches exactly 0
        high, low = _lrs(opt)
        assert low > 0
        assert high / low == pytest.approx(10.0)
        sched.step()


def test_state_dict_round_trip_mid_schedule():
    opt, sched = _schedule("cosine", 40, 5, 1e-3, 1e-4)
    for _ in range(17):
        sched.step()
    state = sched.state_dict()
    expected = _lrs(opt)

    fresh_opt, fresh = _schedule("cosine", 40, 5, 1e-3, 1e-4)
    assert _lrs(fresh_opt) != pytest.approx(expected)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert _lrs(fresh_opt) == pytest.approx(expected)  # lr restored immediately, before any step
    for _ in range(10):  # and both continue identically
        sched.step()
        fresh.step()
        assert _lrs(fresh_opt) == pytest.approx(_lrs(opt))
