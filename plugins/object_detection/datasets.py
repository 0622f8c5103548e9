"""Object-detection datasets: ``coco-json``, ``voc`` and ``detection-csv``.

Each dataset is a :class:`tlengine.data.DatasetSpec`: a pydantic model that validates
``data.args`` in the pipeline file, and ``build(args, root)`` that returns
:class:`DetectionSamples` - one :class:`DetectionItem` per image (its file, its boxes and
their labels) plus the class names.

Conventions, the same for every format once parsed:

* boxes are ``(x1, y1, x2, y2)`` in **absolute pixels**, 0-based, continuous coordinates:
  pixel column ``i`` covers ``[i, i + 1)``, so a box around the whole ``W x H`` image is
  ``(0, 0, W, H)``. COCO's ``[x, y, w, h]`` and VOC's 1-based inclusive corners are
  converted on reading (see :func:`build_voc` for the VOC rule);
* labels index ``classes``;
* an image without boxes is kept (a negative example), with empty ``boxes``/``labels``.

Validation. Each of these is a DataError (one sentence naming the file and the line,
annotation id or object) or, with ``skip_invalid: true``, the box (or image) is dropped
and counted in :attr:`DetectionSamples.skipped` under its reason: non-finite coordinates,
degenerate boxes (width or height <= 0), boxes outside the image (beyond a 1-pixel
tolerance; boxes within it are clipped to the image), unknown category ids / labels,
missing image files, duplicate COCO image ids, COCO annotations whose ``image_id`` is not
in ``images``, malformed rows/annotations. Never skippable: a path leading out of the
data root, and a corrupt image (PIL cannot read its header).

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

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tlengine.data import DatasetSpec, resolve_under
from tlengine.errors import DataError

try:  # pragma: no cover - depends on what is installed
    from defusedxml.ElementTree import ParseError as _XmlParseError
    from defusedxml.ElementTree import parse as _parse_xml
except ImportError:  # pragma: no cover
    # defusedxml is not a dependency. The VOC XML files are the user's own local data, read
    # from inside the data root; they are not fetched from a remote party, so the stdlib
    # parser's exposure to malicious XML (entity expansion) is not an attack surface here.
    from xml.etree.ElementTree import ParseError as _XmlParseError
    from xml.etree.ElementTree import parse as _parse_xml

__all__ = [
    "TASK",
    "BOUNDS_TOLERANCE",
    "CSV_COLUMNS",
    "VOC_SPLITS",
    "Box",
    "DetectionItem",
    "DetectionSamples",
    "CocoJsonArgs",
    "VocArgs",
    "DetectionCsvArgs",
    "build_coco_json",
    "build_voc",
    "build_detection_csv",
    "COCO_JSON",
    "VOC",
    "DETECTION_CSV",
    "image_size",
    "to_coco",
    "tile",
    "register_datasets",
]

TASK = "object-detection"

#: How far (pixels) a box may reach past the image border before it is "outside"; boxes
#: within the tolerance are clipped to the image.
BOUNDS_TOLERANCE = 1.0

#: Header of a ``detection-csv`` file (extra columns are allowed and ignored).
CSV_COLUMNS: tuple[str, ...] = ("image_path", "xmin", "ymin", "xmax", "ymax", "label")

#: ``ImageSets/Main/<split>.txt`` files of a VOC folder that give a predefined split.
VOC_SPLITS: tuple[str, ...] = ("train", "val", "test")

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
def _plural(n: int, word: str) -> str:
    """``_plural(1, "image")`` -> "1 image"; ``_plural(3, "class")`` -> "3 classes"; "box" -> "boxes"."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}{'es' if word.endswith(('s', 'x')) else 's'}"


def _check_class_names(v: list[str] | None) -> list[str] | None:
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


def _label_order(labels: set[str]) -> list[str]:
    """Sorted labels; numerically if they are all integers (so '10' comes after '9')."""
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


class _Invalid:
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
        raise DataError(f"image {path} is not a readable image ({_reason(exc)})") from None


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


def _positive_int(value: Any) -> int | None:
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


def _resolve_file(root: Path, base: Path, relative: str, where: str) -> Path:
    """``base / relative`` inside ``root``; DataError naming ``where`` if it leads out."""
    try:
        return resolve_under(root, base / relative, what="image")
    except DataError:
        raise DataError(f"{where}: image path '{relative}' is outside the data root {Path(root).resolve()}") from None


def _existing_file(root: Path, relative: str, what: str) -> Path:
    path = resolve_under(root, relative, what=what)
    if not path.is_file():
        raise DataError(f"{what} {path} {'is not a file' if path.exists() else 'does not exist'}")
    return path


def _image_root(root: Path, image_root: str | None, default: Path) -> Path:
    if image_root is None:
        return default
    folder = resolve_under(root, image_root, what="image_root")
    if not folder.is_dir():
        raise DataError(f"image_root {folder} is not an existing directory")
    return folder


class _Boxes:
    """Collect the boxes of one image, checking each against the image size (read lazily)."""

    def __init__(self, image: Path, width: int | None, height: int | None, invalid: _Invalid) -> None:
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


def _source(kind: str, path: Path, classes: list[str], items: list[DetectionItem], extra: str = "") -> str:
    boxes = sum(len(i.boxes) for i in items)
    return (
        f"{kind} {path} ({_plural(len(classes), 'class')}, {_plural(len(items), 'image')}, "
        f"{_plural(boxes, 'box')}{extra})"
    )


# --------------------------------------------------------------------------- coco-json
class CocoJsonArgs(BaseModel):
    """Arguments of the ``coco-json`` dataset: a COCO instances JSON file."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="COCO JSON file relative to data.root")
    image_root: str | None = Field(
        None,
        description="folder the images' file_name is relative to, relative to data.root (default: the JSON's folder)",
    )
    skip_invalid: bool = Field(False, description="drop and count invalid boxes/images instead of stopping")


def _coco_id(value: Any) -> int | None:
    """A COCO id: an integer (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def build_coco_json(args: CocoJsonArgs, root: Path) -> DetectionSamples:
    """Read a COCO JSON file; errors name the file and the image/annotation/category id.

    ``bbox`` is ``[x, y, w, h]`` in absolute pixels (COCO's own convention, 0-based) and
    becomes ``(x, y, x + w, y + h)``. Classes are the category names in category-id order
    (ids need not be contiguous). Crowd annotations (``iscrowd: 1``) are not objects to
    detect one by one: they are dropped (mentioned in ``source``, not counted as skipped).
    """
    json_path = _existing_file(root, args.path, "COCO JSON file")
    image_root = _image_root(root, args.image_root, json_path.parent)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"COCO JSON file {json_path} is not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"COCO JSON file {json_path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    where = f"COCO JSON file {json_path}"
    if not isinstance(data, dict):
        raise DataError(f"{where} does not hold a JSON object with images, annotations and categories")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{where} has no '{key}' list")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(f"{where} has an 'annotations' entry that is not a list")
    invalid = _Invalid(args.skip_invalid)

    # categories -> classes in id order
    names: dict[int, str] = {}
    for n, cat in enumerate(data["categories"]):
        cid = _coco_id(cat.get("id")) if isinstance(cat, dict) else None
        name = cat.get("name") if isinstance(cat, dict) else None
        if cid is None or not isinstance(name, str) or not name.strip():
            raise DataError(f"{where}: category #{n + 1} needs an integer 'id' and a non-blank 'name'")
        if cid in names:
            raise DataError(f"{where}: category id {cid} is listed more than once")
        names[cid] = name
    if not names:
        raise DataError(f"{where} lists no categories")
    dupes = sorted({v for v in names.values() if list(names.values()).count(v) > 1})
    if dupes:
        raise DataError(f"{where}: category name {', '.join(repr(d) for d in dupes)} is used by more than one id")
    ordered = sorted(names)
    classes = [names[c] for c in ordered]
    label_of = {cid: i for i, cid in enumerate(ordered)}

    # images
    builders: dict[int, _Boxes] = {}
    dropped_images: set[int] = set()
    for n, img in enumerate(data["images"]):
        iid = _coco_id(img.get("id")) if isinstance(img, dict) else None
        file_name = img.get("file_name") if isinstance(img, dict) else None
        if iid is None or not isinstance(file_name, str) or not file_name.strip():
            invalid("malformed image", f"{where}: image #{n + 1} needs an integer 'id' and a 'file_name'")
            continue
        if iid in builders or iid in dropped_images:
            invalid("duplicate image id", f"{where}: image id {iid} is listed more than once")
            continue
        path = _resolve_file(root, image_root, file_name, f"{where} image id {iid}")
        if not path.is_file():
            invalid("missing image", f"{where}: image id {iid} file {path} does not exist")
            dropped_images.add(iid)
            continue
        builders[iid] = _Boxes(path, _positive_int(img.get("width")), _positive_int(img.get("height")), invalid)

    # annotations
    crowd = 0
    for n, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            invalid("malformed annotation", f"{where}: annotation #{n + 1} is not an object")
            continue
        aid = ann.get("id")
        label = f"{where} annotation id {aid}" if _coco_id(aid) is not None else f"{where} annotation #{n + 1}"
        if ann.get("iscrowd"):
            crowd += 1
            continue
        iid = _coco_id(ann.get("image_id"))
        if iid in dropped_images:
            invalid("annotation of a skipped image", f"{label}: its image id {iid} was skipped")
            continue
        if iid not in builders:
            invalid("unknown image id", f"{label}: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        cid = _coco_id(ann.get("category_id"))
        if cid not in label_of:
            invalid("unknown category", f"{label}: category_id {ann.get('category_id')!r} is not in 'categories'")
            continue
        bbox = ann.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
        ):
            invalid("malformed bbox", f"{label}: bbox {bbox!r} is not a list of 4 numbers [x, y, w, h]")
            continue
        x, y, w, h = (float(v) for v in bbox)
        builders[iid].add((x, y, x + w, y + h), label_of[cid], label)

    items = [b.item() for b in builders.values()]
    if not items:
        raise DataError(f"{where} has no usable images")
    extra = f", {_plural(crowd, 'crowd annotation')} ignored" if crowd else ""
    return DetectionSamples(
        items=items,
        classes=classes,
        source=_source("COCO", json_path, classes, items, extra),
        skipped=invalid.as_dict(),
    )


# --------------------------------------------------------------------------- voc
class VocArgs(BaseModel):
    """Arguments of the ``voc`` dataset: a Pascal VOC folder."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="folder with Annotations/*.xml, JPEGImages/ and optionally ImageSets/Main/{train,val,test}.txt, "
        "relative to data.root"
    )
    classes: list[str] | None = Field(
        None, description="allowed object names in label order (default: every name found, sorted)"
    )
    skip_difficult: bool = Field(False, description="drop objects marked <difficult>1</difficult>")
    skip_invalid: bool = Field(False, description="drop and count invalid boxes/images instead of stopping")

    @field_validator("classes")
    @classmethod
    def _class_names(cls, v: list[str] | None) -> list[str] | None:
        return _check_class_names(v)


def _xml_text(node: Any, tag: str) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def build_voc(args: VocArgs, root: Path) -> DetectionSamples:
    """Read ``Annotations/*.xml``; errors name the XML file and the object number (1-based).

    VOC corners are 1-based *inclusive* pixel indices: ``xmin=1, xmax=W`` spans the whole
    image. They become 0-based xyxy pixels as ``(xmin - 1, ymin - 1, xmax, ymax)`` (the
    left/top pixel index moves down by one; the inclusive right/bottom index is already the
    exclusive 0-based edge). ``ImageSets/Main/{train,val,test}.txt`` (one image id = XML
    file stem per line) give :attr:`DetectionSamples.splits`; images in no list stay in
    ``items`` without a split.
    """
    folder = resolve_under(root, args.path, what="VOC folder")
    if not folder.is_dir():
        raise DataError(f"VOC folder {folder} {'is not a directory' if folder.exists() else 'does not exist'}")
    ann_dir = folder / "Annotations"
    if not ann_dir.is_dir():
        raise DataError(f"VOC folder {folder} has no Annotations/ subfolder")
    xml_files = sorted(p for p in ann_dir.glob("*.xml") if not p.name.startswith("."))
    if not xml_files:
        raise DataError(f"VOC folder {ann_dir} has no .xml annotation files")
    image_dir = folder / "JPEGImages"
    invalid = _Invalid(args.skip_invalid)

    # Pass 1: parse every file (the default classes are the names found in all of them).
    parsed: list[tuple[Path, Path, int | None, int | None, list[tuple[str, str, Box | None]]]] = []
    for xml_path in xml_files:
        resolve_under(root, xml_path, what="VOC annotation")  # a symlink inside may still lead out of the root
        try:
            tree = _parse_xml(xml_path)
        except (_XmlParseError, ValueError) as exc:  # defusedxml's refusals are ValueErrors
            raise DataError(f"VOC annotation {xml_path} is not valid XML ({_reason(exc)})") from None
        ann = tree.getroot()
        filename = _xml_text(ann, "filename")
        if filename is None:
            invalid("malformed annotation", f"VOC annotation {xml_path} has no <filename>")
            continue
        image = _resolve_file(root, image_dir, filename, f"VOC annotation {xml_path}")
        if not image.is_file():
            invalid("missing image", f"VOC annotation {xml_path}: image file {image} does not exist")
            continue
        size = ann.find("size")
        width = _positive_int(_xml_text(size, "width")) if size is not None else None
        height = _positive_int(_xml_text(size, "height")) if size is not None else None
        objects: list[tuple[str, str, Box | None]] = []
        for n, obj in enumerate(ann.findall("object")):
            where = f"VOC annotation {xml_path} object {n + 1}"
            if args.skip_difficult and _xml_text(obj, "difficult") == "1":
                continue
            name = _xml_text(obj, "name")
            bnd = obj.find("bndbox")
            box: Box | None = None
            if name is not None and bnd is not None:
                try:
                    xmin, ymin, xmax, ymax = (float(_xml_text(bnd, t) or "") for t in ("xmin", "ymin", "xmax", "ymax"))
                    box = (xmin - 1.0, ymin - 1.0, xmax, ymax)
                except ValueError:
                    box = None
            objects.append((where, name or "", box))
        parsed.append((xml_path, image, width, height, objects))

    if args.classes is not None:
        classes = list(args.classes)
    else:
        classes = _label_order({name for *_, objects in parsed for _, name, box in objects if name and box})
        if not classes:
            raise DataError(f"VOC folder {folder} has no objects with a <name> and a <bndbox>")
    label_of = {c: i for i, c in enumerate(classes)}

    # Pass 2: check boxes and labels.
    items: list[DetectionItem] = []
    stems: dict[str, int] = {}
    for xml_path, image, width, height, objects in parsed:
        boxes = _Boxes(image, width, height, invalid)
        for where, name, box in objects:
            if box is None:
                invalid(
                    "malformed annotation",
                    f"{where}: needs a <name> and a <bndbox> with numeric xmin, ymin, xmax, ymax",
                )
            elif name not in label_of:
                invalid("unknown label", f"{where}: name '{name}' is not one of the classes ({', '.join(classes)})")
            else:
                boxes.add(box, label_of[name], where)
        stems[xml_path.stem] = len(items)
        items.append(boxes.item())
    if not items:
        raise DataError(f"VOC folder {folder} has no usable images")

    splits = _voc_splits(folder, stems, {p.stem for p in xml_files}, invalid)
    extra = ""
    if splits is not None:
        extra = ": " + ", ".join(f"{len(v)} {k}" for k, v in splits.items())
    return DetectionSamples(
        items=items,
        classes=classes,
        source=_source("VOC", folder, classes, items, extra),
        skipped=invalid.as_dict(),
        splits=splits,
    )


def _voc_splits(folder: Path, index: dict[str, int], known: set[str], invalid: _Invalid) -> dict[str, list[int]] | None:
    """Indices of each ``ImageSets/Main/<split>.txt`` list; None if there is no such file.

    ``index`` maps the stems of the kept items to their index; ``known`` holds every XML
    stem (an id of an image skipped as invalid is silently left out: it was counted already).
    """
    main = folder / "ImageSets" / "Main"
    files = {s: main / f"{s}.txt" for s in VOC_SPLITS if (main / f"{s}.txt").is_file()}
    if not files:
        return None
    splits: dict[str, list[int]] = {}
    seen: dict[str, str] = {}
    for split, list_file in files.items():
        ids: list[int] = []
        try:
            lines = list_file.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"VOC split file {list_file} is not UTF-8 text ({exc.reason})") from None
        for line_no, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            stem = parts[0]  # per-class lists have "<id> <flag>"; the main lists just "<id>"
            if stem in seen:
                if seen[stem] == split:
                    continue  # listed twice in the same file: harmless
                raise DataError(
                    f"VOC split file {list_file} line {line_no}: image id '{stem}' is also in the {seen[stem]} split"
                )
            seen[stem] = split
            if stem not in known:
                invalid(
                    "unknown image id",
                    f"VOC split file {list_file} line {line_no}: image id '{stem}' has no Annotations/{stem}.xml",
                )
                continue
            if stem in index:
                ids.append(index[stem])
        splits[split] = sorted(ids)
    return splits


# --------------------------------------------------------------------------- detection-csv
class DetectionCsvArgs(BaseModel):
    """Arguments of the ``detection-csv`` dataset: ``image_path,xmin,ymin,xmax,ymax,label`` rows."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="CSV file relative to data.root; header image_path,xmin,ymin,xmax,ymax,label; one row per box "
        "(xyxy absolute pixels, 0-based); an image without boxes is a row with the five box fields empty"
    )
    image_root: str | None = Field(
        None,
        description="folder the image paths are relative to, relative to data.root (default: the CSV's folder)",
    )
    classes: list[str] | None = Field(
        None, description="allowed labels in label order (default: every label found, sorted)"
    )
    skip_invalid: bool = Field(False, description="drop and count invalid boxes/images instead of stopping")

    @field_validator("classes")
    @classmethod
    def _class_names(cls, v: list[str] | None) -> list[str] | None:
        return _check_class_names(v)


def build_detection_csv(args: DetectionCsvArgs, root: Path) -> DetectionSamples:
    """Read one row per box, grouped by image in order of first appearance.

    Coordinates are 0-based xyxy absolute pixels. Errors name the CSV file and its line.
    """
    csv_path = _existing_file(root, args.path, "csv file")
    image_root = _image_root(root, args.image_root, csv_path.parent)
    invalid = _Invalid(args.skip_invalid)
    rows: list[tuple[int, str, list[str], str]] = []  # (line, image path, 4 box fields, label)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise DataError(f"csv file {csv_path} has no rows (not even a header)")
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise DataError(
                    f"csv file {csv_path} has no column {', '.join(repr(c) for c in missing)} (its header has: "
                    f"{', '.join(header)}; expected {','.join(CSV_COLUMNS)})"
                )
            for row in reader:
                line = reader.line_num
                values = [(row.get(c) or "").strip() for c in CSV_COLUMNS]
                if not any(values):
                    continue  # blank line
                rows.append((line, values[0], values[1:5], values[5]))
    except UnicodeDecodeError as exc:
        raise DataError(f"csv file {csv_path} is not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"csv file {csv_path} is not valid CSV ({exc})") from None
    if not rows:
        raise DataError(f"csv file {csv_path} has no rows (only a header)")

    if args.classes is not None:
        classes = list(args.classes)
    else:
        classes = _label_order({label for _, _, fields, label in rows if label and all(fields)})
        if not classes:
            raise DataError(f"csv file {csv_path} has no row with a box and a label")
    label_of = {c: i for i, c in enumerate(classes)}

    builders: dict[str, _Boxes | None] = {}  # image path as written -> boxes (None: image skipped)
    for line, path_value, fields, label in rows:
        where = f"csv file {csv_path} line {line}"
        if not path_value:
            invalid("malformed row", f"{where}: column 'image_path' is empty")
            continue
        if path_value not in builders:
            image = _resolve_file(root, image_root, path_value, where)
            if not image.is_file():
                invalid("missing image", f"{where}: image file {image} does not exist")
                builders[path_value] = None
            else:
                builders[path_value] = _Boxes(image, None, None, invalid)
        boxes = builders[path_value]
        if boxes is None:
            continue  # the image is missing (counted once, at its first row)
        if not any(fields) and not label:
            continue  # the image has no boxes
        if not all(fields) or not label:
            invalid(
                "malformed row",
                f"{where}: fill in all of xmin, ymin, xmax, ymax and label, or leave all five empty for an image "
                "without boxes",
            )
            continue
        try:
            box = tuple(float(v) for v in fields)
        except ValueError:
            invalid("malformed row", f"{where}: box coordinates {', '.join(fields)} are not all numbers")
            continue
        if label not in label_of:
            invalid("unknown label", f"{where}: label '{label}' is not one of the classes ({', '.join(classes)})")
            continue
        boxes.add(box, label_of[label], where)  # type: ignore[arg-type]

    items = [b.item() for b in builders.values() if b is not None]
    if not items:
        raise DataError(f"csv file {csv_path} has no usable images")
    return DetectionSamples(
        items=items,
        classes=classes,
        source=_source("detection CSV", csv_path, classes, items),
        skipped=invalid.as_dict(),
    )


# --------------------------------------------------------------------------- export / tiling
def to_coco(samples: DetectionSamples, image_root: Path | None = None) -> dict[str, Any]:
    """``samples`` as a COCO instances dict (what :func:`build_coco_json` and pycocotools read).

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


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride`` pixels, the last one flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return starts


def tile(
    item: DetectionItem, image_size: tuple[int, int], tile: int, overlap: int, min_visible: float = 0.6
) -> list[tuple[Box, list[Box], list[int]]]:
    """Cut a large ``(width, height)``-pixel image into ``tile x tile`` patches overlapping by ``overlap`` pixels.

    Tiles start every ``tile - overlap`` pixels; the last row/column is moved back to end
    at the image border, so every pixel is covered and no tile leaves the image (an image
    smaller than ``tile`` along an axis gets one tile as long as the image there).

    Returns, for every tile (including tiles without boxes), ``(crop_box, boxes, labels)``:
    ``crop_box`` is the tile as xyxy absolute pixels of the image (what ``PIL.Image.crop``
    takes); ``boxes`` are the item's boxes clipped to the tile and shifted into its
    coordinates (xyxy pixels, origin at the tile's top-left corner), kept only when at least
    ``min_visible`` of the box's area lies inside the tile.
    """
    if tile <= 0:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be at least 0 and smaller than tile ({tile}), got {overlap}")
    if not 0 < min_visible <= 1:
        raise ValueError(f"min_visible must be in (0, 1], got {min_visible}")
    width, height = image_size
    stride = tile - overlap
    out: list[tuple[Box, list[Box], list[int]]] = []
    for y0 in _starts(height, tile, stride):
        for x0 in _starts(width, tile, stride):
            x1, y1 = x0 + min(tile, width), y0 + min(tile, height)
            crop: Box = (float(x0), float(y0), float(x1), float(y1))
            boxes: list[Box] = []
            labels: list[int] = []
            for (bx1, by1, bx2, by2), label in zip(item.boxes, item.labels):
                area = (bx2 - bx1) * (by2 - by1)
                cx1, cy1, cx2, cy2 = max(bx1, x0), max(by1, y0), min(bx2, x1), min(by2, y1)
                if cx2 <= cx1 or cy2 <= cy1 or area <= 0:
                    continue
                if (cx2 - cx1) * (cy2 - cy1) < min_visible * area:
                    continue
                boxes.append((cx1 - x0, cy1 - y0, cx2 - x0, cy2 - y0))
                labels.append(label)
            out.append((crop, boxes, labels))
    return out


# --------------------------------------------------------------------------- registration
COCO_JSON = DatasetSpec(
    name="coco-json",
    task=TASK,
    args=CocoJsonArgs,
    build=build_coco_json,
    description="a COCO instances JSON file (images, annotations with [x, y, w, h] boxes, categories)",
)
VOC = DatasetSpec(
    name="voc",
    task=TASK,
    args=VocArgs,
    build=build_voc,
    description="a Pascal VOC folder: Annotations/*.xml, JPEGImages/, optional ImageSets/Main/{train,val,test}.txt",
)
DETECTION_CSV = DatasetSpec(
    name="detection-csv",
    task=TASK,
    args=DetectionCsvArgs,
    build=build_detection_csv,
    description="a CSV file with image_path,xmin,ymin,xmax,ymax,label rows (one per box)",
)


def register_datasets(registry: Any) -> None:
    """Add the three datasets to a dataset :class:`tlengine.registry.Registry`."""
    for spec in (COCO_JSON, VOC, DETECTION_CSV):
        registry.add(spec.name, spec, description=spec.description)
