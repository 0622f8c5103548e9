"""Fine-tuning with discriminative learning rates and optional gradual unfreezing.

* ``unfreeze: all | k`` — the top k blocks of each pretrained part train (the rest stay frozen).
* pretrained blocks train at ``train.lr * backbone_lr_mult``; new parts at ``train.lr``.
* ``gradual_unfreezing: {start_epoch: s, every_epochs: e}`` — the new parts train alone for
  ``s`` epochs, then one more block thaws (from the top) every ``e`` epochs until k are.
* ``parts: {<part>: {unfreeze, lr_mult, gradual_unfreezing, init}}`` — the same per part.
"""

from __future__ import annotations

from .base import Strategy, blocks_to_train


class FineTune(Strategy):
    """Top-k (or all) pretrained blocks train at lr * backbone_lr_mult, optionally thawed gradually."""

    name = "fine-tune"

    def backbone_lr_mult(self) -> float:
        return self.config.backbone_lr_mult

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return blocks_to_train(self.config.unfreeze, self.config.gradual_unfreezing, num_blocks, epoch)
