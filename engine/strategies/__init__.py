"""Transfer strategies: what trains, at what learning rate, and how a step runs.

A strategy never knows the modality. It sees a model of named parts (pretrained parts
split into blocks, input side first; new parts trained whole), decides per epoch which
blocks train and at which learning rate each named parameter group runs, and may add
parts of its own (adapters, discriminators) and own the training step
(:class:`StepContext`). See :mod:`tlengine.strategies.base`.

Builtins (registered by the core plugin ``tlengine.builtin``):

* ``feature-extraction`` — frozen backbone (eval mode, no autograd), new head only.
* ``fine-tune`` — top-k blocks (or all) train at ``lr * backbone_lr_mult``, optionally
  thawed one block at a time (gradual unfreezing); BatchNorm in frozen blocks keeps its
  running statistics unless ``update_frozen_bn``.
* ``scratch`` — the same architecture from random init, everything trains at ``lr``:
  the baseline that shows what the pretrained weights are worth.
"""

from .base import NoArgs, StepContext, Strategy
from .feature_extraction import FeatureExtraction
from .fine_tune import FineTune
from .scratch import Scratch

BUILTIN_STRATEGIES: dict[str, type[Strategy]] = {
    "feature-extraction": FeatureExtraction,
    "fine-tune": FineTune,
    "scratch": Scratch,
}

__all__ = ["BUILTIN_STRATEGIES", "FeatureExtraction", "FineTune", "NoArgs", "Scratch", "StepContext", "Strategy"]
