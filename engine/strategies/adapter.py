"""Residual bottleneck adapters (Houlsby et al., 2019) after chosen hidden layers.

Each chosen layer's output h [..., D] becomes ``h + up(act(down(norm(h))))`` with
``down`` D -> ``bottleneck`` and ``up`` bottleneck -> D. ``up`` starts at zero, so the
model starts exactly as pretrained. Only the adapters train; they are saved alone in
``own.safetensors`` and every pretrained weight stays bit-identical.

``strategy.args``: ``bottleneck`` (hidden size of each adapter), ``dropout``, ``parts``,
``layers`` (top N per part, or ``all``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import nn

from ..model import TransferModel
from .base import Strategy
from .hidden_units import LayerChoice, choose_layers, hook_layers, module_key

if TYPE_CHECKING:
    from ..task import TaskData


class AdapterArgs(LayerChoice):
    bottleneck: int = Field(32, ge=1, description="hidden size of each adapter")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class BottleneckAdapter(nn.Module):
    """``h + up(gelu(down(layer_norm(h))))`` on h [..., D]; identity at initialisation."""

    def __init__(self, width: int, bottleneck: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.up(self.dropout(nn.functional.gelu(self.down(self.norm(h.float())))))
        return h + z.to(h.dtype)


class Adapter(Strategy):
    """Residual bottleneck adapters after chosen hidden layers; all pretrained weights frozen."""

    name = "adapter"
    Args = AdapterArgs

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return 0

    def prepare(self, model: TransferModel, data: "TaskData | None") -> None:
        layers = choose_layers(model, self.args, self.name)
        adapters = nn.ModuleDict(
            {
                module_key(layer): BottleneckAdapter(layer.width, self.args.bottleneck, self.args.dropout)
                for layer in layers
            }
        )
        model.add_part("adapters", adapters, owner="strategy")
        hook_layers(model, layers, adapters)

    def describe(self, model: TransferModel, epoch: int) -> str:
        n = len(model.part("adapters").module)
        return f"bottleneck-{self.args.bottleneck} adapters after {n} layers, pretrained weights frozen"
