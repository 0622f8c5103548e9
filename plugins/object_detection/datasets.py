"""What every object-detection dataset builds (:class:`DetectionSamples`), the conventions
and validation helpers the datasets share, :func:`to_coco`, and their registration:
``coco-json`` (:mod:`.coco_json`), ``voc`` (:mod:`.voc`) and ``detection-csv``
(:mod:`.detection_csv`). Cutting images into tiles is :mod:`.tiling`.

Each dataset is a :class:`tlengine.data.DatasetSpec`: a pydantic model that validates
``data.args`` in the pipeline file, and ``build(args, root)`` that returns
:class:`DetectionSamples` - one :class:`DetectionItem` per image (its file, its boxes and
their labels) plus the class names.

Conventions, the same for every format once parsed:

* boxes are ``(x1, y1, x2, y2)`` in **absolute pixels**, 0-based, continuous coordinates:
  pixel column ``i`` covers ``[i, i + 1)``, so a box around the whole ``W x H`` image is
  ``(0, 0, W, H)``. COCO's ``[x, y, w, h]`` and VOC's 1-based inclusive corners are
  converted on reading (see :func:`.voc.build_voc` for the VOC rule);
* labels index ``classes``;
* an image without boxes is kept (a negative example), with empty ``boxes``/``labels``.

Validation. Each of these is a DataError (one sentence naming the file and the line,
annotation id or object) or, with ``skip_invalid: true``, the box (or image) is dropped
and counted in :attr:`DetectionSamples.skipped` under its reason: non-finite coordinates,
degenerate boxes (width or height <= 0), boxes outside the image (beyond a 1-pixel
tolerance; boxes within it are clipped to the image), plus each format's own rules
(unknown labels, missing image files, malformed rows/annotations; see its module). Never
skippable: a path leading out of the data root, and a corrupt image (PIL cannot read its
header).

Image sizes come from the annotation when it has them; otherwise the image header is read
with PIL (``Image.open(path).size``, no pixel decoding), and only for images that have
boxes to check. Files are otherwise not opened.

Pipeline examples::

    data: {dataset: coco-json, root: data, args: {path: coco/instances_train.json, image_root: coco/images}}
    data: {dataset: voc, root: data, args: {path: VOC2007, skip_difficult: true}}
    data: {dataset: detection-csv, root: data, args: {path: boxes.csv, classes: [car, person]}}

This module imports no torch, so registering the datasets stays cheap.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tlengine.errors import DataError

__all__ = [
    "TASK",
    "BOUNDS_TOLERANCE",
    "Box",
    "DetectionItem",
    "DetectionSamples",
    "image_size",
    "to_coco",
    "register_datasets",
]

TASK = "object-detection"

#: How far (pixels) a box may reach past the image border before it is "outside"; boxes
#: within the tolerance are clipped to the image.
BOUNDS_TOLERANCE = 1.0

#: ``(x1, y1, x2, y2)``: absolute pixels, 0-based, x2 > x1 and y2 > y1.
Box = tuple[float, float, float, float]


@dataclass
class DetectionItem:
    """One image and its boxes.

    image: the image file, resolved inside the data root (a generated dataset holds the
        image itself, a PIL image).
    boxes: ``(x1, y1, x2, y2)`` in absolute pixels (xyxy, 0-based), one per object.
    labels: class index (into :attr:`DetectionSamples.classes`) of each box.
    width, height: image size in pixels, from the annotation when it gives one (or from the
        image header when it had to be read to check boxes); None if unknown.
    """

    image: Path | Image.Image
    boxes: list[Box]
    labels: list[int]
    width: int | None = None
    height: int | None = None


@dataclass
class DetectionSamples:
    """What every object-detection dataset builds.

    items: one :class:`DetectionItem` per image (images without boxes included).
    classes: class names, in label order.
    source: one line for logs and reports, e.g. ``"COCO /data/a.json (3 classes, 10 images, 25 boxes)"``.
    skipped: reason -> how many boxes/images were dropped for it (only with ``skip_invalid``).
    splits: a split the dataset ships with (VOC ``ImageSets/Main``), as indices into ``items``
        for the keys present among ``train``, ``val``, ``test``; None: no predefined split.
    """

    items: list[DetectionItem]
    classes: list[str]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)
    splits: dict[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_boxes(self) -> int:
        """Boxes over all images."""
        return sum(len(item.boxes) for item in self.items)


# --------------------------------------------------------------------------- helpers
def plural(n: int, word: str) -> str:
    """``plural(1, "image")`` -> "1 image"; ``plural(3, "class")`` -> "3 classes"; "box" -> "boxes"."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}{'es' if word.endswith(('s', 'x')) else 's'}"


def check_class_names(v: list[str] | None) -> list[str] | None:
    """Shared validator: a non-empty list of distinct, non-blank class names."""
    if v is None:
        return v
    if not v:
        raise ValueError("must list at least one class (or be omitted)")
    if any(not c.strip() for c in v):
        raise ValueError("class names must not be blank")
    dupes = sorted({c for c in v if v.count(c) > 1})
    if dupes:
        raise ValueError(f"classes listed more than once: {', '.join(dupes)}")
    return v


def label_order(labels: set[str]) -> list[str]:
    """Sorted labels; numerically if they are all integers (so '10' comes after '9')."""
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def error_reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


class Invalid:
    """Raise a DataError for invalid data, or (``skip_invalid``) count it under a reason."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.counts: Counter[str] = Counter()

    def __call__(self, reason: str, message: str) -> None:
        if not self.skip:
            raise DataError(message)
        self.counts[reason] += 1

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` in pixels from the image header (pixels are not decoded).

    Raises DataError naming the file if it does not exist or PIL cannot open it.
    """
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
        raise DataError(f"image {path} is not a readable image ({error_reason(exc)})") from None


def _box_problem(box: Box, width: int | None, height: int | None) -> tuple[str, str] | None:
    """``(reason, detail)`` if ``box`` (xyxy pixels) is invalid for a ``width x height`` image, else None."""
    if not all(math.isfinite(v) for v in box):
        return "non-finite coordinates", f"box {_fmt(box)} has a NaN or infinite coordinate"
    x1, y1, x2, y2 = box
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return "degenerate box", f"box {_fmt(box)} (xyxy pixels) has zero or negative width or height"
    if width is not None and height is not None:
        t = BOUNDS_TOLERANCE
        if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
            return "box outside image", f"box {_fmt(box)} (xyxy pixels) lies outside the {width}x{height} image"
    return None


def _fmt(box: Box) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def _clip(box: Box, width: int | None, height: int | None) -> Box:
    """Clip a box that passed :func:`_box_problem` to the image (no-op if the size is unknown)."""
    if width is None or height is None:
        return box
    x1, y1, x2, y2 = box
    return (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))


def positive_int(value: Any) -> int | None:
    """An image size field: a positive integer, or None (absent, 0 or not a number = unknown)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, float) and value.is_integer() and value > 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and int(value) > 0:
        return int(value)
    return None


class Boxes:
    """Collect the boxes of one image, checking each against the image size (read lazily)."""

    def __init__(self, image: Path, width: int | None, height: int | None, invalid: Invalid) -> None:
        self.image = image
        self.width = width
        self.height = height
        self.invalid = invalid
        self.boxes: list[Box] = []
        self.labels: list[int] = []

    def add(self, box: Box, label: int, where: str) -> None:
        """Check ``box`` (xyxy pixels); ``where`` starts the error, e.g. ``"csv file a.csv line 3"``."""
        problem = _box_problem(box, None, None)  # NaN/degenerate first: no need to open the image
        if problem is None:
            if self.width is None or self.height is None:
                self.width, self.height = image_size(self.image)
            problem = _box_problem(box, self.width, self.height)
        if problem is not None:
            self.invalid(problem[0], f"{where}: {problem[1]}")
            return
        self.boxes.append(_clip(box, self.width, self.height))
        self.labels.append(label)

    def item(self) -> DetectionItem:
        return DetectionItem(self.image, self.boxes, self.labels, self.width, self.height)


def source_line(kind: str, path: Path, classes: list[str], items: list[DetectionItem], extra: str = "") -> str:
    boxes = sum(len(i.boxes) for i in items)
    return (
        f"{kind} {path} ({plural(len(classes), 'class')}, {plural(len(items), 'image')}, {plural(boxes, 'box')}{extra})"
    )


# --------------------------------------------------------------------------- export
def to_coco(samples: DetectionSamples, image_root: Path | None = None) -> dict[str, Any]:
    """``samples`` as a COCO instances dict (what :func:`.coco_json.build_coco_json` and pycocotools read).

    Images get ids 1..N in item order, with ``width``/``height`` in pixels (read from the
    image header when the item has none); annotations get ids 1..M with ``bbox`` ``[x, y,
    w, h]`` in absolute pixels, ``area = w * h``, ``iscrowd: 0``; categories get ids 1..K in
    class order. ``file_name`` is relative to ``image_root`` when given (and the image is
    under it), else the absolute path.
    """
    images, annotations = [], []
    for image_id, item in enumerate(samples.items, start=1):
        width, height = item.width, item.height
        if width is None or height is None:
            width, height = image_size(item.image)
        file_name = str(item.image)
        if image_root is not None:
            base = Path(image_root).resolve()
            if base in item.image.parents:
                file_name = item.image.relative_to(base).as_posix()
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for (x1, y1, x2, y2), label in zip(item.boxes, item.labels):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(samples.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


# --------------------------------------------------------------------------- registration
def register_datasets(registry: Any) -> None:
    """Add the three datasets to a dataset :class:`tlengine.registry.Registry`."""
    from .coco_json import COCO_JSON
    from .detection_csv import DETECTION_CSV
    from .voc import VOC

    for spec in (COCO_JSON, VOC, DETECTION_CSV):
        registry.add(spec.name, spec, description=spec.description)
