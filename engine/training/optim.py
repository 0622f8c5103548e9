"""Optimizers over named parameter groups, and a learning-rate schedule that keeps working
when groups thaw later (each group's lr = its ``base_lr`` x one shared factor)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import TrainConfig


def build_optimizer(groups: list[dict[str, Any]], train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over ``groups`` (each with ``name``, ``params``, ``base_lr``, ``lr``)."""
    if train.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay, nesterov=train.momentum > 0
        )
    cls = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    # the fused kernel updates every parameter in one pass: on CPU ~5x faster per step than
    # the default (0.012 vs 0.063 s for MiniLM's 22M parameters, whose 30k x 384 embedding
    # table dominates). It walks parameter and state memory in step, so a resumed run must
    # restore the moments in the parameters' layout (checkpoint._match_param_layout).
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return cls(groups, lr=train.lr, weight_decay=train.weight_decay, fused=fused or None)


class LRSchedule:
    """Linear warm-up then cosine decay to 0 (or constant), stepped once per batch.

    ``factor(step)`` is in [0, 1]; every group's ``lr`` is ``base_lr * factor``. Its whole
    state is the step counter, so it checkpoints as ``{"step": n}``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, kind: str, total_steps: int, warmup_steps: int):
        self.optimizer = optimizer
        self.kind = kind
        self.total_steps = max(1, total_steps)
        self.warmup_steps = max(0, warmup_steps)
        self.step_count = 0
        self._set()

    def factor(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def _set(self) -> None:
        f = self.factor(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * f

    def step(self) -> None:
        self.step_count += 1
        self._set()

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step_count = int(state["step"])
        self._set()
