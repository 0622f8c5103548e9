"""What every image-captioning dataset builds (:class:`CaptionSamples`), the validation
helpers the datasets share, and their registration: ``coco-captions``
(:mod:`.coco_captions`), ``caption-csv`` (:mod:`.caption_csv`) and ``synthetic-captions``
(:mod:`.synthetic`).

Each dataset is a :class:`tlengine.data.DatasetSpec`: a pydantic model that validates
``data.args`` in the pipeline file, and ``build(args, root)`` that returns
:class:`CaptionSamples` - one :class:`CaptionItem` per image (its file, or the generated
image itself, and its reference captions, several per image).

Conventions, the same for every format once parsed:

* a caption is a non-blank string; leading/trailing whitespace is removed and inner runs of
  whitespace become one space (case and punctuation are kept: tokenising is the task's job);
* every image has at least one caption; ``max_captions_per_image`` keeps the first N (file
  order), which is not counted as skipped;
* items come in order of first appearance in the file.

Validation. Each of these is a DataError (one sentence naming the file and the line,
annotation id or image id) or, with ``skip_invalid: true``, the caption (or image) is
dropped and counted in :attr:`CaptionSamples.skipped` under its reason: empty captions,
captions of unknown image ids, images without any caption, missing image files, plus each
format's own rules (malformed rows/annotations, duplicate image ids). Never skippable: a
path leading out of the data root, and a corrupt image (PIL cannot read its header).
The header of every kept image is read (``Image.open(path).size``, no pixel decoding) to
check it and to fill in ``width``/``height``.

Pipeline examples::

    data: {dataset: coco-captions, root: data, args: {path: coco/captions_train2017.json, image_root: coco/train2017}}
    data: {dataset: caption-csv, root: data, args: {path: flickr8k/captions.txt, image_root: flickr8k/Images}}
    data: {dataset: synthetic-captions, args: {images: 500, size: 128}}

This module imports no torch, so registering the datasets stays cheap.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tlengine.errors import DataError

__all__ = [
    "TASK",
    "CaptionItem",
    "CaptionSamples",
    "Invalid",
    "clean_caption",
    "image_size",
    "register_datasets",
]

TASK = "image-captioning"


@dataclass
class CaptionItem:
    """One image and its reference captions.

    image: the image file, resolved inside the data root (a generated dataset holds the
        image itself, a PIL image).
    captions: the reference captions, at least one, cleaned (see the module docstring).
    width, height: image size in pixels (from the image header for files); None if unknown.
    """

    image: Path | Image.Image
    captions: list[str]
    width: int | None = None
    height: int | None = None


@dataclass
class CaptionSamples:
    """What every image-captioning dataset builds.

    items: one :class:`CaptionItem` per image.
    source: one line for logs and reports, e.g. ``"COCO captions /data/a.json (10 images, 50 captions)"``.
    skipped: reason -> how many captions/images were dropped for it (only with ``skip_invalid``).
    """

    items: list[CaptionItem]
    source: str
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_captions(self) -> int:
        """Captions over all images."""
        return sum(len(item.captions) for item in self.items)


# --------------------------------------------------------------------------- helpers
def plural(n: int, word: str) -> str:
    """``plural(1, "image")`` -> "1 image"; ``plural(3, "caption")`` -> "3 captions"."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}{'es' if word.endswith(('s', 'x')) else 's'}"


def error_reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


_SPACES = re.compile(r"\s+")


def clean_caption(text: str) -> str:
    """``text`` stripped, inner whitespace runs collapsed to one space ("" for a blank caption)."""
    return _SPACES.sub(" ", text).strip()


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


def image_size(path: Path, where: str = "") -> tuple[int, int]:
    """``(width, height)`` in pixels from the image header (pixels are not decoded).

    Raises DataError naming the file (after ``where``, e.g. ``"csv file a.csv line 3: "``) if
    it does not exist or PIL cannot open it.
    """
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(f"{where}image {path} does not exist") from None
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
        raise DataError(f"{where}image {path} is not a readable image ({error_reason(exc)})") from None


class ImageCaptions:
    """The captions of one image file while a dataset is being read.

    where: how errors name the image, e.g. ``"COCO JSON file a.json image id 3"`` or
    ``"csv file a.csv line 7"`` (the line where the image first appears).
    """

    def __init__(self, image: Path, where: str) -> None:
        self.image = image
        self.where = where
        self.captions: list[str] = []


def finish_items(
    images: list[ImageCaptions], invalid: Invalid, max_captions: int | None, file_where: str
) -> tuple[list[CaptionItem], int]:
    """Items of the images that have captions (read each header: corrupt images are errors).

    Images without captions go to ``invalid`` ("image without captions"). Returns the items
    and how many captions ``max_captions`` left out. DataError if no image is left.
    """
    items: list[CaptionItem] = []
    cut = 0
    for img in images:
        if not img.captions:
            invalid("image without captions", f"{img.where}: image {img.image} has no caption")
            continue
        width, height = image_size(img.image, f"{img.where}: ")
        captions = img.captions
        if max_captions is not None and len(captions) > max_captions:
            cut += len(captions) - max_captions
            captions = captions[:max_captions]
        items.append(CaptionItem(img.image, list(captions), width, height))
    if not items:
        raise DataError(f"{file_where} has no usable images with captions")
    return items, cut


def source_line(kind: str, path: Path, items: list[CaptionItem], cut: int = 0) -> str:
    captions = sum(len(i.captions) for i in items)
    extra = f", {plural(cut, 'caption')} beyond max_captions_per_image left out" if cut else ""
    return f"{kind} {path} ({plural(len(items), 'image')}, {plural(captions, 'caption')}{extra})"


# --------------------------------------------------------------------------- registration
def register_datasets(registry: Any) -> None:
    """Add the three datasets to a dataset :class:`tlengine.registry.Registry`."""
    from .caption_csv import CAPTION_CSV
    from .coco_captions import COCO_CAPTIONS
    from .synthetic import SYNTHETIC_CAPTIONS

    for spec in (COCO_CAPTIONS, CAPTION_CSV, SYNTHETIC_CAPTIONS):
        registry.add(spec.name, spec, description=spec.description)
