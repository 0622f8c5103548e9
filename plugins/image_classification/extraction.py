"""Inputs for the feature cache: uint8 base images -> fused crop/mirror/normalise.

Each sample is decoded and resized once into a square uint8 base image ``[S,S,3]``; the
``normalize_images`` op then crops the model's ``input_size`` window, mirrors it and
normalises it into ``[B,3,input,input]`` in one pass. View 0 of every split is the eval
transform (resize to ``input_size / crop_pct``, centre crop, no mirror), which is also what
the naive loop trains on with ``augment: none``; training views >= 1 take a random crop
position and mirror flag in a larger base, fixed by (seed, sample, view) so a cache can be
rebuilt or resumed to the same contents.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tlengine.cache import fingerprint_items
from tlengine.execution import InputFormat
from tlengine.kernels import ops_for
from tlengine.training.seeding import derive_seed
from torch.utils.data import DataLoader, Dataset, Subset

from .datasets import ImageItem, open_image
from .transforms import DEFAULT_CROP_PCT, to_rgb

#: training views are cut from a base this much larger than the input (ImageNet's 256/224)
TRAIN_BASE_CROP_PCT = 0.875
AUGMENTATION = (
    "view 0: the eval transform; views >= 1: random crop of input_size from a base of "
    "input_size/min(crop_pct, 0.875), random mirror"
)


def base_size(preprocessing: dict[str, Any], *, train: bool) -> int:
    """Side S of the square uint8 base image the crop windows are cut from: the eval
    transform's resize, or for random training views (``train``) at least input/0.875, so
    there is room to move the crop."""
    size = int(preprocessing["input_size"])
    crop_pct = float(preprocessing.get("crop_pct") or DEFAULT_CROP_PCT)
    if train:
        crop_pct = min(crop_pct, TRAIN_BASE_CROP_PCT)
    return max(size, math.floor(size / crop_pct))


def centre_offset(length: int, crop: int) -> int:
    """Where torchvision's CenterCrop starts a ``crop`` window in ``length`` pixels."""
    return int(round((length - crop) / 2.0))


class DecodedBases:
    """The uint8 base images decoded in this process, most recently used first, up to
    ``limit_bytes``: the training views >= 1 of a sample share one base size, so its file is
    decoded and resized once for all of them (and again only if it was evicted). Keyed by the
    item object's identity and the base geometry; an entry remembers its item, so a
    recycled ``id`` never returns another image's pixels."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self.entries: OrderedDict[tuple, tuple[Any, torch.Tensor]] = OrderedDict()
        self.bytes = 0
        self.decodes = 0  # how many bases were decoded (what the store saves is visible in tests)

    def get(self, key: tuple, item: Any) -> torch.Tensor | None:
        entry = self.entries.get(key)
        if entry is None or entry[0] is not item:
            return None
        self.entries.move_to_end(key)
        return entry[1]

    def put(self, key: tuple, item: Any, base: torch.Tensor) -> None:
        self.decodes += 1
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1].numel()
        if base.numel() > self.limit_bytes:
            return
        self.entries[key] = (item, base)
        self.bytes += base.numel()
        while self.bytes > self.limit_bytes:
            _, (_, evicted) = self.entries.popitem(last=False)
            self.bytes -= evicted.numel()


#: decoded bases kept per process (uint8: one byte per value); 512 MiB holds ~2,700 bases of 256 px
DECODED = DecodedBases(limit_bytes=512 * 2**20)


class BaseImages(Dataset):
    """``items[indices[i]]`` as uint8 ``[S,S,3]``.

    The shorter side is resized to S exactly as torchvision's ``Resize(S)`` does (the longer
    side truncated), and the S x S square is placed so that its centre ``crop`` x ``crop``
    window (view 0) is, pixel for pixel, ``CenterCrop(crop)`` of the whole resized image:
    view 0 then reproduces the eval transform for any aspect ratio.
    """

    def __init__(
        self, items: Sequence[tuple[ImageItem, int]], indices: Sequence[int], size: int, crop: int, interpolation: str
    ):
        self.items, self.indices, self.size, self.crop = items, list(indices), size, crop
        self.resample = {"nearest": Image.NEAREST, "bicubic": Image.BICUBIC}.get(interpolation, Image.BILINEAR)

    def __len__(self) -> int:
        return len(self.indices)

    def _square_start(self, length: int) -> int:
        start = centre_offset(length, self.crop) - centre_offset(self.size, self.crop)
        return min(max(start, 0), length - self.size)

    def __getitem__(self, i: int) -> torch.Tensor:
        item, _ = self.items[self.indices[i]]
        key = (id(item), self.size, self.crop, self.resample)
        if not isinstance(item, Image.Image):  # a file: a rewritten one is decoded again
            st = Path(item).stat()
            key += (st.st_mtime_ns, st.st_size)
        cached = DECODED.get(key, item)
        if cached is not None:
            return cached
        base = self._decode(item)
        DECODED.put(key, item, base)
        return base

    def _decode(self, item: ImageItem | Image.Image) -> torch.Tensor:
        image = to_rgb(item if isinstance(item, Image.Image) else open_image(Path(item)))
        w, h = image.size
        if w <= h:
            nw, nh = self.size, int(self.size * h / w)
        else:
            nw, nh = int(self.size * w / h), self.size
        image = image.resize((nw, nh), self.resample, reducing_gap=None)
        left, top = self._square_start(nw), self._square_start(nh)
        image = image.crop((left, top, left + self.size, top + self.size))
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())


def unwrap(dataset: Dataset) -> tuple[Any, list[int]]:
    """(ImageDataset, indices into it) for a Subset of an ImageDataset."""
    if isinstance(dataset, Subset):
        return dataset.dataset, list(dataset.indices)
    return dataset, list(range(len(dataset)))


def targets(dataset: Dataset) -> torch.Tensor:
    base, indices = unwrap(dataset)
    labels = base.labels
    return torch.tensor([labels[i] for i in indices], dtype=torch.int64)


def fingerprint(dataset: Dataset) -> str:
    """Changes when any sample's file (path, size, mtime), in-memory pixels or label change."""
    base, indices = unwrap(dataset)

    def items() -> Iterator[bytes | str]:
        for i in indices:
            item, label = base.items[i]
            if isinstance(item, Image.Image):
                yield f"image:{item.mode}:{item.size}"
                yield item.tobytes()
            else:
                st = Path(item).stat()
                yield f"file:{item}:{st.st_size}:{st.st_mtime_ns}"
            yield f"label:{label}"

    return fingerprint_items(items())


def view_params(
    samples: torch.Tensor, view: int, seed: int, base: int, size: int, *, mirror: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets int64 [B,2], mirror flags bool [B]) of ``view`` for each sample index; with
    ``mirror`` False no view is mirrored (the offsets are the same either way)."""
    n = samples.numel()
    if view == 0:
        centre = centre_offset(base, size)
        return torch.full((n, 2), centre, dtype=torch.int64), torch.zeros(n, dtype=torch.bool)
    offsets = torch.empty((n, 2), dtype=torch.int64)
    flips = torch.empty(n, dtype=torch.bool)
    for j, s in enumerate(samples.tolist()):
        g = torch.Generator().manual_seed(derive_seed(seed, "view", s, view))
        offsets[j] = torch.randint(0, base - size + 1, (2,), generator=g)
        flips[j] = bool(torch.randint(0, 2, (1,), generator=g)) and mirror
    return offsets, flips


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
    """Normalised ``[B,3,input,input]`` batches of the samples ``indices``, written by the
    fused op directly in the dtype and memory format of ``input_format`` (default float32,
    contiguous). ``num_workers`` processes decode and resize the base images."""
    base_ds, positions = unwrap(dataset)
    size = int(preprocessing["input_size"])
    base = base_size(preprocessing, train=train and view > 0)  # view 0 = the eval transform, in every split
    chosen = [positions[i] for i in indices.tolist()]
    images = BaseImages(base_ds.items, chosen, base, size, str(preprocessing.get("interpolation", "bilinear")))
    return normalized_views(
        images,
        indices,
        view=view,
        seed=seed,
        base=base,
        batch_size=batch_size,
        preprocessing=preprocessing,
        kernels=kernels,
        input_format=input_format,
        num_workers=num_workers,
    )


def normalized_views(
    images: Dataset,
    indices: torch.Tensor,
    *,
    view: int,
    seed: int,
    base: int,
    batch_size: int,
    preprocessing: dict[str, Any],
    kernels: str,
    input_format: InputFormat | None = None,
    num_workers: int = 0,
    mirror: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(inputs [B,3,S,S], sample indices [B])`` of view ``view``: ``images[i]`` is the uint8
    base image ``[base,base,3]`` of sample ``indices[i]``; each batch is cut at the view's
    offsets (:func:`view_params`; mirrored only when ``mirror``) and normalised by the fused
    ``normalize_images`` op in ``input_format``'s dtype and memory format. Shared by every
    task whose cached inputs are crops of square base images."""
    fmt = input_format or InputFormat()
    size = int(preprocessing["input_size"])
    loader = DataLoader(
        images,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available() and num_workers > 0,
    )
    ops = ops_for(kernels)
    mean = [float(m) for m in preprocessing["mean"]]
    std = [float(s) for s in preprocessing["std"]]
    start = 0
    for batch in loader:
        sample_idx = indices[start : start + batch.shape[0]]
        start += batch.shape[0]
        offsets, flips = view_params(sample_idx, view, seed, base, size, mirror=mirror)
        out = ops.normalize_images(
            batch, offsets, flips, size, size, mean, std, fmt.dtype, channels_last=fmt.channels_last
        )
        yield out, sample_idx
