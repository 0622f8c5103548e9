"""Box-aware image transforms for detection (torchvision.transforms.v2 + tv_tensors).

:func:`build_detection_transforms` returns a callable ``(PIL image, target) -> (image, target)``
where ``target`` is ``{"boxes": float tensor [M, 4] xyxy absolute pixels, "labels": int64
tensor [M], ...}``. The image comes back as a float32 tensor [3, H, W] normalised with
``mean`` / ``std``; the boxes follow every geometric change of the image (flip, zoom-out,
IoU crop, resize) and come back as a plain float tensor [M, 4] in the output image's
pixels. Boxes that became degenerate (narrower or lower than 1 px, e.g. cut off by a crop)
are dropped together with their ``labels`` (and ``area`` / ``iscrowd`` when present) by
``SanitizeBoundingBoxes``, which always runs last (``area`` is filtered, not recomputed).

augment (training only; ``train=False`` ignores it):

- ``"none"``: no augmentation (only the resize and the normalisation below).
- ``"light"``: horizontal flip (p=0.5) and a small zoom-out (``RandomZoomOut``, canvas up to
  1.4x the image side, p=0.3), i.e. a mild scale jitter that never cuts an object.
- ``"strong"``: ``RandomPhotometricDistort`` (brightness, contrast, saturation, hue, channel
  order), zoom-out up to 2.5x (p=0.5), ``RandomIoUCrop`` (SSD-style) and horizontal flip.
  The IoU crop is skipped for an image without boxes (it needs at least one).

Resize (``size``): ``None`` keeps the image size. With an int the image is resized to a
fixed ``size`` x ``size`` square (``keep_aspect=False``, the default: aspect ratio not kept;
boxes scale by ``size / W`` in x and ``size / H`` in y exactly), or with
``keep_aspect=True`` its shorter side becomes ``size`` (boxes scale by the same factor in
both directions, up to the rounding of the longer side). Zoom-out pads with ``mean``, so
the padding is 0 after normalisation.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = [
    "AUGMENTS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DetectionTransform",
    "build_detection_transforms",
    "flip_boxes",
]

AUGMENTS: tuple[str, ...] = ("none", "light", "strong")
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# Per-box target entries sanitised together with the boxes (besides "labels").
_PER_BOX_KEYS: tuple[str, ...] = ("labels", "area", "iscrowd")


def flip_boxes(boxes: Any, width: float) -> Any:
    """Mirror xyxy boxes left-right in an image ``width`` pixels wide (tensor, array or list of 4-tuples)."""
    if isinstance(boxes, torch.Tensor):
        out = boxes.clone()
        out[..., 0] = width - boxes[..., 2]
        out[..., 2] = width - boxes[..., 0]
        return out
    if hasattr(boxes, "shape"):  # numpy array
        out = boxes.copy()
        out[..., 0] = width - boxes[..., 2]
        out[..., 2] = width - boxes[..., 0]
        return out
    return [(width - x2, y1, width - x1, y2) for x1, y1, x2, y2 in boxes]


def _per_box_tensors(sample: Any) -> tuple[torch.Tensor, ...]:
    """labels_getter for SanitizeBoundingBoxes: every per-box entry of the target dict."""
    _, target = sample
    return tuple(target[k] for k in _PER_BOX_KEYS if isinstance(target.get(k), torch.Tensor))


class DetectionTransform:
    """``(PIL image or uint8 tensor, target) -> (normalised float tensor [3, H, W], target)``."""

    def __init__(self, pipeline: v2.Transform, pipeline_without_boxes: v2.Transform) -> None:
        self.pipeline = pipeline
        # Used when the image has no boxes (RandomIoUCrop needs at least one).
        self.pipeline_without_boxes = pipeline_without_boxes

    def __call__(self, image: Image.Image | torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        img = v2.functional.to_image(image)
        h, w = img.shape[-2:]
        boxes = torch.as_tensor(target.get("boxes", torch.zeros(0, 4)), dtype=torch.float32).reshape(-1, 4)
        out = dict(target)
        out["boxes"] = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))
        if "labels" in out:
            out["labels"] = torch.as_tensor(out["labels"], dtype=torch.int64)
        pipeline = self.pipeline if len(boxes) else self.pipeline_without_boxes
        img, out = pipeline(img, out)
        out["boxes"] = out["boxes"].as_subclass(torch.Tensor)
        return img.as_subclass(torch.Tensor), out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


def build_detection_transforms(
    augment: str = "none",
    train: bool = True,
    size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    keep_aspect: bool = False,
) -> Callable[[Image.Image, dict], tuple[torch.Tensor, dict]]:
    """The detection transform for training (``train=True``, with ``augment``) or evaluation."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}, got '{augment}'")
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels or None, got {size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean and std need one value per RGB channel")
    fill = {tv_tensors.Image: tuple(round(255 * m) for m in mean), "others": 0}

    def steps(with_boxes: bool) -> list[v2.Transform]:
        out: list[v2.Transform] = []
        if train and augment == "light":
            out += [v2.RandomZoomOut(fill=fill, side_range=(1.0, 1.4), p=0.3), v2.RandomHorizontalFlip(0.5)]
        elif train and augment == "strong":
            out += [v2.RandomPhotometricDistort(p=0.5), v2.RandomZoomOut(fill=fill, side_range=(1.0, 2.5), p=0.5)]
            if with_boxes:
                out.append(v2.RandomIoUCrop())
            out.append(v2.RandomHorizontalFlip(0.5))
        if size is not None:
            out.append(v2.Resize(size if keep_aspect else (size, size), antialias=True))
        out += [
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(labels_getter=_per_box_tensors),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
        return out

    return DetectionTransform(v2.Compose(steps(True)), v2.Compose(steps(False)))
