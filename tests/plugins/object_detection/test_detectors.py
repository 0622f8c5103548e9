"""Detectors (Faster R-CNN, RetinaNet, FCOS, SSDlite) on the image plugin's backbones, random init, tiny inputs."""

from __future__ import annotations

import functools
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from tlengine.errors import ConfigError
from tlengine.model import check_param_groups, part_param_groups
from tlengine_plugins.image_classification.backbones import build_backbone
from tlengine_plugins.object_detection.detectors import DETECTORS, build_detector, replace_heads

K = 3
BACKBONES = ("resnet18", "mobilenet_v2", "timm/tf_efficientnet_lite0")
# Score thresholds at 0 so randomly initialised heads still return detections to check.
EVAL_KWARGS = {
    "fasterrcnn": {
        "box_score_thresh": 0.0,
        "box_detections_per_img": 20,
        # fewer proposals and sampled RoIs than the defaults (1000-2000, 512): seconds less per run
        "rpn_pre_nms_top_n_train": 200,
        "rpn_post_nms_top_n_train": 100,
        "rpn_pre_nms_top_n_test": 200,
        "rpn_post_nms_top_n_test": 100,
        "box_batch_size_per_image": 64,
    },
    "retinanet": {"score_thresh": 0.0, "detections_per_img": 20},
    "fcos": {"score_thresh": 0.0, "detections_per_img": 20},
    "ssdlite": {"score_thresh": 0.0, "detections_per_img": 20},
}


@functools.lru_cache(maxsize=None)
def _detector(kind: str, backbone: str):
    torch.manual_seed(0)
    return build_detector(
        kind,
        backbone,
        K,
        weights=None,
        weights_registry=None,
        base_dir=Path("."),
        min_size=64,  # the transform downsizes the 96-128 px images: stride 32 is still 2x2
        max_size=96,
        fpn_channels=32,
        **EVAL_KWARGS[kind],
    )


@functools.lru_cache(maxsize=None)
def _reference(backbone: str):
    return build_backbone(backbone, weights=None, weights_registry=None, base_dir=Path("."))


def _batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 112, 96, generator=g)]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 20.0, 120.0, 90.0]]),
            "labels": torch.tensor([0, K - 1]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # an image without objects
    ]
    return images, targets


def _class_layers(model, kind):
    """(out channels/features of the class layer(s), per-location anchor counts, foreground+background classes)."""
    head = model.part("head").module
    if kind == "fasterrcnn":
        pred = head.roi_heads.box_predictor
        return [pred.cls_score.out_features], [1], pred.bbox_pred.out_features // 4
    if kind in ("retinanet", "fcos"):
        cls = head.head.classification_head
        return [cls.cls_logits.out_channels], [cls.num_anchors], cls.num_classes
    cls = head.head.classification_head
    return [m[1].out_channels for m in cls.module_list], head.anchor_generator.num_anchors_per_location(), None


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("kind", DETECTORS)
def test_detector_trains_predicts_and_covers_parameters(kind, backbone):
    model = _detector(kind, backbone)
    images, targets = _batch()

    model.train()
    losses = model(images, targets)
    assert isinstance(losses, dict) and losses
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values()), losses
    sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)

    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, img in zip(out, images):
        assert set(det) >= {"boxes", "scores", "labels"}
        assert det["boxes"].shape[1:] == (4,) and len(det["boxes"]) == len(det["scores"]) == len(det["labels"]) > 0
        assert int(det["labels"].min()) >= 0 and int(det["labels"].max()) <= K - 1  # 0-based, no background
        assert float(det["boxes"][:, 2].max()) <= img.shape[-1] + 1e-3  # input pixel coordinates
        assert float(det["boxes"][:, 3].max()) <= img.shape[-2] + 1e-3

    # class count follows num_classes (Faster R-CNN / SSDlite add the background inside)
    outs, anchors, classes = _class_layers(model, kind)
    expected = K + 1 if kind in ("fasterrcnn", "ssdlite") else K
    assert outs == [a * expected for a in anchors]
    assert classes in (None, expected)

    # parts: backbone (pretrained, its classification blocks), neck and head new; every parameter once
    parts = model.parts
    assert list(parts) == ["backbone", "neck", "head"]
    assert parts["backbone"].pretrained and not parts["neck"].pretrained and not parts["head"].pretrained
    groups = part_param_groups(model)
    check_param_groups(model, [{"name": name, "params": params} for name, _, _, params in groups])
    reference = _reference(backbone)
    assert [b for _, part, b, _ in groups if part == "backbone"] == [name for name, _ in reference.blocks]
    # same state-dict keys as the classification backbone (weights load as for image classification)
    assert set(parts["backbone"].module.state_dict()) == set(reference.module.state_dict())

    # forward_features: multi-scale maps after the detector's resize, strides 8/16/32
    with torch.no_grad():
        feats = model.forward_features(images)
    assert isinstance(feats, OrderedDict) and list(feats) == ["c3", "c4", "c5"]
    assert [f.shape[1] for f in feats.values()] == parts["backbone"].module.out_channels
    sizes = [f.shape[-1] for f in feats.values()]
    assert all(f.shape[0] == 2 for f in feats.values()) and sizes[0] > sizes[1] > sizes[2]


def test_unused_pre_logits_layer_is_dropped():
    """MobileNetV3 keeps a pre-logits Linear (classifier.0) in its classification backbone: not in the detector."""
    torch.manual_seed(0)
    model = build_detector(
        "retinanet", "mobilenet_v3_large", K, weights=None, weights_registry=None, base_dir=Path("."), min_size=64
    )
    body = model.part("backbone").module
    assert body.dropped == ["classifier"]
    assert not any(k.startswith("backbone.classifier") for k in model.state_dict())
    groups = part_param_groups(model)
    check_param_groups(model, [{"name": name, "params": params} for name, _, _, params in groups])
    assert "classifier" not in [b for _, _, b, _ in groups]
    images, targets = _batch()
    model.train()
    assert all(torch.isfinite(v) for v in model(images, targets).values())


def test_backbone_weights_load_through_the_image_plugin(tmp_path: Path):
    """A torchvision state dict for the classification model (classifier included) loads into the detector backbone."""
    import torchvision

    torch.manual_seed(3)
    state = torchvision.models.mobilenet_v2().state_dict()
    torch.save(state, tmp_path / "mobilenet_v2.pth")
    model = build_detector(
        "ssdlite", "mobilenet_v2", K, weights="mobilenet_v2.pth", weights_registry=None, base_dir=tmp_path, min_size=64
    )
    own = model.state_dict()
    assert torch.equal(own["backbone.features.0.0.weight"], state["features.0.0.weight"])
    assert torch.equal(own["backbone.features.18.1.running_var"], state["features.18.1.running_var"])
    assert "backbone.classifier.1.weight" not in own


def test_frozen_backbone_gets_no_gradients():
    model = _detector("retinanet", "resnet18")
    images, targets = _batch()
    model.train()
    model.frozen_parts = {"backbone"}
    try:
        sum(model(images, targets).values()).backward()
    finally:
        model.frozen_parts = set()
    assert all(p.grad is None for p in model.part("backbone").module.parameters())
    assert any(p.grad is not None for p in model.part("neck").module.parameters())
    model.zero_grad(set_to_none=True)


def test_unknown_detector_and_bad_class_count():
    with pytest.raises(ConfigError):
        build_detector("yolo", "resnet18", K, weights=None, weights_registry=None, base_dir=Path("."))
    with pytest.raises(ConfigError):
        build_detector("fcos", "resnet18", 0, weights=None, weights_registry=None, base_dir=Path("."))


def test_replace_heads_on_torchvision_detectors():
    from torchvision.models import detection as tvd

    torch.manual_seed(0)
    frcnn = replace_heads(tvd.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None), 5)
    assert frcnn.roi_heads.box_predictor.cls_score.out_features == 6  # background 0 + 5
    assert frcnn.roi_heads.box_predictor.bbox_pred.out_features == 24

    for build in (tvd.retinanet_resnet50_fpn, tvd.retinanet_resnet50_fpn_v2):
        retina = replace_heads(build(weights=None, weights_backbone=None), 5)
        cls = retina.head.classification_head
        assert cls.num_classes == 5 and cls.cls_logits.out_channels == 9 * 5

    fcos = replace_heads(tvd.fcos_resnet50_fpn(weights=None, weights_backbone=None), 5)
    assert fcos.head.classification_head.cls_logits.out_channels == 5
    assert len(fcos.head.classification_head.conv) == 12  # four conv-norm-relu blocks kept

    ssd = replace_heads(tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None), 5)
    anchors = ssd.anchor_generator.num_anchors_per_location()
    assert [m[1].out_channels for m in ssd.head.classification_head.module_list] == [a * 6 for a in anchors]

    # the refitted models still run, and predict only the new classes
    images = [torch.rand(3, 96, 96)]
    frcnn.transform.min_size, frcnn.transform.max_size = (96,), 128  # not the default 800 px
    for model in (frcnn, ssd):
        model.eval()
        with torch.no_grad():
            det = model(images)[0]
        assert det["labels"].numel() == 0 or int(det["labels"].max()) <= 5

    with pytest.raises(TypeError):
        replace_heads(torch.nn.Linear(2, 2), 5)
