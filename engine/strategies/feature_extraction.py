"""Feature extraction: the pretrained parts are a fixed function; only new parts train.

Every pretrained part runs in eval mode without autograd (``TransferModel.frozen_parts``).
Because the frozen part's output never changes, it only needs to be computed once per
sample (and augmented view): that is where the feature cache plugs in (``frozen_backbone
= True`` tells the training loop it may serve ``forward_features`` from a cache).
"""

from __future__ import annotations

from .base import Strategy


class FeatureExtraction(Strategy):
    """Frozen pretrained backbone (eval, no autograd); only the new head trains."""

    name = "feature-extraction"
    frozen_backbone = True

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return 0
