"""The files a detection run's summary writes: data counts, per-class AP, COCO files, drawings."""

from __future__ import annotations

import json

import torch
from PIL import Image
from tlengine_plugins.object_detection.datasets import DetectionItem
from tlengine_plugins.object_detection.metrics import coco_documents, coco_evaluate
from tlengine_plugins.object_detection.reports import draw_detections, write_detection_reports

CLASSES = ["circle", "square"]


def _evaluation(shift: float):
    truths = [
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0], [40.0, 40.0, 90.0, 80.0]]), "labels": torch.tensor([1, 0])},
    ]
    preds = [
        {"boxes": t["boxes"] + shift, "scores": torch.linspace(0.9, 0.5, len(t["labels"])), "labels": t["labels"]}
        for t in truths
    ]
    result = coco_evaluate(truths, preds, CLASSES)
    sized = [{**t, "image_size": [100, 120]} for t in truths]
    gt, dt = coco_documents(sized, preds, CLASSES)
    result.details["coco"] = {"ground_truth": gt, "detections": dt}
    result.details["examples"] = [
        {"boxes": p["boxes"].tolist(), "labels": p["labels"].tolist(), "scores": p["scores"].tolist()} for p in preds
    ]
    return result


def test_reports_write_data_counts_tables_coco_files_and_drawings(tmp_path) -> None:
    arms = {"fine-tune": _evaluation(0.0), "scratch": _evaluation(12.0)}
    info = {
        "classes": CLASSES,
        "source": "test scenes",
        "images": {"train": 5, "val": 1, "test": 2},
        "boxes": {"train": 9, "val": 1, "test": 3},
        "skipped": {"degenerate box": 2, "missing image": 1},
    }
    items = [
        DetectionItem(Image.new("RGB", (120, 100), (200, 200, 200)), [(10, 10, 50, 60)], [0], 120, 100),
        DetectionItem(Image.new("RGB", (120, 100)), [(5, 5, 30, 30), (40, 40, 90, 80)], [1, 0], 120, 100),
    ]
    written = write_detection_reports(tmp_path, arms, info, items)
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {
        "reports/data.json",
        "reports/per_class_ap.md",
        "reports/coco_ground_truth.json",
        "reports/coco_detections_fine-tune.json",
        "reports/coco_detections_scratch.json",
        "plots/per_class_ap.png",
        "plots/pr_curves.png",
        "plots/detections_fine-tune.png",
        "plots/detections_scratch.png",
    } <= names
    data = json.loads((tmp_path / "reports/data.json").read_text())
    assert data["skipped"] == {"degenerate box": 2, "missing image": 1} and data["images"]["test"] == 2
    table = (tmp_path / "reports/per_class_ap.md").read_text()
    assert "| circle | 100.0 |" in table  # the exact predictions of fine-tune
    sheet = Image.open(tmp_path / "plots/detections_fine-tune.png")
    assert sheet.height > 2 * 200  # two rows of ground truth | prediction


def test_draw_detections_draws_in_the_class_colour_inside_the_box_only() -> None:
    image = Image.new("RGB", (100, 100), (0, 0, 0))
    out = draw_detections(image, [{"box": [20, 30, 80, 90], "label": "square", "score": 0.9}], CLASSES)
    assert image.getpixel((50, 90)) == (0, 0, 0)  # the input is not drawn on
    assert out.getpixel((50, 90)) != (0, 0, 0)  # the box's bottom edge
    assert out.getpixel((50, 60)) == (0, 0, 0)  # inside the box stays the image
    assert out.getpixel((5, 95)) == (0, 0, 0)  # outside the box and its label
