"""Transfer strategies: which parts of a TransferModel train, and at what learning rate.

A strategy never knows the modality. It sees the model's ``backbone`` (split into
``blocks``, input side first) and ``head``, and decides per epoch which blocks are
trainable, which learning rate each named parameter group gets, and which modules run
in eval mode while training.

Builtins (registered by the core plugin ``tlengine.builtin``):

* ``feature-extraction`` — frozen backbone (eval mode, no autograd), new head only.
* ``fine-tune`` — top-k blocks (or all) train at ``lr * backbone_lr_mult``, optionally
  thawed one block at a time (gradual unfreezing); BatchNorm in frozen blocks keeps its
  running statistics unless ``update_frozen_bn``.
* ``scratch`` — the same architecture from random init, everything trains at ``lr``:
  the baseline that shows what the pretrained weights are worth.
"""

from .base import Strategy
from .feature_extraction import FeatureExtraction
from .fine_tune import FineTune
from .scratch import Scratch

BUILTIN_STRATEGIES: dict[str, type[Strategy]] = {
    "feature-extraction": FeatureExtraction,
    "fine-tune": FineTune,
    "scratch": Scratch,
}

__all__ = ["BUILTIN_STRATEGIES", "FeatureExtraction", "FineTune", "Scratch", "Strategy"]
