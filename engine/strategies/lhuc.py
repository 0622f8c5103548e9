"""LHUC: learning hidden unit contributions (Swietojanski, Li & Renals, 2016).

Each chosen hidden layer's output h [..., D] becomes ``2 * sigmoid(r) * h`` with one
learned amplitude per hidden unit (r [D], starting at 0, so the model starts unchanged
and each unit's contribution stays in (0, 2)). Only the scales train: for a 384-wide
4+4-layer Whisper that is 3,072 parameters per speaker, saved alone in
``own.safetensors`` while every pretrained weight stays bit-identical.

``strategy.args``: ``parts`` (default: every part with hidden layers), ``layers`` (top
N per part, or ``all``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ..model import TransferModel
from .base import Strategy
from .hidden_units import LayerChoice, choose_layers, hook_layers, module_key

if TYPE_CHECKING:
    from ..task import TaskData


class LHUCScale(nn.Module):
    """``2 * sigmoid(r) * h`` over the last axis of h [..., D]; r [D] starts at 0 (identity)."""

    def __init__(self, width: int):
        super().__init__()
        self.r = nn.Parameter(torch.zeros(width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * (2.0 * torch.sigmoid(self.r)).to(h.dtype)


class LHUC(Strategy):
    """Per-unit learned scales on the outputs of chosen hidden layers; all pretrained weights frozen."""

    name = "lhuc"
    Args = LayerChoice

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return 0

    def prepare(self, model: TransferModel, data: "TaskData | None") -> None:
        layers = choose_layers(model, self.args, self.name)
        scales = nn.ModuleDict({module_key(layer): LHUCScale(layer.width) for layer in layers})
        model.add_part("lhuc", scales, owner="strategy")
        hook_layers(model, layers, scales)

    def describe(self, model: TransferModel, epoch: int) -> str:
        return f"LHUC scales on {len(model.part('lhuc').module)} layers, pretrained weights frozen"
