"""Image-classification datasets: ``synthetic-shapes``, ``image-folder`` and ``csv``
(and, registered from :mod:`.digits`, the digit datasets ``mnist-5k`` and ``uci-digits``).

Each dataset is a :class:`tlengine.data.DatasetSpec`: a pydantic model that validates
``data.args`` in the pipeline file, and ``build(args, root)`` that returns
:class:`ImageSamples` - a list of ``(image, label index)`` plus the class names. Files
are *not* opened by ``build`` (that would be slow for big folders); they are listed and
checked to exist, :func:`verify_images` checks they decode, and
:class:`tlengine_plugins.image_classification.transforms.ImageDataset` reads them
lazily during training.

Every path comes from the pipeline and is resolved inside the data root with
:func:`tlengine.data.resolve_under`, so a config (or a CSV row) cannot point outside it.

Pipeline examples::

    data: {dataset: synthetic-shapes, args: {classes: 6, per_class: 50}}
    data: {dataset: synthetic-shapes, args: {classes: 6, shift: {palette: inverted, blur: 1.5}}}
    data: {dataset: image-folder, root: data, args: {path: pets}}        # pets/<class>/<img>
    data: {dataset: image-folder, root: data, args: {path: flowers}}     # flowers/{train,val,test}/<class>/<img>
    data: {dataset: csv, root: data, args: {path: labels.csv, classes: [cat, dog]}}

This module imports no torch, so registering the datasets stays cheap.
"""

from __future__ import annotations

import csv
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
from PIL import Image, ImageFilter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tlengine.data import DatasetSpec, resolve_under
from tlengine.data.synthetic_shapes import SHAPES, generate
from tlengine.errors import DataError

__all__ = [
    "TASK",
    "IMAGE_EXTENSIONS",
    "SPLIT_FOLDERS",
    "ImageSamples",
    "ImageItem",
    "SyntheticShapesArgs",
    "ImageShiftArgs",
    "apply_shift",
    "ImageFolderArgs",
    "CsvArgs",
    "build_synthetic_shapes",
    "build_image_folder",
    "build_csv",
    "SYNTHETIC_SHAPES",
    "IMAGE_FOLDER",
    "CSV",
    "open_image",
    "verify_images",
    "register_datasets",
]

TASK = "image-classification"

#: File extensions ``image-folder`` picks up by default (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

#: Subfolders of an ``image-folder`` that hold a predefined split (``val`` is optional).
SPLIT_FOLDERS: tuple[str, ...] = ("train", "val", "test")

#: A file to read lazily, or an image already in memory.
ImageItem = Union[Path, Image.Image]


@dataclass
class ImageSamples:
    """What every image-classification dataset builds.

    items: ``(image, label)`` pairs; ``image`` is a file path (read lazily) or an
        in-memory PIL image; ``label`` indexes ``classes``.
    classes: class names, in label order.
    source: one line for logs and reports, e.g.
        ``"ImageFolder /data/pets (3 classes, 120 images)"``.
    eval_crop_pct: if set, the crop fraction evaluation should use instead of the
        backbone's (``synthetic-shapes`` sets 1.0: its shapes can touch the border, so a
        centre crop could cut them). See ``transforms.build_transforms``.
    splits: a split the dataset ships with, as indices into ``items``: keys ``train``
        and ``test``, and ``val`` if the dataset has one (without it, validation comes
        out of ``train``). None: the whole set is split at random. See
        :func:`tlengine_plugins.image_classification.splits.split_samples`.
    """

    items: list[tuple[ImageItem, int]]
    classes: list[str]
    source: str
    eval_crop_pct: float | None = None
    splits: dict[str, list[int]] | None = None

    @property
    def labels(self) -> list[int]:
        """Label of every item, in item order (what ``split_indices`` takes)."""
        return [label for _, label in self.items]

    def __len__(self) -> int:
        return len(self.items)


# --------------------------------------------------------------------------- helpers
def _plural(n: int, word: str) -> str:
    """``_plural(1, "image")`` -> "1 image"; ``_plural(3, "class")`` -> "3 classes"."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}{'es' if word.endswith('s') else 's'}"


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


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file; DataError naming the file if that fails."""
    try:
        with Image.open(path) as im:
            im.load()
            return im
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        raise DataError(f"image {path} is not a readable image ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def verify_images(samples: ImageSamples, *, limit: int | None = None) -> None:
    """Check that the file items of ``samples`` (the first ``limit``) are readable images.

    Runs PIL's structural ``verify()`` and then decodes the image (JPEGs at reduced
    scale, which still reads the whole stream), so truncated or corrupt files fail here
    rather than in the middle of training. In-memory images are skipped.

    Raises DataError: ``image <path> is not a readable image (<reason>)``.
    """
    files = [item for item, _ in samples.items if not isinstance(item, Image.Image)]
    for path in files if limit is None else files[:limit]:
        try:
            with Image.open(path) as im:
                im.verify()
            # verify() leaves the image unusable and does not decode pixels: reopen.
            with Image.open(path) as im:
                im.draft("RGB", (64, 64))  # JPEG: decode at 1/2-1/8 scale, much faster
                im.load()
        except FileNotFoundError:
            raise DataError(f"image {path} does not exist") from None
        except Exception as exc:
            raise DataError(f"image {path} is not a readable image ({_reason(exc)})") from None


# --------------------------------------------------------------------------- domain shift
class ImageShiftArgs(BaseModel):
    """A domain shift painted over every image (``synthetic-shapes``' ``shift`` argument).

    Applied in this order: palette, hue, texture, blur, noise. A field at its default
    changes nothing, and all of them at their defaults give the unshifted image.
    """

    model_config = ConfigDict(extra="forbid")

    palette: Literal["default", "inverted", "pastel", "grayscale"] = Field(
        "default",
        description="default: unchanged; inverted: 255 - every channel; pastel: 45% mixed towards white; "
        "grayscale: luminance in all three channels",
    )
    hue: float = Field(
        0.0, ge=-180.0, le=180.0, description="rotate every colour's hue by this many degrees (HSV; greys stay grey)"
    )
    texture: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="strength of a random stripe or checker texture added to the image (1 = +-50% of the "
        "pixel range); its kind, frequency, angle and phase are drawn per image",
    )
    blur: float = Field(0.0, ge=0.0, le=32.0, description="Gaussian blur radius in pixels")
    noise: float = Field(
        0.0, ge=0.0, le=1.0, description="standard deviation of additive Gaussian pixel noise, fraction of 0-255"
    )

    def is_identity(self) -> bool:
        """True if applying this shift changes nothing."""
        return self.palette == "default" and not (self.hue or self.texture or self.blur or self.noise)

    def describe(self) -> str:
        """E.g. ``"inverted palette, hue 90, blur 1.5px"`` (empty for the identity)."""
        parts = [f"{self.palette} palette"] if self.palette != "default" else []
        parts += [f"hue {self.hue:g}"] if self.hue else []
        parts += [f"texture {self.texture:g}"] if self.texture else []
        parts += [f"blur {self.blur:g}px"] if self.blur else []
        parts += [f"noise {self.noise:g}"] if self.noise else []
        return ", ".join(parts)


def _rotate_hue(arr: np.ndarray, degrees: float) -> np.ndarray:
    """Float RGB ``[..., 3]`` (0-255) with every hue turned by ``degrees`` in HSV space:
    saturation and value, hence each pixel's largest and smallest channel, are kept."""
    rgb = arr / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(-1)
    delta = v - rgb.min(-1)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1.0), 0.0)
    d = np.where(delta > 0, delta, 1.0)
    rc, gc, bc = (v - r) / d, (v - g) / d, (v - b) / d
    h = np.where(r == v, bc - gc, np.where(g == v, 2.0 + rc - bc, 4.0 + gc - rc))
    h = (h / 6.0 + degrees / 360.0) % 1.0
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    out = np.select(
        [i[..., None] == k for k in range(6)],
        [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))],
    )
    return (out * 255.0).astype(np.float32)


def _texture_field(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A [height, width] float32 stripe or checker pattern in [-1, 1] drawn from ``rng``."""
    kind = int(rng.integers(2))  # 0 stripes, 1 checker
    cycles = rng.uniform(3.0, 8.0)  # periods across the image
    phi = rng.uniform(0.0, math.pi)
    phase = rng.uniform(0.0, 2 * math.pi)
    y, x = np.meshgrid(
        (np.arange(height, dtype=np.float32) + 0.5) / height,
        (np.arange(width, dtype=np.float32) + 0.5) / width,
        indexing="ij",
    )
    u = x * math.cos(phi) + y * math.sin(phi)
    if kind == 0:
        return np.sin(2 * math.pi * cycles * u + phase).astype(np.float32)
    v = -x * math.sin(phi) + y * math.cos(phi)
    # tanh of a product of sines: a checkerboard with soft edges.
    return np.tanh(4 * np.sin(math.pi * cycles * u + phase) * np.sin(math.pi * cycles * v)).astype(np.float32)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)


def apply_shift(image: Image.Image, shift: ImageShiftArgs, rng: np.random.Generator) -> Image.Image:
    """``image`` (any mode; the result is RGB) with ``shift`` applied; randomness from ``rng``.

    The identity shift returns ``image`` itself. The texture's parameters are drawn whether
    or not ``texture`` is on, so the noise of an image does not depend on it.
    """
    if shift.is_identity():
        return image
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    if shift.palette == "inverted":
        arr = 255.0 - arr
    elif shift.palette == "pastel":
        arr = 0.55 * arr + 0.45 * 255.0
    elif shift.palette == "grayscale":
        lum = arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        arr = np.repeat(lum[..., None], 3, axis=2)
    if shift.hue:
        arr = _rotate_hue(arr, shift.hue)
    field = _texture_field(arr.shape[0], arr.shape[1], rng)
    if shift.texture:
        arr = arr + (127.5 * shift.texture) * field[..., None]
    out = Image.fromarray(_to_uint8(arr), mode="RGB")
    if shift.blur:
        out = out.filter(ImageFilter.GaussianBlur(radius=shift.blur))
    if shift.noise:
        noisy = np.asarray(out, dtype=np.float32) + rng.normal(0.0, 255.0 * shift.noise, (*arr.shape[:2], 3))
        out = Image.fromarray(_to_uint8(noisy), mode="RGB")
    return out


def _shift_rng(seed: int, shape: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``shape``'s shift: like the shapes themselves, it
    depends only on (seed, shape name, index), never on which other shapes or how many."""
    s = seed % 2**64
    return np.random.default_rng([s & 0xFFFFFFFF, s >> 32, zlib.crc32(shape.encode("utf-8")), index, 0x5348_4654])


# --------------------------------------------------------------------------- synthetic-shapes
class SyntheticShapesArgs(BaseModel):
    """Arguments of the ``synthetic-shapes`` dataset (generated in memory, no files)."""

    model_config = ConfigDict(extra="forbid")

    shapes: list[str] | None = Field(
        None, description=f"shape names, one class each (default: the first 4 of {', '.join(SHAPES)})"
    )
    classes: int | None = Field(None, ge=1, le=len(SHAPES), description="alternative to shapes: use the first N shapes")
    per_class: int = Field(40, ge=1, description="images generated per class")
    size: int = Field(64, ge=16, le=512, description="image side in pixels")
    seed: int = Field(0, description="generator seed; same seed -> same images")
    # Style switches (defaults: the full difficulty). They only change what is painted, so
    # the same seed gives the same shapes, colours and placement in every style.
    background: Literal["textured", "plain"] = Field(
        "textured", description="textured: two colours mixed by a random texture; plain: one flat colour"
    )
    distractors: bool = Field(True, description="draw 0-3 soft blobs behind the shape")
    noise: float = Field(
        8.0, ge=0.0, le=255.0, description="largest pixel-noise standard deviation (0-255 scale); 0 = none"
    )
    shift: ImageShiftArgs | None = Field(
        None,
        description="a domain shift applied after generation: palette, hue, texture, blur, noise "
        "(default: none, the images are exactly the unshifted ones)",
    )

    @field_validator("shapes")
    @classmethod
    def _known_shapes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one shape (or be omitted)")
        unknown = [s for s in v if s not in SHAPES]
        if unknown:
            raise ValueError(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
        return _check_class_names(v)

    @model_validator(mode="after")
    def _one_of(self) -> "SyntheticShapesArgs":
        if self.shapes is not None and self.classes is not None:
            raise ValueError("give either shapes (names) or classes (a count), not both")
        return self

    def shape_names(self) -> list[str]:
        """The shapes to generate, in label order."""
        if self.shapes is not None:
            return list(self.shapes)
        return list(SHAPES[: self.classes or 4])


def build_synthetic_shapes(args: SyntheticShapesArgs, root: Path) -> ImageSamples:
    """Generate the images in memory (``root`` is unused: nothing is read)."""
    names = args.shape_names()
    items: list[tuple[ImageItem, int]] = list(
        generate(
            names,
            args.per_class,
            args.size,
            args.seed,
            background=args.background,
            distractors=args.distractors,
            noise=args.noise,
        )
    )
    style = [f"{args.background} background"] if args.background != "textured" else []
    style += [] if args.distractors else ["no distractors"]
    style += [f"noise {args.noise:g}"] if args.noise != SyntheticShapesArgs.model_fields["noise"].default else []
    if args.shift is not None and not args.shift.is_identity():
        shift = args.shift
        items = [
            (apply_shift(image, shift, _shift_rng(args.seed, names[label], k % args.per_class)), label)
            for k, (image, label) in enumerate(items)
        ]
        style += [f"shift [{shift.describe()}]"]
    return ImageSamples(
        items=items,
        classes=names,
        source=(
            f"synthetic-shapes ({_plural(len(names), 'class')} x {_plural(args.per_class, 'image')}, "
            f"{args.size}px, seed {args.seed}{''.join(', ' + x for x in style)})"
        ),
        eval_crop_pct=1.0,
    )


# --------------------------------------------------------------------------- image-folder
class ImageFolderArgs(BaseModel):
    """Arguments of the ``image-folder`` dataset: ``<path>/<class name>/<image files>``,
    or ``<path>/{train,val,test}/<class name>/<image files>`` for a predefined split."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="folder with one subfolder per class, relative to data.root")
    extensions: list[str] = Field(
        default_factory=lambda: list(IMAGE_EXTENSIONS),
        description="image file extensions to include (case-insensitive)",
    )
    classes: list[str] | None = Field(
        None, description="use only these class subfolders, in this label order (default: all, sorted)"
    )

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, v: list[str]) -> list[str]:
        out = []
        for ext in v:
            ext = ext.strip().lower()
            if not ext or ext == ".":
                raise ValueError("extensions must not be blank")
            out.append(ext if ext.startswith(".") else "." + ext)
        if not out:
            raise ValueError("must list at least one extension")
        return out

    @field_validator("classes")
    @classmethod
    def _class_names(cls, v: list[str] | None) -> list[str] | None:
        return _check_class_names(v)


def _list_images(folder: Path, extensions: list[str]) -> list[Path]:
    """Image files anywhere under ``folder`` (hidden files and folders skipped), sorted."""
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel):
            continue
        if p.suffix.lower() in extensions and p.is_file():
            found.append(p)
    return sorted(found)


def _subdirs(folder: Path) -> list[str]:
    """Names of the non-hidden subfolders of ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(folder: Path, classes: list[str], extensions: list[str]) -> dict[str, list[Path]]:
    """Image files of each class folder ``folder/<class>`` (a class without a folder gets none)."""
    return {c: _list_images(folder / c, extensions) if (folder / c).is_dir() else [] for c in classes}


def _check_class_files(folder: Path, per_class: dict[str, list[Path]], extensions: list[str], root: Path) -> None:
    """DataError for a class folder without images, or a file that leads out of ``root``."""
    for c, files in per_class.items():
        if not files and (folder / c).is_dir():
            raise DataError(f"class folder {folder / c} has no images with extensions {', '.join(extensions)}")
        for f in files:  # a symlink inside the folder may still lead out of the root
            resolve_under(root, f, what="image")


def _is_split_layout(subdirs: list[str]) -> bool:
    """``train/`` (and only split folders) at the top: a predefined split, not classes."""
    return "train" in subdirs and set(subdirs) <= set(SPLIT_FOLDERS)


def build_image_folder(args: ImageFolderArgs, root: Path) -> ImageSamples:
    """List ``path/<class>/<image>`` files; every problem is a DataError naming the path.

    A folder whose subfolders are ``train/``, ``test/`` and optionally ``val/``, each
    with class subfolders, keeps that split (:attr:`ImageSamples.splits`).
    """
    folder = resolve_under(root, args.path, what="image folder")
    if not folder.exists():
        raise DataError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"image folder {folder} is not a directory")
    subdirs = _subdirs(folder)
    exts = ", ".join(args.extensions)
    if not subdirs:
        loose = len([p for p in folder.iterdir() if p.suffix.lower() in args.extensions])
        hint = f"; it holds {_plural(loose, 'image')} directly, move them into class folders" if loose else ""
        raise DataError(f"image folder {folder} has no class subfolders (expected {folder}/<class>/<image>){hint}")
    if _is_split_layout(subdirs):
        return _build_split_image_folder(args, root, folder, subdirs)
    if args.classes is not None:
        missing = [c for c in args.classes if c not in subdirs]
        if missing:
            raise DataError(
                f"class {', '.join(repr(c) for c in missing)} listed in classes has no folder in "
                f"{folder}; found: {', '.join(subdirs)}"
            )
        classes = list(args.classes)
    else:
        classes = subdirs

    per_class = _class_files(folder, classes, args.extensions)
    if not any(per_class.values()):
        raise DataError(f"image folder {folder} contains no images with extensions {exts}")
    _check_class_files(folder, per_class, args.extensions, root)

    items: list[tuple[ImageItem, int]] = [(f, label) for label, c in enumerate(classes) for f in per_class[c]]
    return ImageSamples(
        items=items,
        classes=classes,
        source=f"ImageFolder {folder} ({_plural(len(classes), 'class')}, {_plural(len(items), 'image')})",
    )


def _build_split_image_folder(args: ImageFolderArgs, root: Path, folder: Path, subdirs: list[str]) -> ImageSamples:
    """``folder/{train,val,test}/<class>/<image>``: the classes are the union over the splits."""
    if "test" not in subdirs:
        raise DataError(
            f"image folder {folder} has {'/, '.join(subdirs)}/ but no test/ subfolder; add "
            f"{folder}/test/<class>/<image>, or put the class folders directly in {folder} for a random split"
        )
    splits = [s for s in SPLIT_FOLDERS if s in subdirs]
    found: dict[str, list[str]] = {}
    for split in splits:
        found[split] = _subdirs(folder / split)
        if not found[split]:
            raise DataError(
                f"split folder {folder / split} has no class subfolders (expected {folder / split}/<class>/<image>)"
            )
    union = sorted(set().union(*found.values()))
    if args.classes is not None:
        missing = [c for c in args.classes if c not in found["train"]]
        if missing:
            raise DataError(
                f"class {', '.join(repr(c) for c in missing)} listed in classes has no folder in "
                f"{folder / 'train'}; found: {', '.join(found['train'])}"
            )
        classes = list(args.classes)
    else:
        classes = union
    for split in splits[1:]:
        orphans = [c for c in classes if c in found[split] and c not in found["train"]]
        if orphans:
            raise DataError(
                f"class {', '.join(repr(c) for c in orphans)} has a folder in {folder / split} but none in "
                f"{folder / 'train'}; a class needs training images"
            )

    items: list[tuple[ImageItem, int]] = []
    index: dict[str, list[int]] = {}
    for split in splits:
        per_class = _class_files(folder / split, classes, args.extensions)
        _check_class_files(folder / split, per_class, args.extensions, root)
        start = len(items)
        items += [(f, label) for label, c in enumerate(classes) for f in per_class[c]]
        index[split] = list(range(start, len(items)))
    if not items:
        raise DataError(f"image folder {folder} contains no images with extensions {', '.join(args.extensions)}")
    counts = ", ".join(f"{len(index[s])} {s}" for s in splits)
    return ImageSamples(
        items=items,
        classes=classes,
        splits=index,
        source=(
            f"ImageFolder {folder} ({'/'.join(splits)} folders, {_plural(len(classes), 'class')}, "
            f"{_plural(len(items), 'image')}: {counts})"
        ),
    )


# --------------------------------------------------------------------------- csv
class CsvArgs(BaseModel):
    """Arguments of the ``csv`` dataset: a CSV file with a header and path/label columns."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="CSV file relative to data.root; first row is the header")
    image_root: str | None = Field(
        None,
        description="folder the image paths in the CSV are relative to, relative to data.root "
        "(default: the CSV's folder)",
    )
    classes: list[str] | None = Field(
        None,
        description="allowed labels in label order; a row with another label is an error "
        "(default: every label found, sorted)",
    )
    path_column: str = Field("path", description="column holding the image path")
    label_column: str = Field("label", description="column holding the class label")

    @field_validator("classes")
    @classmethod
    def _class_names(cls, v: list[str] | None) -> list[str] | None:
        return _check_class_names(v)


def _label_order(labels: set[str]) -> list[str]:
    """Sorted labels; numerically if they are all integers (so '10' comes after '9')."""
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def build_csv(args: CsvArgs, root: Path) -> ImageSamples:
    """Read ``path,label`` rows; errors name the CSV file and its line number."""
    csv_path = resolve_under(root, args.path, what="csv file")
    if not csv_path.is_file():
        what = "is not a file" if csv_path.exists() else "does not exist"
        raise DataError(f"csv file {csv_path} {what}")
    if args.image_root is not None:
        image_root = resolve_under(root, args.image_root, what="image_root")
        if not image_root.is_dir():
            raise DataError(f"image_root {image_root} is not an existing directory")
    else:
        image_root = csv_path.parent
    root = Path(root).resolve()

    rows: list[tuple[int, str, str]] = []  # (line number, image path, label)
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames
            if not header:
                raise DataError(f"csv file {csv_path} has no rows (not even a header)")
            for col, key in ((args.path_column, "path_column"), (args.label_column, "label_column")):
                if col not in header:
                    raise DataError(
                        f"csv file {csv_path} has no column '{col}' (its header has: "
                        f"{', '.join(header)}); set {key} to the right column name"
                    )
            for row in reader:
                line = reader.line_num  # physical line of this row's end (1 = header)
                path_value = (row.get(args.path_column) or "").strip()
                label = (row.get(args.label_column) or "").strip()
                if not path_value or not label:
                    col = args.path_column if not path_value else args.label_column
                    raise DataError(f"csv file {csv_path} line {line}: column '{col}' is empty")
                rows.append((line, path_value, label))
    except UnicodeDecodeError as exc:
        raise DataError(f"csv file {csv_path} is not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"csv file {csv_path} is not valid CSV ({exc})") from None
    if not rows:
        raise DataError(f"csv file {csv_path} has no rows (only a header)")

    if args.classes is not None:
        classes = list(args.classes)
    else:
        classes = _label_order({label for _, _, label in rows})
    index = {c: i for i, c in enumerate(classes)}

    items: list[tuple[ImageItem, int]] = []
    for line, path_value, label in rows:
        if label not in index:
            raise DataError(
                f"csv file {csv_path} line {line}: label '{label}' is not one of the classes ({', '.join(classes)})"
            )
        try:
            image = resolve_under(root, image_root / path_value, what="image")
        except DataError:
            raise DataError(
                f"csv file {csv_path} line {line}: image path '{path_value}' is outside the data root {root}"
            ) from None
        if not image.is_file():
            raise DataError(f"csv file {csv_path} line {line}: image file {image} does not exist")
        items.append((image, index[label]))
    return ImageSamples(
        items=items,
        classes=classes,
        source=f"CSV {csv_path} ({_plural(len(classes), 'class')}, {_plural(len(items), 'image')})",
    )


# --------------------------------------------------------------------------- registration
SYNTHETIC_SHAPES = DatasetSpec(
    name="synthetic-shapes",
    task=TASK,
    args=SyntheticShapesArgs,
    build=build_synthetic_shapes,
    description="generated coloured shapes on textured backgrounds; class = shape (no files needed)",
)
IMAGE_FOLDER = DatasetSpec(
    name="image-folder",
    task=TASK,
    args=ImageFolderArgs,
    build=build_image_folder,
    description="a folder with one subfolder of images per class: <path>/<class>/<image>",
)
CSV = DatasetSpec(
    name="csv",
    task=TASK,
    args=CsvArgs,
    build=build_csv,
    description="a CSV file with an image path column and a label column",
)


def register_datasets(registry: Any) -> None:
    """Add the image datasets to a dataset :class:`tlengine.registry.Registry`: the three
    above and the digits of :mod:`.digits` (``mnist-5k``, ``uci-digits``)."""
    from .digits import MNIST_5K, UCI_DIGITS  # digits imports this module: not at the top

    for spec in (SYNTHETIC_SHAPES, IMAGE_FOLDER, CSV, MNIST_5K, UCI_DIGITS):
        registry.add(spec.name, spec, description=spec.description)
