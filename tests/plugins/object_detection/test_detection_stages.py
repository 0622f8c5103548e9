"""Sequential transfer across tasks: an image-classification stage's backbone starts a detector."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["mobilenet_v3_large", "timm/tf_efficientnet_lite0"])
def test_a_classification_stage_backbone_starts_the_detector(backbone, tmp_path, cli) -> None:
    pipeline = {
        "name": "cross-task",
        "model": {"backbone": backbone, "weights": None},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.01},
        "stages": [
            {
                "name": "shapes",
                "task": "image-classification",
                "data": {"dataset": "synthetic-shapes", "args": {"classes": 3, "per_class": 6, "size": 64}},
                "model": {"backbone": backbone, "weights": None, "input_size": 64},
                "strategy": {"name": "scratch"},
            },
            {
                "name": "detect",
                "task": "object-detection",
                "init_from": "shapes",
                "data": {
                    "dataset": "synthetic-scenes",
                    "args": {"classes": ["circle", "square"], "images": 8, "size": 96},
                },
                "model": {"backbone": backbone, "weights": None, "detector": "fasterrcnn", "input_size": 128},
                "strategy": {"name": "feature-extraction", "cache": {"enabled": False}},
            },
        ],
    }
    file = tmp_path / "cross.yaml"
    file.write_text(yaml.safe_dump(pipeline))
    proc = cli("run", str(file), "--output", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "pretrained from stage shapes" in proc.stdout + proc.stderr
    source = load_file(str(tmp_path / "run/arms/shapes/scratch/seed0/model.safetensors"))
    detector = load_file(str(tmp_path / "run/arms/detect/feature-extraction/seed0/model.safetensors"))
    backbone_keys = [k for k in detector if k.startswith("backbone.")]
    assert backbone_keys
    for key in backbone_keys:  # the frozen backbone is exactly the classifier's, BatchNorm statistics included
        assert torch.equal(detector[key], source[key]), key
    # and the classifier trained: not the random init a detector would otherwise get
    assert any(k.startswith("head.") for k in source)
