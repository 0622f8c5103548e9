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
* ``lhuc`` — learned per-unit scales on chosen hidden layers' outputs; pretrained
  weights frozen and unchanged, the scales saved alone (speaker adaptation).
* ``adapter`` — residual bottleneck adapters after chosen hidden layers; likewise.
* ``zero-shot`` — the pretrained model as it is: the "before" of an adaptation.
* ``source-only``, ``dann``, ``coral``, ``mmd`` — unsupervised domain adaptation from a
  labelled source (the stage's ``data``) to an unlabelled target (its extra dataset
  ``target``): fine-tuning on the source alone (the baseline), plus a gradient-reversed
  domain discriminator, a covariance-alignment or a multi-kernel MMD loss
  (:mod:`tlengine.strategies.domain_adaptation`).
* ``multitask`` — one shared backbone, the stage's head plus one head per auxiliary task
  (an extra dataset with its own labels), losses weighted fixed, by learned uncertainty or
  by GradNorm (:mod:`tlengine.strategies.multitask`).
"""

from .adapter import Adapter
from .base import NoArgs, StepContext, Strategy
from .domain_adaptation import CORAL, DANN, MMD, SourceOnly
from .feature_extraction import FeatureExtraction
from .fine_tune import FineTune
from .lhuc import LHUC
from .multitask import Multitask
from .scratch import Scratch
from .zero_shot import ZeroShot

BUILTIN_STRATEGIES: dict[str, type[Strategy]] = {
    "feature-extraction": FeatureExtraction,
    "fine-tune": FineTune,
    "scratch": Scratch,
    "lhuc": LHUC,
    "adapter": Adapter,
    "zero-shot": ZeroShot,
    "source-only": SourceOnly,
    "dann": DANN,
    "coral": CORAL,
    "mmd": MMD,
    "multitask": Multitask,
}

__all__ = [
    "BUILTIN_STRATEGIES",
    "CORAL",
    "DANN",
    "LHUC",
    "MMD",
    "Multitask",
    "Adapter",
    "FeatureExtraction",
    "FineTune",
    "NoArgs",
    "Scratch",
    "SourceOnly",
    "StepContext",
    "Strategy",
    "ZeroShot",
]
