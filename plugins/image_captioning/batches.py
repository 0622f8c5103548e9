"""Captioned images as batches: the torch dataset, its transforms, and the feature-cache inputs.

A sample is one image with *all* its reference captions (:class:`.model.CaptionTarget`):
the encoder runs once per image and the decoder learns every caption of it in the same
step. ``collate`` stacks the images ``[N,3,S,S]`` and keeps the targets as a list, which is
also what the feature cache serves, so the model sees the same batch either way.

Augmentation never mirrors: captions say "left of". ``data.augment: light`` is a random
``S`` x ``S`` crop of the image resized to ``S / TRAIN_CROP_PCT``; the feature cache's
training views >= 1 are the same crops (position fixed by (seed, sample, view)), cut by the
fused ``normalize_images`` op; view 0 is the eval transform (the whole image resized to S).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from PIL import Image
from tlengine.cache import fingerprint_items
from tlengine.execution import InputFormat
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from .model import CaptionTarget

#: training crops are cut from the image resized to input_size / TRAIN_CROP_PCT
TRAIN_CROP_PCT = 0.92
CACHE_AUGMENTATION = f"view 0: whole image resized; views >= 1: random crop from input/{TRAIN_CROP_PCT}, no mirror"
AUGMENT_LEVELS = ("none", "light")


def load_image(path: Path) -> Image.Image:
    """An image file as RGB; DataError naming the file if it is missing or unreadable (the
    image plugin's ``open_image``)."""
    from tlengine_plugins.image_classification.datasets import open_image

    return open_image(path).convert("RGB")


def train_base_size(size: int) -> int:
    """Side of the resized image the training crops of side ``size`` are cut from."""
    return max(size, math.floor(size / TRAIN_CROP_PCT))


def build_transform(
    preprocessing: dict[str, Any], *, augment: str, train: bool
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised float32 ``[3,S,S]``: the whole image resized to S x S (eval and
    ``augment: none``), or a random S x S crop of it resized to ``train_base_size(S)``."""
    if augment not in AUGMENT_LEVELS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENT_LEVELS)}, got '{augment}'")
    size = int(preprocessing["input_size"])
    steps: list[Any] = []
    if train and augment == "light":
        base = train_base_size(size)
        steps += [v2.Resize((base, base), antialias=True), v2.RandomCrop(size)]
    else:
        steps += [v2.Resize((size, size), antialias=True)]
    steps += [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([float(m) for m in preprocessing["mean"]], [float(s) for s in preprocessing["std"]]),
        v2.ToPureTensor(),
    ]
    return v2.Compose(steps)


class CaptionDataset(Dataset):
    """Images (files or PIL images) and their :class:`CaptionTarget` as ``(float32 [3,S,S], target)``."""

    def __init__(
        self,
        images: Sequence[Path | Image.Image],
        targets: Sequence[CaptionTarget],
        transform: Callable[[Image.Image], torch.Tensor],
    ):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = list(images)
        self.captions = list(targets)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def image(self, index: int) -> Image.Image:
        item = self.images[index]
        return item.convert("RGB") if isinstance(item, Image.Image) else load_image(Path(item))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, CaptionTarget]:
        return self.transform(self.image(index)), self.captions[index]


def collate(samples: Sequence[tuple[torch.Tensor, CaptionTarget]]) -> tuple[torch.Tensor, list[CaptionTarget]]:
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples]


def unwrap(dataset: Dataset) -> tuple[CaptionDataset, list[int]]:
    """(CaptionDataset, indices into it) of a Subset of one, or of one itself."""
    if isinstance(dataset, Subset):
        return dataset.dataset, list(dataset.indices)
    return dataset, list(range(len(dataset)))


def targets(dataset: Dataset) -> list[CaptionTarget]:
    base, indices = unwrap(dataset)
    return [base.captions[i] for i in indices]


def fingerprint(dataset: Dataset) -> str:
    """Changes when any image (path, size, mtime; in-memory pixels) changes. Captions are not
    in it: the cached features do not depend on them (targets are read fresh every run)."""
    base, indices = unwrap(dataset)

    def items() -> Iterator[bytes | str]:
        for i in indices:
            item = base.images[i]
            if isinstance(item, Image.Image):
                yield f"image:{item.mode}:{item.size}"
                yield item.tobytes()
            else:
                st = Path(item).stat()
                yield f"file:{item}:{st.st_size}:{st.st_mtime_ns}"

    return fingerprint_items(items())


class _BaseImages(Dataset):
    """``dataset.image(i)`` resized to ``side`` x ``side`` as uint8 ``[side,side,3]``."""

    def __init__(self, dataset: CaptionDataset, indices: Sequence[int], side: int):
        self.dataset, self.indices, self.side = dataset, list(indices), side

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.dataset.image(self.indices[i]).resize((self.side, self.side), Image.BILINEAR, reducing_gap=None)
        return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(self.side, self.side, 3)


def extraction_batches(
    dataset: Dataset,
    *,
    indices: torch.Tensor,
    view: int,
    seed: int,
    batch_size: int,
    preprocessing: dict[str, Any],
    kernels: str,
    train: bool,
    input_format: InputFormat | None = None,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised ``[B,3,S,S]`` batches of the samples ``indices`` for the feature cache, cut
    and normalised by the fused ``normalize_images`` op: view 0 the whole image, views >= 1 a
    crop at a position fixed by (seed, sample, view), never mirrored."""
    from tlengine_plugins.image_classification.extraction import normalized_views

    base_ds, positions = unwrap(dataset)
    size = int(preprocessing["input_size"])
    side = train_base_size(size) if train and view > 0 else size
    images = _BaseImages(base_ds, [positions[i] for i in indices.tolist()], side)
    return normalized_views(
        images,
        indices,
        view=view,
        seed=seed,
        base=side,
        batch_size=batch_size,
        preprocessing=preprocessing,
        kernels=kernels,
        input_format=input_format,
        num_workers=num_workers,
        mirror=False,
    )
