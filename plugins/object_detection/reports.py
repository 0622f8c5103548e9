"""What a detection run leaves besides its metrics: drawn predictions, per-class AP, PR curves.

:func:`write_detection_reports` writes, for the test evaluations of a run's last stage:

* ``plots/detections_<arm>.png`` — the first test images, ground truth (left) beside the
  arm's predictions with a score of at least ``task.REPORT_SCORE`` (right);
* ``plots/per_class_ap.png`` — AP@.5 per class and arm (:func:`.metrics.plot_per_class_ap`);
* ``plots/pr_curves.png`` — precision-recall at IoU .5 per class and arm;
* ``reports/per_class_ap.md`` — the same per-class AP@.5 and AP@[.5:.95] as a table;
* ``reports/data.json`` — the dataset: its source, images and boxes per split, and what
  ``skip_invalid`` dropped (reason -> count);
* ``reports/coco_ground_truth.json`` and ``reports/coco_detections_<arm>.json`` — the test
  split's ground truth as a COCO dataset and each arm's detections in COCO's results format,
  so the printed metrics can be recomputed with pycocotools alone.

:func:`draw_detections` is also what ``tlengine predict --save DIR`` writes.
"""

from __future__ import annotations

import colorsys
import json
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, ImageDraw
from tlengine.atomic import write_text
from tlengine.task import Evaluation

from .batches import load_image
from .metrics import plot_per_class_ap, plot_pr_curves

__all__ = ["class_colour", "draw_detections", "write_detection_reports"]


def class_colour(index: int) -> tuple[int, int, int]:
    """A distinct, saturated RGB colour per class index (golden-ratio hues)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: Image.Image, detections: Sequence[dict[str, Any]], classes: Sequence[str]) -> Image.Image:
    """A copy of ``image`` with each detection's box (xyxy pixels) and its label (and score,
    when the detection has one) drawn in its class's colour. ``detections``: dicts with
    ``box``, ``label`` (a class name) and optionally ``score``."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(1, round(min(out.size) / 160))
    index = {c: i for i, c in enumerate(classes)}
    for det in detections:
        colour = class_colour(index.get(det["label"], 0))
        x1, y1, x2, y2 = det["box"]
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        text = det["label"] + (f" {det['score']:.2f}" if "score" in det else "")
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        y = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle([x1, y, x1 + (right - left) + 2, y + (bottom - top) + 2], fill=colour)
        draw.text((x1 + 1, y), text, fill=(0, 0, 0))
    return out


def _side_by_side(rows: list[tuple[Image.Image, Image.Image]], side: int = 256) -> Image.Image:
    """Rows of (ground truth, prediction) images scaled to ``side`` px high, stacked."""
    scaled = []
    for left, right in rows:
        w = round(left.width * side / left.height)
        scaled.append((left.resize((w, side)), right.resize((w, side))))
    width = max(left.width + right.width for left, right in scaled) + 8
    sheet = Image.new("RGB", (width, len(scaled) * (side + 8)), (255, 255, 255))
    for r, (left, right) in enumerate(scaled):
        sheet.paste(left, (0, r * (side + 8)))
        sheet.paste(right, (left.width + 8, r * (side + 8)))
    return sheet


def _prediction_sheet(evaluation: Evaluation, items: Sequence[Any], classes: Sequence[str]) -> Image.Image | None:
    examples = evaluation.details.get("examples") or []
    rows = []
    for item, example in zip(items, examples):
        image = load_image(item.image)
        truth = [{"box": list(b), "label": classes[c]} for b, c in zip(item.boxes, item.labels)]
        predicted = [
            {"box": b, "label": classes[c], "score": s}
            for b, c, s in zip(example["boxes"], example["labels"], example["scores"])
        ]
        rows.append((draw_detections(image, truth, classes), draw_detections(image, predicted, classes)))
    return _side_by_side(rows) if rows else None


def _per_class_table(arms: dict[str, Evaluation], classes: Sequence[str]) -> str:
    names = list(arms)
    lines = ["| class | " + " | ".join(f"{a} AP@.5 | {a} AP" for a in names) + " |"]
    lines.append("|---|" + "---|---|" * len(names))

    def pct(v: Any) -> str:
        return "n/a" if v is None else f"{100 * float(v):.1f}"

    for c in classes:
        cells = []
        for a in names:
            ap = (arms[a].details.get("per_class_ap") or {}).get(c) or {}
            cells += [pct(ap.get("ap_50")), pct(ap.get("ap"))]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_detection_reports(
    run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any], items: Sequence[Any]
) -> list[Path]:
    """Write the reports above for ``arms`` (arm label -> its first seed's test evaluation);
    ``items`` are the first test images (what the evaluations' ``examples`` predicted on)."""
    classes = list(info["classes"])
    written: list[Path] = []
    plots = Path(run_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    reports = Path(run_dir) / "reports"
    reports.mkdir(exist_ok=True)
    data = {k: info.get(k) for k in ("source", "classes", "images", "boxes", "skipped")}
    write_text(reports / "data.json", json.dumps(data, indent=2) + "\n")
    written.append(reports / "data.json")
    details = {arm: evaluation.details for arm, evaluation in arms.items()}
    if any(d.get("per_class_ap") for d in details.values()):
        written.append(plot_per_class_ap(details, classes, plots / "per_class_ap.png"))
        written.append(plot_pr_curves(details, classes, plots / "pr_curves.png"))
        table = reports / "per_class_ap.md"
        write_text(table, _per_class_table(arms, classes))
        written.append(table)
    truth = reports / "coco_ground_truth.json"
    for arm, evaluation in arms.items():
        coco = evaluation.details.get("coco")
        if coco:
            if truth not in written:  # the same test split for every arm
                write_text(truth, json.dumps(coco["ground_truth"]))
                written.append(truth)
            path = reports / f"coco_detections_{arm}.json"
            write_text(path, json.dumps(coco["detections"]))
            written.append(path)
        sheet = _prediction_sheet(evaluation, items, classes)
        if sheet is not None:
            path = plots / f"detections_{arm}.png"
            tmp = path.with_suffix(".tmp.png")
            sheet.save(tmp)
            tmp.replace(path)
            written.append(path)
    return written
