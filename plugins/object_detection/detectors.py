"""Detectors on the engine's backbones: torchvision Faster R-CNN, RetinaNet, FCOS and SSDlite.

:func:`build_detector` builds a :class:`DetectorModel` with three parts:

* ``backbone`` (pretrained, blocks): the image plugin's classification backbone, built by
  its :func:`build_backbone` (so named weights and the engine's weight loading work), run as
  a :class:`MultiScaleBackbone` that returns its stride-8/16/32 stage outputs (C3, C4, C5).
  Its state-dict keys are the classification model's own (``backbone.layer1...``), its
  blocks are the Backbone's blocks, and only parameter-free modules (pooling, the stripped
  classifier) are dropped;
* ``neck`` (new): a feature pyramid (Faster R-CNN, RetinaNet, FCOS) or SSDlite's extra layers;
* ``head`` (new): the torchvision detector minus its backbone (RPN + RoI heads, or the
  class/box subnets with anchors, loss and post-processing). Its
  ``GeneralizedRCNNTransform`` (resize + normalise, no parameters) lives inside it and is
  :attr:`DetectorModel.transform`.

Class indices are 0-based everywhere (0..K-1, K = ``num_classes``): the background class
that Faster R-CNN and SSD need at index 0 is added and removed inside.

COCO-pretrained whole detectors are not available offline; :func:`replace_heads` refits the
class-dependent layers of a torchvision detector object for K classes.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tlengine.blocks import check_partition
from tlengine.errors import ConfigError
from tlengine.model import Backbone, TransferModel
from torch import Tensor, nn

__all__ = ["DETECTORS", "DetectorModel", "MultiScaleBackbone", "build_detector", "replace_heads"]

DETECTORS: tuple[str, ...] = ("fasterrcnn", "retinanet", "fcos", "ssdlite")

# Detectors whose torchvision implementation reserves label 0 for the background.
_BACKGROUND_FIRST = ("fasterrcnn", "ssdlite")
_STRIDES = (8, 16, 32)
_PROBE = 256  # input size of the probe pass that finds the stages and their channels


# ---------------------------------------------------------------------- backbone
def _steps(model: nn.Module, arch: str) -> list[str]:
    """The backbone's modules in execution order (qualified names in ``model``)."""
    children = dict(model.named_children())
    if all(k in children for k in ("conv1", "bn1", "relu", "maxpool", "layer4")):  # torchvision ResNet family
        return ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    if "conv_stem" in children and "blocks" in children:  # timm EfficientNet / MobileNet family
        steps = ["conv_stem", "bn1"] + [f"blocks.{n}" for n, _ in model.blocks.named_children()]
        # EfficientNet's conv_head + bn2 run before the pooling (kept, as C5); MobileNetV3's conv_head after it (dropped)
        return steps + (["conv_head", "bn2"] if "bn2" in children and "conv_head" in children else [])
    if isinstance(children.get("features"), nn.Sequential):  # torchvision MobileNetV2/V3, EfficientNet, ...
        return [f"features.{n}" for n, _ in model.features.named_children()]
    raise ConfigError(
        [("model.backbone", f"{arch} has no known stage layout for detection (ResNet, MobileNet/EfficientNet)")]
    )


class MultiScaleBackbone(nn.Module):
    """A classification backbone returning its last stage outputs at strides 8, 16 and 32.

    Holds the original model's top-level children under their own names (so state-dict keys
    are the classification model's), minus the ones it never runs (pooling, the stripped
    classifier, and pre-logits layers such as MobileNetV3's ``classifier.0``, named in
    ``dropped``). ``forward``
    maps ``[N,3,H,W]`` to ``OrderedDict(c3=..., c4=..., c5=...)``; ``out_channels`` lists
    their channels.
    """

    def __init__(self, model: nn.Module, arch: str):
        super().__init__()
        steps = _steps(model, arch)
        used = {s.split(".", 1)[0] for s in steps}
        for name, child in model.named_children():
            if name in used:
                self.add_module(name, child)
        self.dropped = [
            n for n, c in model.named_children() if n not in used and next(c.parameters(), None) is not None
        ]
        self.arch = arch
        # Probe once (eval mode: running statistics untouched) for the last step of each stride.
        was_training = self.training
        self.eval()
        last: dict[int, tuple[int, int]] = {}
        with torch.no_grad():
            x = torch.zeros(1, 3, _PROBE, _PROBE)
            for i, step in enumerate(steps):
                x = self.get_submodule(step)(x)
                stride = round(_PROBE / x.shape[-1])
                if stride in _STRIDES:
                    last[stride] = (i, int(x.shape[1]))
        self.train(was_training)
        missing = [s for s in _STRIDES if s not in last]
        if missing:
            raise ConfigError([("model.backbone", f"{arch} has no stage output at stride(s) {missing}")])
        self.taps = {last[s][0]: f"c{int(math.log2(s))}" for s in _STRIDES}
        self.out_channels = [last[s][1] for s in _STRIDES]
        self.steps = steps[: last[32][0] + 1]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, step in enumerate(self.steps):
            x = self.get_submodule(step)(x)
            if i in self.taps:
                out[self.taps[i]] = x
        return out


# ---------------------------------------------------------------------- necks
class FPNNeck(nn.Module):
    """torchvision's FeaturePyramidNetwork on C3-C5 plus an extra level (max-pool or P6/P7)."""

    def __init__(self, in_channels: list[int], out_channels: int, extra: str):
        super().__init__()
        from torchvision.ops.feature_pyramid_network import (
            FeaturePyramidNetwork,
            LastLevelMaxPool,
            LastLevelP6P7,
        )

        blocks = LastLevelMaxPool() if extra == "pool" else LastLevelP6P7(out_channels, out_channels)
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=blocks)
        self.out_channels = out_channels

    def forward(self, features: OrderedDict[str, Tensor]) -> OrderedDict[str, Tensor]:
        return self.fpn(features)


class SSDLiteNeck(nn.Module):
    """SSDlite's extra layers: C4 and C5 as they are, then four stride-2 blocks (strides 64-512)."""

    def __init__(self, in_channels: list[int], extra_channels: tuple[int, ...] = (512, 256, 256, 128)):
        super().__init__()
        from torchvision.models.detection.ssdlite import _extra_block, _normal_init

        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        chans = [in_channels[-1], *extra_channels]
        self.extra = nn.ModuleList(_extra_block(a, b, norm) for a, b in zip(chans[:-1], chans[1:]))
        _normal_init(self.extra)
        self.out_channels = [in_channels[1], in_channels[2], *extra_channels]

    def forward(self, features: OrderedDict[str, Tensor]) -> OrderedDict[str, Tensor]:
        out = OrderedDict([("c4", features["c4"]), ("c5", features["c5"])])
        x = features["c5"]
        for i, block in enumerate(self.extra):
            x = block(x)
            out[f"e{i}"] = x
        return out


# ---------------------------------------------------------------------- heads
class _Channels(nn.Module):
    """Stand-in backbone for torchvision detector constructors (removed right after)."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels


def _head_classes() -> dict[str, type]:
    """torchvision detectors whose forward starts from the neck's features: (images, features, targets)."""
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.ssd import SSD
    from torchvision.ops import boxes as box_ops

    class FasterRCNNHead(FasterRCNN):
        def forward(self, images: Any, features: OrderedDict[str, Tensor], targets: Any = None) -> Any:
            proposals, proposal_losses = self.rpn(images, features, targets)
            detections, detector_losses = self.roi_heads(features, proposals, images.image_sizes, targets)
            return {**detector_losses, **proposal_losses} if self.training else detections

    def _split(head_outputs: dict[str, Tensor], anchors: list[Tensor], per_level: list[int]) -> tuple[Any, Any]:
        split = {k: list(v.split(per_level, dim=1)) for k, v in head_outputs.items()}
        return split, [list(a.split(per_level)) for a in anchors]

    class RetinaNetHead(RetinaNet):
        def forward(self, images: Any, features: OrderedDict[str, Tensor], targets: Any = None) -> Any:
            feats = list(features.values())
            head_outputs = self.head(feats)
            anchors = self.anchor_generator(images, feats)
            if self.training:
                return self.compute_loss(targets, head_outputs, anchors)
            hw = [x.size(2) * x.size(3) for x in feats]
            a = head_outputs["cls_logits"].size(1) // sum(hw)
            split, split_anchors = _split(head_outputs, anchors, [n * a for n in hw])
            return self.postprocess_detections(split, split_anchors, images.image_sizes)

    class FCOSHead(FCOS):
        def forward(self, images: Any, features: OrderedDict[str, Tensor], targets: Any = None) -> Any:
            feats = list(features.values())
            head_outputs = self.head(feats)
            anchors = self.anchor_generator(images, feats)
            per_level = [x.size(2) * x.size(3) for x in feats]
            if self.training:
                return self.compute_loss(targets, head_outputs, anchors, per_level)
            split, split_anchors = _split(head_outputs, anchors, per_level)
            return self.postprocess_detections(split, split_anchors, images.image_sizes)

    class SSDLiteHead(SSD):
        def forward(self, images: Any, features: OrderedDict[str, Tensor], targets: Any = None) -> Any:
            feats = list(features.values())
            head_outputs = self.head(feats)
            anchors = self.anchor_generator(images, feats)
            if not self.training:
                return self.postprocess_detections(head_outputs, anchors, images.image_sizes)
            matched = []
            for anchors_i, target in zip(anchors, targets):
                if target["boxes"].numel() == 0:
                    matched.append(torch.full((anchors_i.size(0),), -1, dtype=torch.int64, device=anchors_i.device))
                else:
                    matched.append(self.proposal_matcher(box_ops.box_iou(target["boxes"], anchors_i)))
            return self.compute_loss(targets, head_outputs, anchors, matched)

    return {"fasterrcnn": FasterRCNNHead, "retinanet": RetinaNetHead, "fcos": FCOSHead, "ssdlite": SSDLiteHead}


def _build_head(kind: str, neck: nn.Module, num_classes: int, common: dict[str, Any]) -> nn.Module:
    from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator
    from torchvision.ops import MultiScaleRoIAlign

    cls = _head_classes()[kind]
    if kind == "fasterrcnn":
        sizes = ((32,), (64,), (128,), (256,))
        head = cls(
            _Channels(neck.out_channels),
            num_classes=num_classes + 1,
            rpn_anchor_generator=AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
            box_roi_pool=MultiScaleRoIAlign(["c3", "c4", "c5"], output_size=7, sampling_ratio=2),
            **common,
        )
    elif kind == "retinanet":
        sizes = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in (32, 64, 128, 256, 512))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        head = cls(_Channels(neck.out_channels), num_classes=num_classes, anchor_generator=anchors, **common)
    elif kind == "fcos":
        anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
        head = cls(_Channels(neck.out_channels), num_classes=num_classes, anchor_generator=anchors, **common)
    else:
        from torchvision.models.detection.ssdlite import SSDLiteHead

        anchors = DefaultBoxGenerator([[2, 3] for _ in neck.out_channels], min_ratio=0.2, max_ratio=0.95)
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        box_head = SSDLiteHead(neck.out_channels, anchors.num_anchors_per_location(), num_classes + 1, norm)
        size = int(common.pop("min_size"))
        common.pop("max_size")
        head = cls(_Channels(0), anchors, (size, size), num_classes + 1, head=box_head, **common)
    del head.backbone  # the backbone and neck are parts of their own
    return head


# ---------------------------------------------------------------------- model
class DetectorModel(TransferModel):
    """A detector as parts ``backbone`` (pretrained, blocks), ``neck`` and ``head`` (new).

    ``forward(images, targets=None)``: ``images`` a list of float ``[3,H,W]`` tensors in
    [0, 1] (any sizes), ``targets`` a list of ``{"boxes": [M,4] xyxy pixels, "labels": [M]
    0..K-1}``. Train mode returns a dict of losses, eval mode one ``{"boxes", "scores",
    "labels"}`` dict per image in input pixel coordinates, labels 0..K-1.
    """

    def __init__(self, kind: str, backbone: Backbone, body: MultiScaleBackbone, neck: nn.Module, head: nn.Module):
        super().__init__()
        self.kind = kind
        self.num_classes = 0  # set by build_detector
        self.label_offset = 1 if kind in _BACKGROUND_FIRST else 0
        #: stride (input pixels per cell) of the backbone's first map: 8 for C3
        self.first_stride = _STRIDES[0]
        self.add_part("backbone", body, blocks=backbone.blocks)
        self.add_part("neck", neck)
        self.add_part("head", head)
        self.preprocessing = dict(backbone.preprocessing)
        self.arch = backbone.arch
        self.feature_dim = int(getattr(neck, "out_channels", 0)) if kind != "ssdlite" else 0

    @property
    def transform(self) -> nn.Module:
        """torchvision's GeneralizedRCNNTransform (resize, normalise, batch), inside the head."""
        return self.part("head").module.transform

    def _targets(self, targets: list[dict[str, Tensor]] | None) -> list[dict[str, Tensor]] | None:
        if targets is None:
            return None
        out = []
        for t in targets:
            boxes = torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4)
            labels = torch.as_tensor(t["labels"], dtype=torch.int64).reshape(-1) + self.label_offset
            out.append({**t, "boxes": boxes, "labels": labels})
        return out

    def forward_features(self, images: list[Tensor] | Tensor) -> OrderedDict[str, Tensor]:
        """The backbone's C3/C4/C5 maps of ``images`` (a list of [3,H,W] or a batch [B,3,H,W],
        in [0,1]) after the detector's resize + normalise: ``{"c3": [B,C3,H/8,W/8], ...}``."""
        image_list, _ = self.transform(list(images), None)
        return self.run_part("backbone", image_list.tensors)

    def forward_head(
        self,
        features: dict[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        *,
        image_list: Any = None,
    ) -> Any:
        """Neck and head on backbone maps: a dict of losses in train mode, else one
        ``{"boxes", "scores", "labels"}`` per image with labels 0..K-1 and boxes in the
        pixels of the images the maps came from (before :meth:`forward` maps them back).

        ``image_list``: torchvision's ImageList of the batch, from the detector's transform.
        Without it (training from cached maps) every image is taken to fill the batch
        (first map x :attr:`first_stride` pixels, what one fixed input size gives) and ``targets`` to be in
        those pixels already (the transform does not resize an image of its own size)."""
        if image_list is None:
            from torchvision.models.detection.image_list import ImageList

            first = next(iter(features.values()))
            height, width = int(first.shape[-2]) * self.first_stride, int(first.shape[-1]) * self.first_stride
            shape = (first.shape[0], 3, height, width)
            image_list = ImageList(first.new_zeros(()).expand(shape), [(height, width)] * first.shape[0])
            targets = self._targets(targets)
        out = self.run_part("head", image_list, self.run_part("neck", features), targets)
        if self.training:
            return out
        return [{**d, "labels": d["labels"] - self.label_offset} for d in out]

    def forward(self, images: list[Tensor] | Tensor, targets: list[dict[str, Tensor]] | None = None) -> Any:
        if self.training and targets is None:
            raise ValueError("a detector in train mode needs targets")
        images = list(images)
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, tv_targets = self.transform(images, self._targets(targets))
        features = self.run_part("backbone", image_list.tensors)
        out = self.forward_head(features, tv_targets, image_list=image_list)
        if self.training:
            return out
        return self.transform.postprocess(out, image_list.image_sizes, original_sizes)


def _used_blocks(body: MultiScaleBackbone, backbone: Backbone) -> list[tuple[str, nn.Module]]:
    """The backbone's blocks without those the detector drops entirely (MobileNetV3's pre-logits layer)."""
    used = {id(p) for p in body.parameters()}
    blocks = []
    for name, block in backbone.blocks:
        ids = {id(p) for p in block.parameters()}
        if ids and ids.isdisjoint(used):
            continue
        if not ids <= used:
            raise ConfigError(
                [("model.backbone", f"block '{name}' of {backbone.arch} is only partly used by the detector")]
            )
        blocks.append((name, block))
    return blocks


def build_detector(
    kind: str,
    backbone_name: str,
    num_classes: int,
    *,
    weights: str | None,
    weights_registry: Any,
    base_dir: Path,
    min_size: int = 320,
    max_size: int = 512,
    fpn_channels: int = 256,
    **detector_kwargs: Any,
) -> DetectorModel:
    """Build detector ``kind`` (one of :data:`DETECTORS`) for ``num_classes`` classes on
    backbone ``backbone_name`` (any name the image plugin's ``build_backbone`` knows whose
    stages this module can tap: torchvision ResNet/ResNeXt, MobileNetV2/V3, EfficientNet,
    timm EfficientNet(-Lite)/MobileNet).

    ``weights``/``weights_registry``/``base_dir``: the backbone's weights, as for
    ``build_backbone``. ``min_size``/``max_size``: the resize of torchvision's transform
    (SSDlite: fixed ``min_size`` x ``min_size``). ``fpn_channels``: width of the FPN
    (Faster R-CNN, RetinaNet, FCOS). ``detector_kwargs`` go to the torchvision detector
    (``score_thresh``, ``detections_per_img``, ...). There is no ``trainable_layers``:
    freezing is the strategies' job (by part and block).
    """
    if kind not in DETECTORS:
        raise ConfigError([("model.detector", f"unknown detector '{kind}'; known: {', '.join(DETECTORS)}")])
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError([("model.num_classes", f"must be a positive integer, got {num_classes!r}")])
    from tlengine_plugins.image_classification.backbones import build_backbone

    backbone = build_backbone(backbone_name, weights=weights, weights_registry=weights_registry, base_dir=base_dir)
    body = MultiScaleBackbone(backbone.module, backbone.arch)
    backbone.blocks = _used_blocks(body, backbone)
    problems = check_partition(body, backbone.blocks)
    if problems:
        raise RuntimeError(f"bug: the blocks of {backbone.arch} do not partition the detector backbone: {problems[:3]}")
    if kind == "ssdlite":
        neck: nn.Module = SSDLiteNeck(body.out_channels)
    else:
        neck = FPNNeck(body.out_channels, fpn_channels, "pool" if kind == "fasterrcnn" else "p6p7")
    pp = backbone.preprocessing
    common = {
        "min_size": min_size,
        "max_size": max_size,
        "image_mean": list(pp.get("mean", (0.485, 0.456, 0.406))),
        "image_std": list(pp.get("std", (0.229, 0.224, 0.225))),
        **detector_kwargs,
    }
    head = _build_head(kind, neck, num_classes, common)
    model = DetectorModel(kind, backbone, body, neck, head)
    model.num_classes = num_classes
    return model


# ---------------------------------------------------------------------- torchvision detectors
def replace_heads(model: nn.Module, num_classes: int) -> nn.Module:
    """Refit the class-dependent layers of torchvision detector ``model`` for ``num_classes``
    foreground classes (new, randomly initialised layers; everything else kept); returns it.

    Faster R-CNN: a new ``FastRCNNPredictor`` (K+1 outputs, torchvision's background 0).
    RetinaNet / FCOS: a new classification head (K outputs). SSD / SSDlite: a new
    classification head (K+1 outputs). Labels of the refitted model follow torchvision's
    convention (background 0 for Faster R-CNN and SSD); :class:`DetectorModel` hides it.
    """
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.fcos import FCOSClassificationHead
    from torchvision.models.detection.retinanet import RetinaNetClassificationHead
    from torchvision.models.detection.ssd import SSD, SSDClassificationHead
    from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

    if isinstance(model, FasterRCNN):
        old = model.roi_heads.box_predictor
        model.roi_heads.box_predictor = FastRCNNPredictor(old.cls_score.in_features, num_classes + 1)
    elif isinstance(model, RetinaNet):
        old = model.head.classification_head
        norm = partial(nn.GroupNorm, 32) if any(isinstance(m, nn.GroupNorm) for m in old.modules()) else None
        in_ch = old.cls_logits.in_channels
        model.head.classification_head = RetinaNetClassificationHead(
            in_ch, old.num_anchors, num_classes, norm_layer=norm
        )
    elif isinstance(model, FCOS):
        old = model.head.classification_head
        model.head.classification_head = FCOSClassificationHead(
            old.cls_logits.in_channels, old.num_anchors, num_classes, num_convs=len(old.conv) // 3
        )
    elif isinstance(model, SSD):
        old = model.head.classification_head
        num_anchors = model.anchor_generator.num_anchors_per_location()
        if isinstance(old, SSDLiteClassificationHead):
            in_ch = [m[0][0].in_channels for m in old.module_list]
            norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
            model.head.classification_head = SSDLiteClassificationHead(in_ch, num_anchors, num_classes + 1, norm)
        else:
            in_ch = [m.in_channels for m in old.module_list]
            model.head.classification_head = SSDClassificationHead(in_ch, num_anchors, num_classes + 1)
    else:
        raise TypeError(f"replace_heads: {type(model).__name__} is not a torchvision detector it knows")
    return model
