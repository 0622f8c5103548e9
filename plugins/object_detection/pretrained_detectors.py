"""Whole pretrained torchvision detectors (COCO weights or a local file), refitted for K classes.

``model.pretrained_detector: fasterrcnn_resnet50_fpn`` with ``model.weights: COCO_V1`` builds
torchvision's own detector, loads its weights - a torchvision enum name (from the torch hub
cache, else downloaded where a network exists) or a local ``.safetensors`` / ``.pth`` file
of that detector's state dict - and replaces its class-dependent layers for
the task's K classes (:func:`.detectors.replace_heads`). Everything else starts pretrained:
the backbone *and* the feature pyramid and the box heads.

The result is a :class:`.detectors.DetectorModel` with the same three parts as a detector
built on a classification backbone: ``backbone`` (torchvision's ``backbone.body``, blocks
for fine-tuning; pretrained), ``neck`` (``backbone.fpn``) and ``head`` (RPN + RoI heads, or
the dense head with its anchors). Only ``backbone`` is a pretrained *part* for the
strategies (frozen by feature extraction, lower LR when fine-tuning); the neck and the
head keep their pretrained weights but train at the full learning rate, as new parts do.
The scratch arm builds the same detector from random init.

FPN detectors only (Faster R-CNN, RetinaNet, FCOS): SSD's feature extractor mixes the
backbone and its extra layers in one module.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tlengine.blocks import check_partition, partition_blocks
from tlengine.errors import ConfigError, WeightsError
from tlengine.model import Backbone
from tlengine.weights import load_state_dict_file, load_strict
from torch import nn

from .detectors import DetectorModel, _head_classes, replace_heads

__all__ = ["PRETRAINED_DETECTORS", "build_pretrained_detector", "detector_weight_problem"]

#: torchvision detector builder -> the detector family of :data:`.detectors.DETECTORS`
PRETRAINED_DETECTORS: dict[str, str] = {
    "fasterrcnn_resnet50_fpn": "fasterrcnn",
    "fasterrcnn_resnet50_fpn_v2": "fasterrcnn",
    "fasterrcnn_mobilenet_v3_large_fpn": "fasterrcnn",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "fasterrcnn",
    "retinanet_resnet50_fpn": "retinanet",
    "retinanet_resnet50_fpn_v2": "retinanet",
    "fcos_resnet50_fpn": "fcos",
}
_PROBE = 256  # input side of the probe that finds the stride of the first map


def _enum_names(name: str) -> list[str]:
    from torchvision.models import get_model_weights

    return ["DEFAULT", *(m.name for m in get_model_weights(name))]


def detector_weight_problem(name: str, weights: str | None, base_dir: Path) -> str | None:
    """Why ``weights`` cannot be the weights of torchvision detector ``name`` (None if they can)."""
    if name not in PRETRAINED_DETECTORS:
        return f"unknown torchvision detector '{name}'; known: {', '.join(PRETRAINED_DETECTORS)}"
    if weights is None or weights in _enum_names(name):
        return None
    if not (Path(base_dir) / weights).is_file():
        return (
            f"'{weights}' is neither a torchvision weights name of {name} ({', '.join(_enum_names(name))}) "
            f"nor a file (relative to {base_dir})"
        )
    return None


def _state_and_classes(name: str, weights: str, base_dir: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The detector's state dict and the class count its class layers were trained for."""
    from tlengine_plugins.image_classification.backbones.weight_sources import torchvision_state_dict
    from torchvision.models import get_model_weights

    if weights in _enum_names(name):
        enum_cls = get_model_weights(name)
        enum = enum_cls.DEFAULT if weights == "DEFAULT" else enum_cls[weights]
        return torchvision_state_dict(name, enum), len(enum.meta["categories"])
    state = load_state_dict_file(Path(base_dir) / weights)
    for key in ("roi_heads.box_predictor.cls_score.weight", "head.classification_head.cls_logits.weight"):
        if key in state:
            out = int(state[key].shape[0])
            if key.startswith("head."):  # dense heads: num_anchors x classes outputs
                anchors = int(state["head.regression_head.bbox_reg.weight"].shape[0]) // 4
                if "fcos" in name:
                    anchors = 1
                out //= max(anchors, 1)
            return state, out
    raise WeightsError(f"weights {weights} have no class layer of a {name} (is it that detector's state dict?)")


def build_pretrained_detector(
    name: str,
    num_classes: int,
    *,
    weights: str | None,
    base_dir: Path,
    min_size: int,
    max_size: int,
    score_threshold: float = 0.05,
    detections_per_image: int = 100,
) -> DetectorModel:
    """torchvision detector ``name`` with ``weights`` (None: random init), its class layers
    refitted for ``num_classes`` (0-based classes, background handled inside); images are
    resized by its transform to ``min_size``..``max_size``; detections below
    ``score_threshold`` are dropped, at most ``detections_per_image`` kept."""
    from torchvision.models import get_model

    if name not in PRETRAINED_DETECTORS:
        raise ConfigError([("model.pretrained_detector.name", detector_weight_problem(name, None, base_dir) or "")])
    kind = PRETRAINED_DETECTORS[name]
    prefix = "box_" if kind == "fasterrcnn" else ""  # torchvision's keyword names differ by family
    detector_kwargs = {f"{prefix}score_thresh": score_threshold, f"{prefix}detections_per_img": detections_per_image}
    state, trained_classes = (None, 91) if weights is None else _state_and_classes(name, weights, base_dir)
    detector = get_model(
        name,
        weights=None,
        weights_backbone=None,
        num_classes=trained_classes,
        min_size=min_size,
        max_size=max_size,
        **detector_kwargs,
    )
    if state is not None:
        load_strict(detector, state, what=name, source=str(weights))
    replace_heads(detector, num_classes)
    body, neck = detector.backbone.body, detector.backbone.fpn
    del detector.backbone
    detector.__class__ = _head_classes()[kind]  # the same module, whose forward starts at the neck's output
    blocks = partition_blocks(body)
    problems = check_partition(body, blocks)
    if problems:
        raise RuntimeError(f"bug: the blocks of {name} do not partition its backbone: {problems[:3]}")
    transform = detector.transform
    backbone = Backbone(
        module=body,
        feature_dim=0,
        blocks=blocks,
        preprocessing={"mean": list(transform.image_mean), "std": list(transform.image_std)},
        arch=f"torchvision-detector/{name}",
    )
    model = DetectorModel(kind, backbone, body, neck, detector)
    model.num_classes = num_classes
    model.first_stride = _first_stride(body)
    return model


def _first_stride(body: nn.Module) -> int:
    was_training = body.training
    body.eval()
    with torch.no_grad():
        first = next(iter(body(torch.zeros(1, 3, _PROBE, _PROBE)).values()))
    body.train(was_training)
    return round(_PROBE / first.shape[-1])
