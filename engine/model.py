"""The model every strategy works on: a pretrained backbone plus a new task head.

Strategies freeze, unfreeze and re-weight parts of a :class:`TransferModel` without
knowing the modality: they only see ``backbone``, ``head`` and ``blocks`` (the
backbone's stages in input-to-output order, which gradual unfreezing walks from the top).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class Backbone:
    """A feature extractor with its head removed, as a backbone factory returns it.

    module: maps the task's input batch (images: float [N,3,H,W]) to features [N,D]
        (or [N,C,H,W] / [N,T,D] for tasks whose head pools itself).
    feature_dim: D, the size of the features the new head receives.
    blocks: (name, submodule) pairs covering the backbone's parameters, input side first.
    preprocessing: what the inputs must look like, e.g. ``{"input_size": 224,
        "mean": [...], "std": [...], "interpolation": "bilinear"}``.
    arch: identity of the architecture (for weight checks and cache keys).
    """

    module: nn.Module
    feature_dim: int
    blocks: list[tuple[str, nn.Module]]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    arch: str = ""


class TransferModel(nn.Module):
    """``head(backbone(x))``, plus the bookkeeping strategies need.

    ``backbone_frozen`` (set by the feature-extraction strategy) runs the backbone under
    ``torch.no_grad()`` so no autograd graph is built for it.
    """

    def __init__(self, backbone: Backbone, head: nn.Module):
        super().__init__()
        self.backbone = backbone.module
        self.head = head
        self.block_names = [name for name, _ in backbone.blocks]
        self._blocks = backbone.blocks  # modules are children of self.backbone already
        self.preprocessing = dict(backbone.preprocessing)
        self.arch = backbone.arch
        self.feature_dim = backbone.feature_dim
        self.backbone_frozen = False

    @property
    def blocks(self) -> list[tuple[str, nn.Module]]:
        return list(self._blocks)

    def forward_features(self, x: Any) -> torch.Tensor:
        if self.backbone_frozen:
            with torch.no_grad():
                return self.backbone(x)
        return self.backbone(x)

    def forward(self, x: Any) -> torch.Tensor:
        return self.head(self.forward_features(x))
