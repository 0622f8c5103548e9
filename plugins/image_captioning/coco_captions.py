"""The ``coco-captions`` dataset: a COCO captions JSON file (``images`` with ``id`` and
``file_name``, ``annotations`` with ``image_id`` and ``caption``, as in
``captions_train2017.json``), the images' ``file_name`` relative to ``image_root``
(default: the JSON's folder).

Validation, besides the rules of :mod:`.datasets`: a DataError naming the file and the
image/annotation id or, with ``skip_invalid: true``, dropped and counted: malformed images
(no integer ``id`` or no ``file_name``), duplicate image ids (the first one is kept),
missing image files, malformed annotations, empty or blank captions, annotations whose
``image_id`` is not in ``images`` (or was skipped), images without any caption. Never
skippable: a file that is not UTF-8 JSON, no ``images`` or ``annotations`` list, a
``file_name`` leading out of the data root, a corrupt image.

Pipeline example::

    data: {dataset: coco-captions, root: data, args: {path: coco/captions_train2017.json, image_root: coco/train2017}}

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
    CaptionSamples,
    ImageCaptions,
    Invalid,
    clean_caption,
    finish_items,
    source_line,
)

__all__ = ["CocoCaptionsArgs", "build_coco_captions", "COCO_CAPTIONS"]


class CocoCaptionsArgs(BaseModel):
    """Arguments of the ``coco-captions`` dataset: a COCO captions JSON file."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="COCO captions JSON file relative to data.root")
    image_root: str | None = Field(
        None,
        description="folder the images' file_name is relative to, relative to data.root (default: the JSON's folder)",
    )
    skip_invalid: bool = Field(False, description="drop and count invalid captions/images instead of stopping")
    max_captions_per_image: int | None = Field(
        None, ge=1, description="keep at most this many captions per image (the first ones in file order)"
    )


def _coco_id(value: Any) -> int | None:
    """A COCO id: an integer (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def build_coco_captions(args: CocoCaptionsArgs, root: Path) -> CaptionSamples:
    """Read a COCO captions JSON file; errors name the file and the image/annotation id.

    Items follow the order of ``images``; each image's captions follow the order of
    ``annotations``.
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
        raise DataError(f"{where} does not hold a JSON object with images and annotations")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{where} has no '{key}' list")
    invalid = Invalid(args.skip_invalid)

    images: dict[int, ImageCaptions] = {}
    dropped: set[int] = set()
    for n, img in enumerate(data["images"]):
        iid = _coco_id(img.get("id")) if isinstance(img, dict) else None
        file_name = img.get("file_name") if isinstance(img, dict) else None
        if iid is None or not isinstance(file_name, str) or not file_name.strip():
            invalid("malformed image", f"{where}: image #{n + 1} needs an integer 'id' and a 'file_name'")
            continue
        if iid in images or iid in dropped:
            invalid("duplicate image id", f"{where}: image id {iid} is listed more than once")
            continue
        image_where = f"{where} image id {iid}"
        path = resolve_file(root, image_root, file_name, image_where)
        if not path.is_file():
            invalid("missing image", f"{image_where}: image file {path} does not exist")
            dropped.add(iid)
            continue
        images[iid] = ImageCaptions(path, image_where)

    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            invalid("malformed annotation", f"{where}: annotation #{n + 1} is not an object")
            continue
        aid = ann.get("id")
        label = f"{where} annotation id {aid}" if _coco_id(aid) is not None else f"{where} annotation #{n + 1}"
        iid = _coco_id(ann.get("image_id"))
        if iid is not None and iid in dropped:
            invalid("caption of a skipped image", f"{label}: its image id {iid} was skipped")
            continue
        if iid not in images:
            invalid("unknown image id", f"{label}: image_id {ann.get('image_id')!r} is not in 'images'")
            continue
        caption = ann.get("caption")
        if not isinstance(caption, str):
            invalid("malformed annotation", f"{label}: caption {caption!r} is not a string")
            continue
        text = clean_caption(caption)
        if not text:
            invalid("empty caption", f"{label}: the caption of image id {iid} is empty or blank")
            continue
        images[iid].captions.append(text)

    items, cut = finish_items(list(images.values()), invalid, args.max_captions_per_image, where)
    return CaptionSamples(
        items=items, source=source_line("COCO captions", json_path, items, cut), skipped=invalid.as_dict()
    )


COCO_CAPTIONS = DatasetSpec(
    name="coco-captions",
    task=TASK,
    args=CocoCaptionsArgs,
    build=build_coco_captions,
    description="a COCO captions JSON file (images with id/file_name, annotations with image_id/caption)",
)
