"""Fine-tuning with discriminative learning rates and optional gradual unfreezing.

* ``unfreeze: all | k`` — the top k backbone blocks train (the rest stay frozen).
* pretrained blocks train at ``train.lr * backbone_lr_mult``; the new head at ``train.lr``.
* ``gradual_unfreezing: {start_epoch: s, every_epochs: e}`` — the head trains alone for
  ``s`` epochs, then one more block thaws (from the top) every ``e`` epochs until k are.
"""

from __future__ import annotations

from .base import Strategy


class FineTune(Strategy):
    """Top-k (or all) pretrained blocks train at lr * backbone_lr_mult, optionally thawed gradually."""

    name = "fine-tune"

    def backbone_lr_mult(self) -> float:
        return self.config.backbone_lr_mult

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        k = num_blocks if self.config.unfreeze == "all" else int(self.config.unfreeze)
        gradual = self.config.gradual_unfreezing
        if gradual is None:
            return k
        if epoch <= gradual.start_epoch:
            return 0
        return min(k, (epoch - gradual.start_epoch - 1) // gradual.every_epochs + 1)
