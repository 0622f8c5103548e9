"""``zero-shot``: the pretrained model as it is, trained on nothing.

The "before" of every adaptation experiment (a speech recogniser before it meets the
new speaker): the arm is evaluated on the same splits as the arms that train, so their
gains over it are measured, not assumed. It needs a model that works without training
(no new random head): e.g. an encoder-decoder recogniser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model import TransferModel
from .base import Strategy

if TYPE_CHECKING:
    from ..task import Task, TaskData


class ZeroShot(Strategy):
    """The pretrained model unchanged: no parameter trains."""

    name = "zero-shot"
    fits_directly = True

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return 0

    def fit(self, task: "Task", model: TransferModel, data: "TaskData", *, seed: int) -> None:
        """Nothing to fit: the arm is the pretrained model."""

    def describe(self, model: TransferModel, epoch: int) -> str:
        return "pretrained model unchanged"
