"""Detection samples as tensors: the dataset, its collate, and the feature cache's inputs.

:class:`DetectionDataset` turns :class:`DetectionItem` s into ``(image [3,S,S] float in [0,1],
target)`` with the box-aware transforms of :mod:`.transforms`; ``target`` is::

    {"boxes": [M,4] float xyxy pixels of the S x S image, "labels": [M] int64 0..K-1,
     "image_id": int (index into the dataset's items), "input_size": S,
     "orig_size": [2] int64 (h, w),
     "orig_boxes": [M0,4] / "orig_labels": [M0]: the annotation as it is (what COCO scores)}

Every image is resized to one square side ``S`` (``model.input_size``), aspect ratio not
kept, so a batch stacks into ``[B,3,S,S]`` and a frozen backbone's maps have one shape (what
the feature cache needs). Box coordinates scale with the image; the evaluation maps the
predictions back to each image's own pixels (:func:`to_original`), where COCO's
small/medium/large areas mean what they say.

The feature cache stores two kinds of views per training image (``cache.views``): even views
are the plain image, odd views its mirror image, with the boxes mirrored by
:func:`flip_targets` (``Task.view_targets``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from PIL import Image
from tlengine.errors import DataError
from torch import Tensor
from torch.utils.data import Dataset, Subset

from .datasets import DetectionItem
from .tiling import tile
from .transforms import build_detection_transforms, flip_boxes

__all__ = [
    "CACHE_AUGMENTATION",
    "DetectionDataset",
    "ImageTile",
    "collate_detection",
    "extraction_batches",
    "fingerprint",
    "flip_targets",
    "load_image",
    "resized_target",
    "tile_items",
    "targets",
    "to_original",
]

#: what the cached views are (part of the feature cache's key)
CACHE_AUGMENTATION = "detection:hflip-odd-views"

_NO_NORMALISATION = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # the detector normalises itself


@dataclass(frozen=True)
class ImageTile:
    """A tile of a larger image: ``box`` (x1, y1, x2, y2 pixels) of ``image`` (``data.tile``)."""

    image: Path | Image.Image
    box: tuple[float, float, float, float]


def tile_items(items: Sequence[DetectionItem], *, size: int, overlap: int, min_visible: float) -> list[DetectionItem]:
    """Every item cut into ``size`` px tiles overlapping by ``overlap`` px (:func:`.tiling.tile`):
    boxes clipped to their tile and kept when at least ``min_visible`` of them lies inside."""
    out = []
    for item in items:
        h, w = _item_size(item)
        for crop, boxes, labels in tile(item, (w, h), size, overlap, min_visible):
            x1, y1, x2, y2 = crop
            out.append(
                DetectionItem(ImageTile(item.image, crop), boxes, labels, width=int(x2 - x1), height=int(y2 - y1))
            )
    return out


def load_image(image: Path | Image.Image | ImageTile) -> Image.Image:
    """The RGB image of an item (a file inside the data root, an in-memory image of a
    generated dataset, or a tile of either); a file PIL cannot decode is a DataError naming it."""
    if isinstance(image, ImageTile):
        return load_image(image.image).crop(tuple(int(v) for v in image.box))
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    try:
        with Image.open(image) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as err:
        raise DataError(f"image {image} cannot be read: {err}") from None


def _item_size(item: DetectionItem, image: Image.Image | None = None) -> tuple[int, int]:
    """(height, width) of an item's image, from the annotation, the decoded image or the header."""
    if item.width and item.height:
        return int(item.height), int(item.width)
    if image is None:
        image = item.image if isinstance(item.image, Image.Image) else None
    if image is not None:
        return image.height, image.width
    from .datasets import image_size

    w, h = image_size(Path(item.image))
    item.width, item.height = w, h
    return h, w


def resized_target(item: DetectionItem, index: int, size: int) -> dict[str, Tensor]:
    """The target of an item's plain view at ``size`` x ``size`` (no decoding when the size is
    known): boxes scaled per axis and clamped, those narrower or lower than 1 px dropped, as
    the transform's ``SanitizeBoundingBoxes`` does."""
    h, w = _item_size(item)
    boxes = torch.tensor(item.boxes, dtype=torch.float32).reshape(-1, 4)
    boxes = boxes * torch.tensor([size / w, size / h, size / w, size / h])
    boxes = boxes.clamp(0, size)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    labels = torch.tensor(item.labels, dtype=torch.int64).reshape(-1)
    return {"boxes": boxes[keep], "labels": labels[keep], **_original(item, index, h, w, size)}


def _original(item: DetectionItem, index: int, h: int, w: int, size: int) -> dict[str, Any]:
    return {
        "image_id": index,
        "input_size": size,
        "orig_size": torch.tensor([h, w], dtype=torch.int64),
        "orig_boxes": torch.tensor(item.boxes, dtype=torch.float32).reshape(-1, 4),
        "orig_labels": torch.tensor(item.labels, dtype=torch.int64).reshape(-1),
    }


class DetectionDataset(Dataset):
    """``items[i]`` -> ``(image [3,S,S] in [0,1], target)``, augmented when ``train``."""

    def __init__(self, items: Sequence[DetectionItem], *, size: int, augment: str, train: bool, source: str = ""):
        self.items, self.size, self.augment, self.train, self.source = list(items), size, augment, train, source
        self.transform = build_detection_transforms(augment, train, size, **_NO_NORMALISATION)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Any]]:
        item = self.items[i]
        image = load_image(item.image)
        h, w = _item_size(item, image)
        target = {
            "boxes": torch.tensor(item.boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(item.labels, dtype=torch.int64).reshape(-1),
        }
        tensor, target = self.transform(image, target)
        return tensor, {**target, **_original(item, i, h, w, self.size)}


def collate_detection(samples: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, list[dict[str, Any]]]:
    """``[(image [3,S,S], target), ...]`` -> ``(images [B,3,S,S], [target, ...])``."""
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples]


def _base(dataset: Dataset) -> tuple[DetectionDataset, list[int]]:
    """The DetectionDataset under ``dataset`` (itself or a Subset) and the item indices it serves."""
    if isinstance(dataset, Subset):
        inner, idx = _base(dataset.dataset)
        return inner, [idx[i] for i in dataset.indices]
    if isinstance(dataset, DetectionDataset):
        return dataset, list(range(len(dataset)))
    raise TypeError(f"not a detection dataset: {type(dataset).__name__}")


def targets(dataset: Dataset) -> list[dict[str, Any]]:
    """Plain-view targets of every sample of ``dataset`` (a DetectionDataset or Subset of one)."""
    base, idx = _base(dataset)
    return [resized_target(base.items[i], i, base.size) for i in idx]


def flip_targets(batch: list[dict[str, Any]], views: Tensor) -> list[dict[str, Any]]:
    """Targets of cached views: the boxes of odd views mirrored in their ``input_size`` wide image."""
    return [{**t, "boxes": flip_boxes(t["boxes"], t["input_size"])} if int(v) % 2 else t for t, v in zip(batch, views)]


def fingerprint(dataset: Dataset) -> str:
    """Changes whenever the images, boxes, labels or size of the samples change: file paths
    with size and mtime (an in-memory image: its pixels' hash), boxes and labels, in order."""
    base, idx = _base(dataset)
    h = hashlib.sha256(f"size={base.size};source={base.source}".encode())
    for i in idx:
        item = base.items[i]
        image, crop = (item.image.image, item.image.box) if isinstance(item.image, ImageTile) else (item.image, None)
        if isinstance(image, Image.Image):
            h.update(hashlib.sha256(image.tobytes()).digest())
        else:
            stat = Path(image).stat()
            h.update(f"{image}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        h.update(repr(crop).encode())
        h.update(repr((item.boxes, item.labels)).encode())
    return h.hexdigest()[:32]


def extraction_batches(
    dataset: Dataset, *, indices: Tensor, view: int, batch_size: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """``([B,3,S,S] images in [0,1], sample indices [B])`` of the plain view (even ``view``) or
    the mirrored one (odd), for the samples ``indices`` of ``dataset``."""
    base, idx = _base(dataset)
    plain = build_detection_transforms("none", False, base.size, **_NO_NORMALISATION)
    no_boxes = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    order = indices.tolist()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        images = []
        for i in chunk:
            image, _ = plain(load_image(base.items[idx[i]].image), no_boxes)
            images.append(image.flip(-1) if view % 2 else image)
        yield torch.stack(images), torch.as_tensor(chunk, dtype=torch.int64)


def to_original(prediction: dict[str, Tensor], orig_size: Tensor, size: int) -> dict[str, Tensor]:
    """A prediction in the S x S input's pixels -> the image's own pixels (boxes scaled per axis)."""
    h, w = (int(v) for v in orig_size)
    scale = torch.tensor([w / size, h / size, w / size, h / size], dtype=torch.float32)
    return {**prediction, "boxes": prediction["boxes"].float().cpu() * scale}
