"""Fine-tuning with discriminative learning rates and optional gradual unfreezing.

* ``unfreeze: all | k`` — the top k blocks of each pretrained part train (the rest stay frozen).
* pretrained blocks train at ``train.lr * backbone_lr_mult``; new parts at ``train.lr``.
* ``gradual_unfreezing: {start_epoch: s, every_epochs: e}`` — the new parts train alone for
  ``s`` epochs, then one more block thaws (from the top) every ``e`` epochs until k are.
* ``layer_decay: d`` — layer-wise learning-rate decay (ULMFiT's discriminative rates,
  BERT fine-tuning recipes): block i of n (0 = input side) trains at
  ``train.lr * backbone_lr_mult * d**(n-1-i)``, so the top block gets the part's rate and
  each block below a factor ``d`` less.
* ``parts: {<part>: {unfreeze, lr_mult, layer_decay, gradual_unfreezing, init}}`` — the same per part.
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

    def block_lr_mult(self, part: str, index: int, num_blocks: int) -> float:
        plan = self.part_plan(part)
        decay = plan.layer_decay if plan is not None and plan.layer_decay is not None else self.config.layer_decay
        mult = self.part_lr_mult(part)
        return mult if decay is None else mult * decay ** (num_blocks - 1 - index)
