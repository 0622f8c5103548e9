"""Hook implementations of the builtin image-captioning plugin.

Registered through tlengine's own ``[project.entry-points.tlengine]``, exactly as a
third-party plugin would be. The encoders and their named weights are the image plugin's
backbones, the decoder checkpoints the text plugin's (one weights registry).
"""

from __future__ import annotations

from pathlib import Path

from tlengine import hookimpl
from tlengine.registry import Registry

PIPELINES_DIR = Path(__file__).parent / "pipelines"
PIPELINES = {
    "captioning-quickstart": "ImageNet encoder + MiniLM decoder -> captions of synthetic scenes: transferred "
    "encoder and decoder vs random ones (needs the [pretrained] extra)",
}


@hookimpl
def tlengine_register_tasks(tasks: Registry) -> None:
    from .task import ImageCaptioningTask

    tasks.add(
        ImageCaptioningTask.name,
        ImageCaptioningTask,
        description="image captioning (grid encoder + BERT decoder), BLEU-1..4 and CIDEr-D",
    )


@hookimpl
def tlengine_register_datasets(datasets: Registry) -> None:
    from .datasets import register_datasets

    register_datasets(datasets)


@hookimpl
def tlengine_register_pipelines(pipelines: Registry) -> None:
    for name, description in PIPELINES.items():
        path = PIPELINES_DIR / f"{name}.yaml"
        if path.is_file():
            pipelines.add(name, path, description=description)
