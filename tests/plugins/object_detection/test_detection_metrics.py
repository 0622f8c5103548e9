"""COCO-protocol detection metrics: checked against a direct pycocotools run and hand-made cases."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tlengine.task import Evaluation
from tlengine_plugins.object_detection.metrics import coco_evaluate, plot_per_class_ap, plot_pr_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["cat", "dog"]

# The reference scene in COCO's own xywh, class ids 1-based; (image size, GT [(xywh, cat)], detections
# [(xywh, cat, score)]). Small < 32², medium < 96², large otherwise.
SCENE = [
    (
        (480, 640),
        [([10, 10, 20, 20], 1), ([100, 100, 50, 60], 2), ([200, 150, 200, 150], 1)],  # small, medium, large
        [
            ([11, 11, 20, 20], 1, 0.9),
            ([102, 98, 50, 60], 2, 0.8),
            ([210, 160, 190, 140], 1, 0.7),
            ([400, 300, 40, 40], 2, 0.6),  # false positive
            ([12, 9, 19, 22], 1, 0.2),  # duplicate of the small cat: a false positive
        ],
    ),
    (
        (480, 640),
        [([50, 50, 100, 100], 2), ([300, 300, 40, 40], 1)],  # the medium cat is missed
        [([55, 50, 100, 100], 2, 0.95), ([0, 0, 30, 30], 1, 0.3)],
    ),
    ((480, 640), [], []),  # nothing at all
    ((480, 640), [], [([5, 5, 10, 10], 2, 0.5)]),  # only a false positive
]


def _xyxy(xywh: list[float]) -> list[float]:
    x, y, w, h = xywh
    return [x, y, x + w, y + h]


def _ours(scene, classes=CLASSES, as_tensor: bool = False):
    conv = (lambda a, dt: torch.tensor(a, dtype=dt)) if as_tensor else (lambda a, dt: np.asarray(a))
    targets, predictions = [], []
    for size, gts, dets in scene:
        targets.append(
            {
                "boxes": conv([_xyxy(b) for b, _ in gts] or np.zeros((0, 4)), torch.float32),
                "labels": conv([c - 1 for _, c in gts], torch.int64),
                "image_size": size,
            }
        )
        predictions.append(
            {
                "boxes": conv([_xyxy(b) for b, _, _ in dets] or np.zeros((0, 4)), torch.float32),
                "scores": conv([s for _, _, s in dets], torch.float32),
                "labels": conv([c - 1 for _, c, _ in dets], torch.int64),
            }
        )
    return targets, predictions


def _reference_stats(scene, classes=CLASSES) -> np.ndarray:
    """COCO's 12 summary numbers from a plain pycocotools run on hand-built xywh dicts."""
    images = [{"id": i + 1, "height": s[0], "width": s[1]} for i, (s, _, _) in enumerate(scene)]
    anns, results = [], []
    for i, (_, gts, dets) in enumerate(scene):
        for box, cat in gts:
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": box, "area": box[2] * box[3]}
            )
            anns[-1]["iscrowd"] = 0
        results += [{"image_id": i + 1, "category_id": c, "bbox": b, "score": s} for b, c, s in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)],
        }
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_matches_a_direct_pycocotools_run():
    ev = coco_evaluate(*_ours(SCENE), CLASSES)
    assert isinstance(ev, Evaluation)
    ref = _reference_stats(SCENE)
    names = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"]
    expected = dict(zip(names, ref[[0, 1, 2, 3, 4, 5, 8]]))
    assert set(ev.metrics) == set(names)
    for key, value in expected.items():
        assert ev.metrics[key] == pytest.approx(float(value), abs=1e-12), key
    assert 0 < ev.metrics["map"] < 1 and ev.metrics["mar_100"] < 1  # the miss and the false positives count
    stats_names = list(ev.details["coco_stats"])
    assert [ev.details["coco_stats"][k] for k in stats_names] == pytest.approx(ref.tolist(), abs=1e-12)
    # per-class values average to the overall numbers (both classes have ground truth)
    per_class = ev.details["per_class_ap"]
    assert np.mean([per_class[c]["ap"] for c in CLASSES]) == pytest.approx(ev.metrics["map"])
    assert np.mean([per_class[c]["ap_50"] for c in CLASSES]) == pytest.approx(ev.metrics["map_50"])
    curve = ev.details["pr_curves"]["dog"]
    assert len(curve["recall"]) == len(curve["precision"]) == 101
    assert curve["recall"][0] == 0.0 and curve["recall"][-1] == 1.0
    json.dumps(ev.details)  # JSON-ready


def test_tensor_inputs_give_the_same_numbers():
    from_arrays = coco_evaluate(*_ours(SCENE), CLASSES)
    from_tensors = coco_evaluate(*_ours(SCENE, as_tensor=True), CLASSES)
    assert from_tensors.metrics == pytest.approx(from_arrays.metrics, abs=1e-6)


def test_perfect_predictions_score_one():
    scene = [(s, gts, [(b, c, 0.9) for b, c in gts]) for s, gts, _ in SCENE]
    ev = coco_evaluate(*_ours(scene), CLASSES)
    for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"):
        assert ev.metrics[key] == pytest.approx(1.0), key


def test_no_predictions_score_zero_without_crashing():
    scene = [(s, gts, []) for s, gts, _ in SCENE]
    ev = coco_evaluate(*_ours(scene), CLASSES)
    assert ev.metrics["map"] == 0.0 and ev.metrics["map_50"] == 0.0 and ev.metrics["mar_100"] == 0.0
    assert all(v["ap"] == 0.0 for v in ev.details["per_class_ap"].values())


def test_a_class_without_ground_truth_is_excluded():
    classes = ["cat", "dog", "bird"]
    scene = [(s, gts, dets + [([300, 10, 50, 50], 3, 0.99)]) for s, gts, dets in SCENE]  # bird FPs only
    ev = coco_evaluate(*_ours(scene, classes), classes)
    with_bird_ref = _reference_stats(scene, classes)
    assert ev.metrics["map"] == pytest.approx(float(with_bird_ref[0]), abs=1e-12)
    # excluded: the means equal those of the scene without the bird class and its predictions
    assert ev.metrics == pytest.approx(coco_evaluate(*_ours(SCENE), CLASSES).metrics, abs=1e-12)
    assert ev.details["per_class_ap"]["bird"] == {"ap": None, "ap_50": None}
    assert "bird" not in ev.details["pr_curves"]
    assert any("bird" in note for note in ev.details["notes"])


def test_xyxy_is_converted_so_a_half_overlap_counts_at_50_but_not_75():
    # GT [0,0,60,60], prediction shifted 20 px right: overlap 40x60 = 2400, union 4800 -> IoU exactly 0.5.
    # Read as xywh by mistake the prediction would be 100 px wide: IoU 1/3, not a match at all.
    targets = [{"boxes": np.array([[0.0, 0.0, 60.0, 60.0]]), "labels": np.array([0])}]
    predictions = [{"boxes": np.array([[20.0, 0.0, 80.0, 60.0]]), "scores": np.array([0.9]), "labels": np.array([0])}]
    ev = coco_evaluate(targets, predictions, ["cat"])
    assert ev.metrics["map_50"] == pytest.approx(1.0)
    assert ev.metrics["map_75"] == 0.0
    assert ev.metrics["map"] == pytest.approx(0.1)  # matched at 1 of the 10 IoU thresholds
    # size ranges without ground truth are dropped, with a note; the box is medium (3600 px²)
    assert "map_medium" in ev.metrics and "map_small" not in ev.metrics and "map_large" not in ev.metrics
    assert any("map_small" in n for n in ev.details["notes"]) and any("map_large" in n for n in ev.details["notes"])


def test_empty_images_and_no_ground_truth_anywhere():
    empty = {"boxes": np.zeros((0, 4)), "labels": np.zeros((0,), dtype=np.int64)}
    no_pred = {
        "boxes": torch.zeros((0, 4)),
        "scores": torch.zeros((0,)),
        "labels": torch.zeros((0,), dtype=torch.int64),
    }
    ev = coco_evaluate([empty, empty], [no_pred, no_pred], CLASSES)
    assert ev.metrics == {}
    assert ev.details["notes"]


def test_max_detections_limits_the_detections_kept():
    # one GT, the matching detection ranks second: with 1 detection per image it is never seen
    targets = [{"boxes": np.array([[0.0, 0.0, 50.0, 50.0]]), "labels": np.array([0])}]
    boxes = np.array([[100.0, 100.0, 150.0, 150.0], [0.0, 0.0, 50.0, 50.0]])
    predictions = [{"boxes": boxes, "scores": np.array([0.9, 0.8]), "labels": np.array([0, 0])}]
    assert coco_evaluate(targets, predictions, ["cat"]).metrics["map_50"] == pytest.approx(0.5)
    limited = coco_evaluate(targets, predictions, ["cat"], max_detections=1)
    assert limited.metrics["map_50"] == 0.0 and limited.metrics["mar_1"] == 0.0


def test_bad_inputs_are_rejected():
    target = {"boxes": np.array([[0.0, 0.0, 5.0, 5.0]]), "labels": np.array([2])}
    pred = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)}
    with pytest.raises(ValueError, match="class indices"):
        coco_evaluate([target], [pred], CLASSES)
    with pytest.raises(ValueError, match="targets but"):
        coco_evaluate([target], [], CLASSES)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        coco_evaluate([{"boxes": np.zeros((2, 3)), "labels": np.zeros(2)}], [pred], CLASSES)


def test_plots_write_pngs(tmp_path):
    classes = ["cat", "dog", "bird"]
    good = coco_evaluate(*_ours(SCENE, classes), classes).details
    perfect = [(s, gts, [(b, c, 0.9) for b, c in gts]) for s, gts, _ in SCENE]
    best = coco_evaluate(*_ours(perfect, classes), classes).details
    arms = {"fine-tune": best, "scratch": good}
    for plot, name in ((plot_per_class_ap, "ap.png"), (plot_pr_curves, "sub/pr.png")):
        out = plot(arms, classes, tmp_path / name)
        assert out == tmp_path / name
        assert out.read_bytes().startswith(PNG_SIGNATURE) and out.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ap.png", "pr.png", "sub"]  # no temporary files left
