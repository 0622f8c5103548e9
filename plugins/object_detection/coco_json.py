"""The ``coco-json`` dataset: a COCO instances JSON file (``images``, ``annotations`` with
``[x, y, w, h]`` boxes, ``categories``), the images' ``file_name`` relative to
``image_root`` (default: the JSON's folder).

Validation, besides the box checks of :mod:`.datasets`: a DataError naming the file and
the image/annotation/category id or, with ``skip_invalid: true``, dropped and counted:
malformed images (no integer ``id`` or no ``file_name``), duplicate image ids, missing
image files, malformed annotations and bboxes, annotations whose ``image_id`` is not in
``images`` (or was skipped), unknown category ids. Never skippable: a file that is not
UTF-8 JSON, no ``images`` or ``categories`` list, a category without an integer ``id``
and a non-blank ``name``, a category id or name used twice.

Pipeline example::

    data: {dataset: coco-json, root: data, args: {path: coco/instances_train.json, image_root: coco/images}}

This module imports no torch, so registering the datasets stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tlengine.data import DatasetSpec
from tlengine.data.paths import existing_file, resolve_file, resolve_image_root
from tlengine.errors import DataError

from .datasets import (
    TASK,
    Boxes,
    DetectionSamples,
    Invalid,
    plural,
    positive_int,
    source_line,
)

__all__ = ["CocoJsonArgs", "build_coco_json", "COCO_JSON"]


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
    json_path = existing_file(root, args.path, "COCO JSON file")
    image_root = resolve_image_root(root, args.image_root, json_path.parent)
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
    invalid = Invalid(args.skip_invalid)

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
    builders: dict[int, Boxes] = {}
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
        path = resolve_file(root, image_root, file_name, f"{where} image id {iid}")
        if not path.is_file():
            invalid("missing image", f"{where}: image id {iid} file {path} does not exist")
            dropped_images.add(iid)
            continue
        builders[iid] = Boxes(path, positive_int(img.get("width")), positive_int(img.get("height")), invalid)

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
    extra = f", {plural(crowd, 'crowd annotation')} ignored" if crowd else ""
    return DetectionSamples(
        items=items,
        classes=classes,
        source=source_line("COCO", json_path, classes, items, extra),
        skipped=invalid.as_dict(),
    )


COCO_JSON = DatasetSpec(
    name="coco-json",
    task=TASK,
    args=CocoJsonArgs,
    build=build_coco_json,
    description="a COCO instances JSON file (images, annotations with [x, y, w, h] boxes, categories)",
)
