"""Feature extraction: the pretrained backbone is a fixed function; only the head trains.

The backbone runs in eval mode under ``torch.no_grad()`` (``TransferModel.backbone_frozen``).
Because its output never changes, it only needs to be computed once per sample (and
augmented view): that is where the feature cache plugs in (``frozen_backbone = True``
tells the training loop it may serve features from a cache instead of the backbone).
"""

from __future__ import annotations

from .base import Strategy


class FeatureExtraction(Strategy):
    """Frozen pretrained backbone (eval, no autograd); only the new head trains."""

    name = "feature-extraction"
    frozen_backbone = True

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return 0
