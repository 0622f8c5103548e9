"""Scratch: same architecture, random init, everything trains — the baseline arm."""

from __future__ import annotations

from .base import Strategy


class Scratch(Strategy):
    """Same architecture from random init; everything trains at train.lr (the baseline)."""

    name = "scratch"
    uses_pretrained = False

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return num_blocks
