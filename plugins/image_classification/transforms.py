"""Image preprocessing/augmentation and the torch Dataset that applies it.

:func:`build_transforms` turns a backbone's preprocessing description into a
``PIL image -> float32 tensor [3, H, W]`` callable; :class:`ImageDataset` pairs
:class:`~tlengine_plugins.image_classification.datasets.ImageSamples` items with it.

All random augmentation uses torchvision ``transforms.v2``, which draws from torch's
global RNG, so seeding torch (the training loop does) makes augmentation reproducible.
With ``num_workers > 0`` each DataLoader worker is seeded by torch from the base seed,
so runs stay reproducible for a fixed worker count.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from .datasets import ImageItem, open_image

__all__ = ["DEFAULT_CROP_PCT", "AUGMENT_LEVELS", "to_rgb", "build_transforms", "ImageDataset"]

#: Eval crop fraction used when the preprocessing does not give one (the ImageNet
#: convention: resize to 256, centre-crop 224).
DEFAULT_CROP_PCT = 0.875
AUGMENT_LEVELS = ("none", "light", "strong")

_INTERPOLATIONS = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB (greyscale, palette, alpha, 16-bit and float included)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # PIL's own conversion clips these to 0..255; rescale the actual range instead.
        arr = np.asarray(image, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        image = Image.fromarray(arr.astype(np.uint8), mode="L")
    return image.convert("RGB")


def build_transforms(
    preprocessing: Mapping[str, Any], *, augment: str, train: bool
) -> Callable[[Image.Image], torch.Tensor]:
    """A callable mapping a PIL image (any mode/size) to a normalised float32 [3, S, S].

    preprocessing: the backbone's input description:
        ``input_size`` (int S), ``mean`` and ``std`` (3 floats each, for 0..1 pixels),
        ``interpolation`` ("bilinear" | "bicubic" | "nearest", default bilinear),
        ``crop_pct`` (optional, default 0.875).
    augment: "none" | "light" | "strong" (only used when ``train``).
    train: False -> the deterministic eval transform.

    Eval: resize the shorter side to ``floor(S / crop_pct)`` then centre-crop S x S. With
    ``crop_pct=1.0`` a square image is just resized, nothing is cut: use that for images
    whose object may touch the border (``ImageSamples.eval_crop_pct`` says so, e.g. for
    synthetic-shapes; the task should put it into ``preprocessing`` before calling this).

    Train: "none" is the eval transform; "light" is RandomResizedCrop(S, scale 0.7-1) +
    horizontal flip; "strong" is RandomResizedCrop(S, scale 0.6-1) + flip + a small
    random affine (rotation up to 15 degrees, shifts, scale) + colour jitter + 10%
    greyscale.
    """
    if augment not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENT_LEVELS)}, got '{augment}'")
    size = int(preprocessing["input_size"])
    mean = [float(m) for m in preprocessing["mean"]]
    std = [float(s) for s in preprocessing["std"]]
    name = str(preprocessing.get("interpolation", "bilinear")).lower()
    if name not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(_INTERPOLATIONS)}, got '{name}'")
    interpolation = _INTERPOLATIONS[name]
    crop_pct = preprocessing.get("crop_pct")
    crop_pct = DEFAULT_CROP_PCT if crop_pct is None else float(crop_pct)
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")

    steps: list[Callable[..., Any]] = [to_rgb]
    if not train or augment == "none":
        steps += [
            v2.Resize(math.floor(size / crop_pct), interpolation=interpolation, antialias=True),
            v2.CenterCrop(size),
        ]
    elif augment == "light":
        steps += [
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    else:  # strong
        # Fill rotated-in corners with the mean colour: zero after normalisation.
        fill = [int(round(m * 255)) for m in mean]
        steps += [
            v2.RandomResizedCrop(size, scale=(0.6, 1.0), interpolation=interpolation, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(
                degrees=15,
                translate=(0.05, 0.05),
                scale=(0.9, 1.1),
                interpolation=InterpolationMode.BILINEAR,
                fill=fill,
            ),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05),
            v2.RandomGrayscale(p=0.1),
        ]
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.ToPureTensor()]
    return v2.Compose(steps)


class ImageDataset(Dataset):
    """``ImageSamples.items`` as a torch Dataset of ``(float32 tensor [3, H, W], label)``.

    Files are read when an item is requested (so only the batch in flight is in
    memory); a file that cannot be decoded raises DataError naming it. In-memory PIL
    images are used as they are (transforms never modify their input).
    """

    def __init__(self, items: Sequence[tuple[ImageItem, int]], transform: Callable[[Image.Image], torch.Tensor]):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.items]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item, label = self.items[index]
        image = item if isinstance(item, Image.Image) else open_image(Path(item))
        return self.transform(image), int(label)
