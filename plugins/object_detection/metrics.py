"""COCO-protocol evaluation of object detections, through pycocotools itself.

:func:`coco_evaluate` turns per-image targets and predictions (xyxy boxes in absolute
pixels, 0-based class indices) into in-memory pycocotools ``COCO`` objects — ground truth
built from a dataset dict, detections through ``COCO.loadRes`` on a list of xywh results —
and runs ``COCOeval(iouType="bbox")``. The scalar metrics are read off ``eval["precision"]``
/ ``eval["recall"]`` with exactly the rule of ``COCOeval.summarize`` (the mean over the
entries that are not -1), so they equal COCO's printed summary; computing them ourselves
lets ``max_detections`` differ from 100 (``summarize`` hard-codes 100 for its first AP).

COCO conventions kept on purpose:

* a class with no ground-truth box has precision -1 and is left out of every mean (it
  still counts nothing against the others; its false positives are simply not scored);
* a size range (small < 32², medium < 96², large) with no ground truth gives -1: such a
  metric is left out of ``metrics`` and explained in ``details["notes"]``;
* a ground-truth box's area is its box area (w*h) — there are no masks here.

No prediction at all is not an error: every class with ground truth then has AP 0.

Also here: :func:`plot_per_class_ap` and :func:`plot_pr_curves`, comparing arms in the
house style of :mod:`tlengine.reporting.plots`.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tlengine.reporting.plots import _arm_colours, _save, plt
from tlengine.task import Evaluation


def _as_array(value: Any, *, dtype: Any, what: str) -> np.ndarray:
    """A numpy copy of a tensor / array / list (tensors are detached and moved to CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: cannot be read as a {np.dtype(dtype).name} array ({err})") from err


def _boxes(record: dict, image: int, kind: str) -> np.ndarray:
    boxes = _as_array(record.get("boxes", np.zeros((0, 4))), dtype=np.float64, what=f"{kind} {image} boxes")
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{kind} {image}: boxes must have shape [N, 4] (xyxy), got {list(boxes.shape)}")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{kind} {image}: boxes contain NaN or infinite coordinates")
    return boxes


def _labels(record: dict, n: int, num_classes: int, image: int, kind: str) -> np.ndarray:
    raw = record.get("labels", np.zeros((0,)))
    labels = _as_array(raw, dtype=np.float64, what=f"{kind} {image} labels").reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{kind} {image}: {n} boxes but {labels.shape[0]} labels")
    if n and (np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{kind} {image}: labels must be class indices in [0, {num_classes}), got {labels.tolist()}")
    return labels.astype(np.int64)


def _xywh(box: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_documents(
    targets: Sequence[dict], predictions: Sequence[dict], classes: Sequence[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The COCO files of an evaluation: the ground truth as a COCO instances dataset
    (``images``, ``annotations``, ``categories``; image ids 1-based in input order, category
    id = label + 1) and the detections in COCO's results format (``image_id``,
    ``category_id``, ``bbox`` xywh, ``score``) - what ``COCO(gt).loadRes(dt)`` takes."""
    k = len(classes)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for i, (target, prediction) in enumerate(zip(targets, predictions)):
        image_id = i + 1
        image: dict[str, Any] = {"id": image_id}
        if target.get("image_size") is not None:
            h, w = (int(v) for v in target["image_size"])
            image.update(height=h, width=w)
        images.append(image)

        gt_boxes = _boxes(target, i, "target")
        gt_labels = _labels(target, len(gt_boxes), k, i, "target")
        for box, label in zip(gt_boxes, gt_labels):
            xywh = _xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCOeval needs ids > 0 (0 means "unmatched")
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": xywh,
                    "area": max(xywh[2], 0.0) * max(xywh[3], 0.0),
                    "iscrowd": 0,
                }
            )

        dt_boxes = _boxes(prediction, i, "prediction")
        dt_labels = _labels(prediction, len(dt_boxes), k, i, "prediction")
        scores = _as_array(
            prediction.get("scores", np.zeros((0,))), dtype=np.float64, what=f"prediction {i} scores"
        ).reshape(-1)
        if scores.shape[0] != len(dt_boxes):
            raise ValueError(f"prediction {i}: {len(dt_boxes)} boxes but {scores.shape[0]} scores")
        for box, label, score in zip(dt_boxes, dt_labels, scores):
            results.append(
                {"image_id": image_id, "category_id": int(label) + 1, "bbox": _xywh(box), "score": float(score)}
            )
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": str(name)} for c, name in enumerate(classes)],
    }
    return dataset, results


def _build_coco(targets: Sequence[dict], predictions: Sequence[dict], classes: Sequence[str]) -> tuple[COCO, COCO, int]:
    """(ground truth, detections, number of GT boxes) as pycocotools objects; image ids are 1-based."""
    dataset, results = coco_documents(targets, predictions, classes)
    images, annotations = dataset["images"], dataset["annotations"]
    gt = COCO()
    gt.dataset = dataset
    gt.createIndex()
    if results:
        dt = gt.loadRes(results)
    else:
        # loadRes indexes anns[0], so it cannot take an empty list: an empty result set by hand.
        dt = COCO()
        dt.dataset = {"images": list(images), "categories": list(gt.dataset["categories"]), "annotations": []}
        dt.createIndex()
    return gt, dt, len(annotations)


def _mean_valid(values: np.ndarray) -> float:
    """COCOeval.summarize's rule: the mean of the entries that are not -1, or -1 when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def coco_evaluate(
    targets: Sequence[dict],
    predictions: Sequence[dict],
    classes: Sequence[str],
    *,
    max_detections: int = 100,
) -> Evaluation:
    """COCO bbox evaluation of ``predictions`` against ``targets`` with pycocotools.

    Args:
        targets: per image ``{"boxes": [M, 4] xyxy absolute pixels, "labels": [M] 0-based class
            indices}`` (tensors or arrays; ``[0, 4]`` for an image without objects), optionally
            ``"image_size": (h, w)``.
        predictions: per image, same order: ``{"boxes": [P, 4] xyxy, "scores": [P], "labels": [P]}``.
        classes: the class names, index = label.
        max_detections: detections kept per image (highest scores), COCO's last ``maxDets``.

    Returns:
        metrics: ``map`` (AP@[.5:.95]), ``map_50``, ``map_75``, ``map_small``, ``map_medium``,
        ``map_large`` and ``mar_{max_detections}`` (``mar_100`` by default); a metric COCO
        reports as -1 (no ground truth of that size, or none at all) is absent.
        details: ``per_class_ap`` ``{class: {"ap": AP@[.5:.95], "ap_50": AP@.5}}`` (both None for a
        class without ground truth), ``pr_curves`` ``{class: {"recall": [101 points 0..1],
        "precision": [...]}}`` at IoU .5 for classes with ground truth, ``coco_stats`` (COCO's twelve
        summary numbers by name, None for -1) and ``notes`` (sentences).
    """
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions: one of each per image")
    if not classes:
        raise ValueError("classes is empty")
    if max_detections < 1:
        raise ValueError(f"max_detections must be >= 1, got {max_detections}")
    classes = [str(c) for c in classes]
    notes: list[str] = []

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on every step
        gt, dt, n_gt = _build_coco(targets, predictions, classes)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.imgIds = sorted(gt.getImgIds())
        evaluator.params.catIds = sorted(gt.getCatIds())
        evaluator.params.maxDets = sorted({1, 10, int(max_detections)})
        evaluator.evaluate()
        evaluator.accumulate()

    params = evaluator.params
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    recall = evaluator.eval["recall"]  # [T, K, A, M]
    iou_50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    iou_75 = int(np.argmin(np.abs(params.iouThrs - 0.75)))
    area = {label: i for i, label in enumerate(params.areaRngLbl)}
    det = {m: i for i, m in enumerate(params.maxDets)}
    last = det[int(max_detections)]

    def ap(*, iou: int | None = None, rng: str = "all", m: int = last) -> float:
        s = precision if iou is None else precision[[iou]]
        return _mean_valid(s[:, :, :, area[rng], m])

    def ar(*, rng: str = "all", m: int = last) -> float:
        return _mean_valid(recall[:, :, area[rng], m])

    stats = {
        "map": ap(),
        "map_50": ap(iou=iou_50),
        "map_75": ap(iou=iou_75),
        "map_small": ap(rng="small"),
        "map_medium": ap(rng="medium"),
        "map_large": ap(rng="large"),
        "mar_1": ar(m=det[1]),
        "mar_10": ar(m=det[10]),
        f"mar_{max_detections}": ar(),
        "mar_small": ar(rng="small"),
        "mar_medium": ar(rng="medium"),
        "mar_large": ar(rng="large"),
    }
    metric_keys = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", f"mar_{max_detections}"]
    metrics: dict[str, float] = {}
    for key in metric_keys:
        if stats[key] > -1:
            metrics[key] = stats[key]
        elif key in ("map_small", "map_medium", "map_large") and n_gt:
            size = key.removeprefix("map_")
            notes.append(f"{key} omitted: no ground-truth object is {size} (COCO reports -1).")
    if n_gt == 0:
        notes.append("no ground-truth boxes in any image: COCO defines no AP or AR, so no metric is reported.")

    per_class_ap: dict[str, dict[str, float | None]] = {}
    pr_curves: dict[str, dict[str, list[float]]] = {}
    recall_points = [round(float(r), 4) for r in params.recThrs]
    no_gt: list[str] = []
    for c, name in enumerate(classes):
        k = params.catIds.index(c + 1)
        p_all = precision[:, :, k, area["all"], last]
        p_50 = precision[iou_50, :, k, area["all"], last]
        if not (p_all > -1).any():
            per_class_ap[name] = {"ap": None, "ap_50": None}
            no_gt.append(name)
            continue
        per_class_ap[name] = {"ap": _mean_valid(p_all), "ap_50": _mean_valid(p_50)}
        pr_curves[name] = {"recall": recall_points, "precision": [max(float(v), 0.0) for v in p_50]}
    if no_gt and n_gt:
        notes.append(
            f"no ground truth for class(es) {', '.join(no_gt)}: excluded from the per-class means (COCO's rule); "
            "their per-class AP is null and they have no PR curve."
        )

    details = {
        "per_class_ap": per_class_ap,
        "pr_curves": pr_curves,
        "coco_stats": {key: (value if value > -1 else None) for key, value in stats.items()},
        "notes": notes,
    }
    return Evaluation(metrics=metrics, details=details)


def _arms_and_classes(details_by_arm: dict[str, dict], classes: Sequence[str]) -> tuple[list[str], list[str]]:
    arms = list(details_by_arm)
    if not arms:
        raise ValueError("details_by_arm is empty: nothing to plot")
    return arms, [str(c) for c in classes]


def plot_per_class_ap(details_by_arm: dict[str, dict], classes: Sequence[str], path: Path) -> Path:
    """Grouped bars of AP@.5 per class (x) and arm (bar colour), in percent.

    Args:
        details_by_arm: arm name -> the ``details`` of its :func:`coco_evaluate` (uses ``per_class_ap``).
            A class without a value for an arm (no ground truth) leaves an empty slot marked "n/a".
        classes: the class names, in the order to draw them.
        path: PNG file to write.
    """
    arms, classes = _arms_and_classes(details_by_arm, classes)
    colours = _arm_colours(arms)
    width = 0.8 / len(arms)
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(classes) * len(arms) + 2.5), 4.5))
    for j, arm in enumerate(arms):
        per_class = (details_by_arm[arm] or {}).get("per_class_ap") or {}
        values = [(per_class.get(c) or {}).get("ap_50") for c in classes]
        heights = [100.0 * float(v) if v is not None and math.isfinite(float(v)) else 0.0 for v in values]
        offsets = x - 0.4 + width * (j + 0.5)
        ax.bar(offsets, heights, width=width * 0.95, color=colours[arm], label=arm)
        for xpos, value in zip(offsets, values):
            if value is None:
                ax.annotate("n/a", (xpos, 0), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(x)
    many = len(classes) > 6
    ax.set_xticklabels(classes, rotation=30 if many else 0, ha="right" if many else "center")
    ax.set_ylim(0, 105)
    ax.set_xlabel("class")
    ax.set_ylabel("AP@0.5 (%)")
    ax.set_title("Per-class AP@0.5 by arm")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, Path(path))


def plot_pr_curves(details_by_arm: dict[str, dict], classes: Sequence[str], path: Path) -> Path:
    """Precision-recall curves at IoU 0.5: one subplot per class, one curve per arm.

    Args:
        details_by_arm: arm name -> the ``details`` of its :func:`coco_evaluate` (uses ``pr_curves``
            and ``per_class_ap`` for the legend). A class without a curve for any arm says so.
        classes: the class names, one subplot each.
        path: PNG file to write.
    """
    arms, classes = _arms_and_classes(details_by_arm, classes)
    colours = _arm_colours(arms)
    cols = min(3, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for idx, name in enumerate(classes):
        ax = axes[idx // cols][idx % cols]
        for arm in arms:
            details = details_by_arm[arm] or {}
            curve = (details.get("pr_curves") or {}).get(name)
            if not curve:
                continue
            ap_50 = ((details.get("per_class_ap") or {}).get(name) or {}).get("ap_50")
            label = f"{arm} (AP {100 * ap_50:.1f})" if ap_50 is not None else arm
            ax.plot(curve["recall"], curve["precision"], "-", color=colours[arm], label=label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower left")
        else:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(name)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(True, alpha=0.3)
    for idx in range(len(classes), rows * cols):
        axes[idx // cols][idx % cols].axis("off")
    fig.suptitle("Precision-recall at IoU 0.5")
    fig.tight_layout()
    return _save(fig, Path(path))
