"""The hooks of the template plugin: a backbone, a dataset, a strategy, a pipeline, a lifecycle hook.

tlengine imports this module through the entry point in ``pyproject.toml``::

    [project.entry-points.tlengine]
    template = "tlengine_template_plugin.plugin"

and calls every function below that is marked with ``@hookimpl`` and named like a hook in
:mod:`tlengine.hookspecs`. Registration hooks run once per process and add components to
registries by name; pipelines then refer to those names:

* backbone ``template/mlp`` - a tiny conv + MLP feature extractor (float [N,3,H,W] -> [N,64]);
* dataset ``template-stripes`` - horizontal / vertical / diagonal stripes, generated in memory;
* strategy ``template-mixup`` - fine-tuning with mixup and a learned temperature: its own
  arguments, a part of its own and its own training step (see :mod:`.strategies`);
* pipeline ``template-demo`` - ``tlengine run template-demo`` trains it end to end;
* ``tlengine_after_run`` - writes ``template_plugin.json`` into every run directory.

Keep module import cheap: torch and PIL are only imported inside the functions that need them
(the strategy module imports torch, so it is imported inside its registration hook).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from tlengine import hookimpl
from tlengine.data import DatasetSpec
from tlengine.errors import ConfigError, WeightsError

if TYPE_CHECKING:
    from tlengine.model import Backbone
    from tlengine.registry import Registry

ARCH = "template/mlp"
DATASET = "template-stripes"
FEATURE_DIM = 64
STRIPE_CLASSES = ["horizontal", "vertical", "diagonal"]
PIPELINES_DIR = Path(__file__).resolve().parent / "pipelines"


# ============================================================================ backbone
def _build_module(channels: int) -> Any:
    """The feature extractor: float [N,3,H,W] (any H, W >= 8) -> [N, 64].

    Two blocks, input side first: ``stem`` (two strided convs, pooled to 4x4, flattened)
    and ``mlp`` (one hidden layer). Strategies freeze and unfreeze these blocks.
    """
    from torch import nn

    stem = nn.Sequential(
        nn.Conv2d(3, channels, 3, stride=2, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1),
        nn.BatchNorm2d(2 * channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(4),  # any input size -> [N, 2C, 4, 4]
        nn.Flatten(),
    )
    mlp = nn.Sequential(nn.Linear(2 * channels * 16, FEATURE_DIM), nn.ReLU(inplace=True))
    return nn.Sequential(OrderedDict(stem=stem, mlp=mlp))


def _weights_file(weights: str, weights_registry: Any, base_dir: Path) -> Path:
    """``model.weights`` as a file: a registered weights name, or a path (relative to the
    pipeline's folder) to a state dict / tlengine run directory."""
    if weights_registry is not None and weights in weights_registry:
        return Path(weights_registry.get(weights).path())
    path = Path(weights).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.exists():
        raise WeightsError(
            f"weights '{weights}' for {ARCH} are neither a registered weights name "
            f"nor an existing file or run directory ({path})"
        )
    return path


def _backbone_state(state: dict[str, Any]) -> dict[str, Any]:
    """A tlengine checkpoint holds the whole TransferModel (``backbone.*`` and ``head.*``);
    keep only the backbone's keys, without the prefix. A bare backbone state dict passes as is."""
    if any(key.startswith("backbone.") for key in state):
        return {key[len("backbone.") :]: value for key, value in state.items() if key.startswith("backbone.")}
    return state


def template_mlp(
    *,
    weights: str | None,
    weights_registry: Any,
    base_dir: Path,
    input_size: int | None = None,
    channels: int = 16,
    **kwargs: Any,
) -> "Backbone":
    """Backbone factory for ``model.backbone: template/mlp``.

    Args:
        weights: ``model.weights`` - None for random init, else a registered weights name,
            a ``.safetensors``/``.pt`` state dict or a tlengine run directory.
        weights_registry: the engine's weights registry (to resolve names), may be None.
        base_dir: folder that relative weight paths are resolved in (the pipeline's).
        input_size: square input side in pixels; default 32.
        channels: width of the first conv (``model.args.channels``); the second has twice as many.

    Returns:
        A :class:`tlengine.model.Backbone` mapping float [N,3,H,W] to features [N,64].
    """
    from tlengine.model import Backbone
    from tlengine.weights import load_state_dict_file, load_strict

    if kwargs:
        raise ConfigError(
            [
                (f"model.args.{key}", f"unknown argument for backbone {ARCH} (it takes: channels)")
                for key in sorted(kwargs)
            ]
        )
    if not isinstance(channels, int) or channels < 1:
        raise ConfigError([("model.args.channels", "must be a positive integer")])
    module = _build_module(channels)
    if weights is not None:
        path = _weights_file(weights, weights_registry, Path(base_dir))
        state = _backbone_state(load_state_dict_file(path))
        load_strict(module, state, what=ARCH, source=str(path))
    return Backbone(
        module=module,
        feature_dim=FEATURE_DIM,
        blocks=[("stem", module.stem), ("mlp", module.mlp)],
        preprocessing={
            "input_size": input_size or 32,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "interpolation": "bilinear",
            "crop_pct": 1.0,
        },
        arch=ARCH,
    )


# ============================================================================= dataset
class StripesArgs(BaseModel):
    """``data.args`` of ``template-stripes`` (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    per_class: int = Field(20, ge=1, le=10_000, description="images per class")
    size: int = Field(32, ge=8, le=512, description="square image side in pixels")
    seed: int = Field(0, description="generation seed; the same seed gives the same images")


def _load_samples_class() -> type:
    """The image-classification plugin's ``ImageSamples``, or an equivalent local dataclass
    (so this template still imports if that plugin is not installed)."""
    try:
        from tlengine_plugins.image_classification.datasets import ImageSamples

        return ImageSamples
    except ImportError:
        from dataclasses import dataclass

        @dataclass
        class ImageSamples:  # same fields as the image-classification plugin's
            items: list
            classes: list
            source: str

        return ImageSamples


def render_stripes(kind: str, size: int, rng: Any) -> Any:
    """One RGB ``size`` x ``size`` PIL image of ``kind`` stripes (horizontal, vertical or
    diagonal) with random colours, stripe width (pixels), phase and a little pixel noise."""
    import numpy as np
    from PIL import Image

    # Two colours far enough apart that the stripes are always visible.
    while True:
        a, b = rng.integers(0, 256, size=(2, 3))
        if np.linalg.norm(a - b) > 120:
            break
    width = int(rng.integers(max(2, size // 16), max(3, size // 4) + 1))
    phase = int(rng.integers(0, 2 * width))
    y, x = np.mgrid[0:size, 0:size]
    if kind == "horizontal":
        coord = y
    elif kind == "vertical":
        coord = x
    else:  # either diagonal direction, so the class is "diagonal", not one slope
        coord = (x + y) if rng.random() < 0.5 else (x - y + size)
    mask = ((coord + phase) // width) % 2 == 0
    image = np.where(mask[..., None], a, b).astype(np.float32)
    image += rng.normal(0.0, 8.0, size=image.shape)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))  # uint8 [H,W,3] -> RGB


def build_stripes(args: StripesArgs, root: Path) -> Any:
    """``build`` of ``template-stripes``: ``per_class`` images of each of the three classes.

    Each image has its own generator seeded by ``(seed, class, index)``, so the images are
    the same on every machine and do not change when ``per_class`` grows. ``root`` is
    unused (nothing is read from disk).
    """
    import numpy as np

    samples_cls = _load_samples_class()
    items = []
    for label, kind in enumerate(STRIPE_CLASSES):
        for index in range(args.per_class):
            rng = np.random.default_rng([args.seed, label, index])
            items.append((render_stripes(kind, args.size, rng), label))
    source = (
        f"template-stripes ({len(STRIPE_CLASSES)} classes, {len(items)} images of "
        f"{args.size}x{args.size} px, seed {args.seed})"
    )
    return samples_cls(items=items, classes=list(STRIPE_CLASSES), source=source)


STRIPES = DatasetSpec(
    name=DATASET,
    task="image-classification",
    args=StripesArgs,
    build=build_stripes,
    description="synthetic horizontal/vertical/diagonal stripes (template plugin)",
)


# =============================================================================== hooks
@hookimpl
def tlengine_register_backbones(backbones: "Registry") -> None:
    backbones.add(ARCH, template_mlp, description="tiny conv+MLP, 64-d features (template plugin)")


@hookimpl
def tlengine_register_datasets(datasets: "Registry") -> None:
    datasets.add(DATASET, STRIPES, description=STRIPES.description)


@hookimpl
def tlengine_register_strategies(strategies: "Registry") -> None:
    from .strategies import STRATEGY, TemplateMixup

    strategies.add(
        STRATEGY, TemplateMixup, description="fine-tune with mixup and a learned temperature (template plugin)"
    )


@hookimpl
def tlengine_register_pipelines(pipelines: "Registry") -> None:
    pipelines.add(
        "template-demo",
        PIPELINES_DIR / "template-demo.yaml",
        description="template/mlp on template-stripes: fine-tune and template-mixup vs scratch (seconds on a CPU)",
    )


@hookimpl
def tlengine_after_run(run_dir: Path, summary: dict[str, Any]) -> None:
    """Lifecycle hook: record which pipeline ran and its arms. Must not change results."""
    record = {"pipeline": summary["pipeline"], "arms": sorted(summary.get("arms") or {})}
    (Path(run_dir) / "template_plugin.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
