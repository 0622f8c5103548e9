"""The Strategy base class: per-epoch freezing plan plus named parameter groups."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from ..config import StrategyConfig
from ..model import TransferModel

_BN_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


class Strategy:
    """Decides what trains. Subclasses override :meth:`trainable_blocks` (and flags).

    Lifecycle, called by the training loop:
      1. ``param_groups(model, lr)`` once, before the optimizer is built. Every backbone
         block gets its own named group up front (``backbone.<block>``), so gradual
         unfreezing never has to add groups and a resumed optimizer always matches.
      2. ``apply(model, epoch)`` at the start of every epoch (``epoch`` counts from 1):
         sets ``requires_grad`` for the epoch's plan.
      3. ``train_mode(model)`` after ``apply``: ``model.train()`` except frozen parts.
    """

    name: ClassVar[str] = ""
    #: whether the arm starts from pretrained weights (False for the scratch baseline)
    uses_pretrained: ClassVar[bool] = True
    #: whether the whole backbone is frozen for the entire run (the feature-cache seam)
    frozen_backbone: ClassVar[bool] = False

    def __init__(self, config: StrategyConfig):
        self.config = config

    # ------------------------------------------------------------------ the plan
    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        """How many backbone blocks, counted from the top, train in ``epoch`` (from 1)."""
        raise NotImplementedError

    def backbone_lr_mult(self) -> float:
        return 1.0

    # ------------------------------------------------------------------ mechanics
    def param_groups(self, model: TransferModel, lr: float) -> list[dict[str, Any]]:
        """Named parameter groups: ``head`` at ``lr``, ``backbone.<block>`` at ``lr * mult``.

        Each group carries ``base_lr`` (the schedule multiplies it) and ``name``.
        """
        groups = [{"name": "head", "params": list(model.head.parameters()), "base_lr": lr, "lr": lr}]
        blr = lr * self.backbone_lr_mult()
        for name, block in model.blocks:
            params = list(block.parameters())
            if params:
                groups.append({"name": f"backbone.{name}", "params": params, "base_lr": blr, "lr": blr})
        return groups

    def frozen_block_indices(self, model: TransferModel, epoch: int) -> set[int]:
        n = len(model.blocks)
        k = max(0, min(n, self.trainable_blocks(n, epoch)))
        return set(range(n - k))

    def apply(self, model: TransferModel, epoch: int) -> list[str]:
        """Set ``requires_grad`` for ``epoch``; returns the names of trainable blocks."""
        model.backbone_frozen = self.frozen_backbone
        frozen = self.frozen_block_indices(model, epoch)
        for p in model.head.parameters():
            p.requires_grad_(True)
        trainable = []
        for i, (name, block) in enumerate(model.blocks):
            for p in block.parameters():
                p.requires_grad_(i not in frozen)
            if i not in frozen:
                trainable.append(name)
        self._frozen = frozen
        return trainable

    def train_mode(self, model: TransferModel) -> None:
        """``model.train()``, then frozen blocks back to eval so BatchNorm statistics and
        dropout stay as pretrained (BatchNorm may update if ``update_frozen_bn``)."""
        model.train()
        for i, (_, block) in enumerate(model.blocks):
            if i in self._frozen:
                block.eval()
                if self.config.update_frozen_bn:
                    for m in block.modules():
                        if isinstance(m, nn.modules.batchnorm._BatchNorm):
                            m.train()

    def describe(self, model: TransferModel, epoch: int) -> str:
        n = len(model.blocks)
        k = n - len(self.frozen_block_indices(model, epoch))
        return f"{k}/{n} backbone blocks trainable"
