"""Whole torchvision detectors as a starting point: weights load, class layers are replaced.

No COCO weights are downloaded here: a detector the test builds and saves itself stands in
for a checkpoint file (the same code path as a downloaded COCO_V1 state dict after
``torchvision_state_dict``), and offline enum names are refused with a sentence.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tlengine.errors import WeightsError
from tlengine_plugins.object_detection.pretrained_detectors import build_pretrained_detector, detector_weight_problem
from torchvision.models import get_model

NAME = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(scope="module")
def saved_detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A 5-class torchvision detector with random weights, saved as safetensors."""
    torch.manual_seed(0)
    model = get_model(NAME, weights=None, weights_backbone=None, num_classes=5)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("det") / "detector.safetensors"
    save_file(state, str(path))
    return path, state


def test_a_saved_detector_loads_whole_and_its_class_layer_is_replaced(saved_detector) -> None:
    path, state = saved_detector
    model = build_pretrained_detector(NAME, 3, weights=path.name, base_dir=path.parent, min_size=320, max_size=320)
    own = model.state_dict()
    # every backbone and FPN tensor is the file's; the class layers are new, sized for 3 classes + background
    for key, value in state.items():
        if key.startswith("backbone.body."):
            assert torch.equal(own["backbone." + key.removeprefix("backbone.body.")], value), key
        elif key.startswith("backbone.fpn."):
            assert torch.equal(own["neck." + key.removeprefix("backbone.fpn.")], value), key
        elif key.startswith("roi_heads.box_predictor."):
            assert own["head." + key].shape[0] in (4, 16), key  # 3 + 1 classes, 4 box coordinates each
        else:
            assert torch.equal(own["head." + key], value), key
    assert [n for n, _ in model.part("backbone").blocks], "the backbone has blocks for fine-tuning"
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 240, 320)])
    assert set(out[0]) == {"boxes", "scores", "labels"}
    assert out[0]["labels"].numel() == 0 or int(out[0]["labels"].max()) < 3


def test_cached_maps_give_the_live_detections(saved_detector) -> None:
    path, _ = saved_detector
    model = build_pretrained_detector(
        NAME, 3, weights=path.name, base_dir=path.parent, min_size=320, max_size=320, score_threshold=0.0
    )
    model.eval()
    images = torch.rand(2, 3, 320, 320)
    with torch.no_grad():
        live = model(images)
        cached = model.forward_head(model.forward_features(images))
    for a, b in zip(live, cached):
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3) and torch.equal(a["labels"], b["labels"])


def test_training_step_returns_the_detector_losses(saved_detector) -> None:
    path, _ = saved_detector
    model = build_pretrained_detector(NAME, 2, weights=path.name, base_dir=path.parent, min_size=320, max_size=320)
    model.train()
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 120.0, 140.0]]), "labels": torch.tensor([1])}]
    losses = model(torch.rand(1, 3, 320, 320), targets)
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(losses)
    sum(losses.values()).backward()


def test_weights_that_are_no_detector_state_are_refused(tmp_path) -> None:
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="no class layer"):
        build_pretrained_detector(NAME, 2, weights="other.safetensors", base_dir=tmp_path, min_size=320, max_size=320)


def test_weight_names_are_checked_before_a_run(tmp_path) -> None:
    assert detector_weight_problem(NAME, "COCO_V1", tmp_path) is None
    assert "unknown torchvision detector" in detector_weight_problem("yolo", None, tmp_path)
    assert "neither a torchvision weights name" in detector_weight_problem(NAME, "nope.pth", tmp_path)


def test_coco_weights_offline_are_one_sentence(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TLENGINE_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    with pytest.raises(WeightsError, match="not available offline"):
        build_pretrained_detector(NAME, 2, weights="COCO_V1", base_dir=tmp_path, min_size=320, max_size=320)


def test_a_pipeline_starts_from_the_saved_detector_and_mismatches_are_config_errors(
    saved_detector, tmp_path, cli
) -> None:
    import yaml

    path, state = saved_detector
    pipeline = {
        "name": "pre",
        "task": "object-detection",
        "data": {"dataset": "synthetic-scenes", "args": {"classes": ["circle", "square"], "images": 6, "size": 96}},
        "model": {
            "backbone": "mobilenet_v3_large",
            "weights": str(path),
            "detector": "fasterrcnn",
            "input_size": 320,
            "pretrained_detector": NAME,
        },
        "strategy": {"name": "feature-extraction"},
        "train": {"epochs": 1, "batch_size": 2},
    }
    file = tmp_path / "pre.yaml"
    file.write_text(yaml.safe_dump(pipeline))
    ok = cli("validate", str(file))
    assert ok.returncode == 0, ok.stderr
    bad = cli("validate", str(file), "model.detector=fcos", "model.backbone=resnet50", "model.weights=nope.pth")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["model.weights", "model.detector", "model.backbone"]
