"""Visual encoders for image captioning: a classification backbone's last conv grid as tokens.

:func:`build_grid_encoder` builds the image plugin's classification backbone with its own
:func:`~tlengine_plugins.image_classification.backbones.build_backbone` (so every kind of
``model.weights`` it understands works unchanged: None, named weights, a torchvision enum
such as ``IMAGENET1K_V1`` from the torch hub cache or the network, a file, a run
directory) and wraps it in a :class:`GridTokens` module that stops at the last
convolutional feature map, *before* the global pooling, and returns it as a sequence of
visual tokens ``[N, T=H*W, C]`` in row-major order (token ``h*W + w`` is grid cell
``(h, w)``). VGG16 at 224 px: its ``features`` output (after the fifth max-pool),
7x7x512, i.e. T=49, C=512.

What is kept and what is dropped. :class:`GridTokens` holds the original model's
top-level children under their own names, so its state-dict keys are the classification
model's own (``features.0.weight``, ``layer4.2.conv3.weight``, ``blocks.6.0...``): a
backbone trained by this engine's image-classification task, or any checkpoint
``build_backbone`` loads, fits it. Children the grid never runs are dropped from the
module, as the detector's ``MultiScaleBackbone`` does:

* parameter-free ones (the global / adaptive pooling, the stripped classifier);
* the ones *with* parameters that only run after the pooling: VGG's (and AlexNet's)
  ``classifier`` (fc6, fc7 - the fc8 ``Linear`` is already stripped by
  ``build_backbone``), MobileNetV3's pre-logits ``Linear`` and timm MobileNetV3's
  ``conv_head``. Their names are in :attr:`GridTokens.dropped`; their blocks are removed
  from the encoder's blocks, so a strategy never sees parameters that get no gradient.

The blocks are the backbone's own blocks minus the dropped ones; a block that would be
only partly used is a ConfigError (none of the supported architectures has one).

A frozen encoder's output ``[N, T, C]`` is what the feature cache stores (layout
``sequence``, every image has the same T, so no lengths).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tlengine.blocks import check_partition
from tlengine.errors import ConfigError
from tlengine.model import Backbone
from torch import Tensor, nn

__all__ = ["GRID_ENCODERS", "ENCODER_ALIASES", "GridEncoder", "GridTokens", "build_grid_encoder", "grid_steps"]

#: The encoders issue #11 names; any other backbone whose grid :func:`grid_steps` can
#: find (torchvision VGG/AlexNet, ResNet family, MobileNet/EfficientNet/ConvNeXt
#: ``features``, timm EfficientNet/MobileNet) works too.
GRID_ENCODERS: tuple[str, ...] = (
    "vgg16",
    "vgg19",
    "resnet50",
    "mobilenet_v2",
    "timm/tf_efficientnet_lite0",
    "timm/tf_efficientnet_lite1",
    "timm/tf_efficientnet_lite2",
)

#: Short names for the timm EfficientNet-Lite encoders.
ENCODER_ALIASES: dict[str, str] = {f"tf_efficientnet_lite{i}": f"timm/tf_efficientnet_lite{i}" for i in (0, 1, 2)}

DEFAULT_ENCODER = "vgg16"


def grid_steps(model: nn.Module, arch: str) -> list[str]:
    """The modules of classification model ``model`` that produce its last conv grid, in
    execution order (qualified names in ``model``); ConfigError for an unknown layout."""
    children = dict(model.named_children())
    if all(k in children for k in ("conv1", "bn1", "relu", "maxpool", "layer4")):  # torchvision ResNet family
        return ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    if "conv_stem" in children and "blocks" in children:  # timm EfficientNet / MobileNet family
        steps = ["conv_stem", "bn1", "blocks"]
        # EfficientNet's conv_head + bn2 run before the pooling (part of the grid);
        # MobileNetV3's conv_head runs after it (dropped with the head).
        return steps + (["conv_head", "bn2"] if "bn2" in children and "conv_head" in children else [])
    if isinstance(children.get("features"), nn.Sequential) and not arch.startswith("densenet"):
        # torchvision VGG, AlexNet, MobileNetV2/V3, EfficientNet, ConvNeXt: features -> pool -> classifier
        return ["features"]
    raise ConfigError(
        [
            (
                "model.backbone",
                f"{arch} has no known conv-grid layout for captioning; use one of {', '.join(GRID_ENCODERS)}",
            )
        ]
    )


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


class GridTokens(nn.Module):
    """A classification backbone run up to its last conv grid, returned as tokens.

    ``forward`` maps images ``[N,3,H,W]`` to ``[N, T, C]`` (T = h*w of the grid, row-major);
    :meth:`forward_grid` returns the grid itself ``[N, C, h, w]``.

    Attributes: ``steps`` (qualified module names run in order), ``dropped`` (top-level
    children with parameters that the grid never runs, e.g. VGG's ``classifier``),
    ``arch``.
    """

    def __init__(self, model: nn.Module, arch: str):
        super().__init__()
        self.steps = grid_steps(model, arch)
        used = {s.split(".", 1)[0] for s in self.steps}
        for name, child in model.named_children():
            if name in used:
                self.add_module(name, child)
        self.dropped = [n for n, c in model.named_children() if n not in used and _has_params(c)]
        loose = [n for n, _ in model.named_parameters(recurse=False)]
        if loose:
            raise ConfigError([("model.backbone", f"{arch} has parameters outside its modules: {', '.join(loose)}")])
        self.arch = arch

    def forward_grid(self, x: Tensor) -> Tensor:
        """The last conv feature map ``[N, C, h, w]`` (before any pooling)."""
        for step in self.steps:
            x = self.get_submodule(step)(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        grid = self.forward_grid(x)
        return grid.flatten(2).transpose(1, 2).contiguous()

    @torch.no_grad()
    def grid_shape_for(self, input_size: int) -> tuple[int, int, int]:
        """``(h, w, C)`` of the grid for ``input_size`` x ``input_size`` images, computed on
        the meta device: no real forward pass, nothing in the module changes."""
        from torch.func import functional_call

        probe = _GridProbe(self)
        tensors = {n: torch.empty_like(t, device="meta") for n, t in probe.named_parameters()}
        tensors.update({n: torch.empty_like(t, device="meta") for n, t in probe.named_buffers()})
        was_training = self.training
        self.eval()  # batch norm must not update its (meta) running statistics
        try:
            grid = functional_call(probe, tensors, (torch.empty(1, 3, input_size, input_size, device="meta"),))
        finally:
            self.train(was_training)
        return int(grid.shape[2]), int(grid.shape[3]), int(grid.shape[1])


class _GridProbe(nn.Module):
    """``body.forward_grid`` as a module, for ``functional_call``."""

    def __init__(self, body: GridTokens):
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return self.body.forward_grid(x)


@dataclass
class GridEncoder(Backbone):
    """A :class:`~tlengine.model.Backbone` whose module (a :class:`GridTokens`) returns
    visual tokens ``[N, T, C]``; ``feature_dim`` is C.

    grid_shape: ``(h, w, C)`` at ``preprocessing["input_size"]`` (VGG16 at 224: (7, 7, 512)).
    """

    grid_shape: tuple[int, int, int] = (0, 0, 0)

    @property
    def channels(self) -> int:
        """C, the width of a visual token."""
        return self.grid_shape[2]

    @property
    def num_tokens(self) -> int:
        """T = h*w, the number of visual tokens per image."""
        return self.grid_shape[0] * self.grid_shape[1]


def _used_blocks(body: nn.Module, backbone: Backbone) -> list[tuple[str, nn.Module]]:
    """The backbone's blocks without those ``body`` never runs; ConfigError for a block
    only partly used."""
    used = {id(p) for p in body.parameters()}
    blocks = []
    for name, block in backbone.blocks:
        ids = {id(p) for p in block.parameters()}
        if ids and ids.isdisjoint(used):
            continue
        if not ids <= used:
            raise ConfigError(
                [("model.backbone", f"block '{name}' of {backbone.arch} is only partly used by the grid encoder")]
            )
        blocks.append((name, block))
    return blocks


def build_grid_encoder(
    name: str = DEFAULT_ENCODER,
    *,
    weights: str | None,
    weights_registry: Any,
    base_dir: Path,
    input_size: int | None = 224,
    **kwargs: Any,
) -> GridEncoder:
    """Build the captioning encoder ``name`` (see :data:`GRID_ENCODERS`; short names in
    :data:`ENCODER_ALIASES`) returning visual tokens ``[N, T, C]``.

    ``weights``/``weights_registry``/``base_dir``/``input_size``/``kwargs``: as for the
    image plugin's ``build_backbone``, which builds and loads the classification model
    (WeightsError / ConfigError / UnknownNameError come from there). ``input_size`` None
    keeps the architecture's default.
    """
    from tlengine_plugins.image_classification.backbones import build_backbone

    name = ENCODER_ALIASES.get(name, name)
    backbone = build_backbone(
        name,
        weights=weights,
        weights_registry=weights_registry,
        base_dir=Path(base_dir),
        input_size=input_size,
        **kwargs,
    )
    body = GridTokens(backbone.module, backbone.arch)
    blocks = _used_blocks(body, backbone)
    problems = check_partition(body, blocks)
    if problems:
        raise RuntimeError(f"bug: the blocks of {backbone.arch} do not partition the grid encoder: {problems[:3]}")
    size = int(backbone.preprocessing["input_size"])
    grid_shape = body.grid_shape_for(size)
    if grid_shape[0] * grid_shape[1] == 0:
        raise ConfigError([("model.input_size", f"{backbone.arch} gives an empty grid at {size} px")])
    return GridEncoder(
        module=body,
        feature_dim=grid_shape[2],
        blocks=blocks,
        preprocessing=dict(backbone.preprocessing),
        arch=backbone.arch,
        grid_shape=grid_shape,
    )
