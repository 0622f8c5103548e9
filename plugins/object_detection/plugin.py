"""Hook implementations of the builtin object-detection plugin.

Registered through tlengine's own ``[project.entry-points.tlengine]``, exactly as a
third-party plugin would be. The backbones and their named weights are the image plugin's
(one registry), so every ImageNet backbone it offers can carry a detector.
"""

from __future__ import annotations

from pathlib import Path

from tlengine import hookimpl
from tlengine.registry import Registry

PIPELINES_DIR = Path(__file__).parent / "pipelines"
PIPELINES = {
    "detection-quickstart": "ImageNet EfficientNet-Lite0 -> a detector for 3 shape classes from few synthetic "
    "scenes: feature-extraction and fine-tune vs scratch (needs the [pretrained] extra)",
}


@hookimpl
def tlengine_register_tasks(tasks: Registry) -> None:
    from .task import ObjectDetectionTask

    tasks.add(ObjectDetectionTask.name, ObjectDetectionTask, description="object detection (boxes + classes), COCO mAP")


@hookimpl
def tlengine_register_datasets(datasets: Registry) -> None:
    from .datasets import register_datasets
    from .synthetic import synthetic_scenes_spec

    register_datasets(datasets)
    spec = synthetic_scenes_spec()
    datasets.add(spec.name, spec, description=spec.description)


@hookimpl
def tlengine_register_pipelines(pipelines: Registry) -> None:
    for name, description in PIPELINES.items():
        path = PIPELINES_DIR / f"{name}.yaml"
        if path.is_file():
            pipelines.add(name, path, description=description)
