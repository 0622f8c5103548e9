"""Deterministic synthetic detection scenes: several labelled shapes on a textured background.

Each scene is a ``size`` x ``size`` RGB image with a few shapes (the classes are shape names
of :mod:`tlengine.data.synthetic_shapes`) at varied scales, positions and rotations, drawn
over a textured background and some *clutter* (soft blobs and thin lines that are not
objects). Objects are painted one after the other, so a later object may cover part of an
earlier one; an object whose visible part falls below :data:`MIN_VISIBILITY` of its own
area is still painted but its box is *not* emitted (it is too hidden to be a fair target).

Boxes are ``(x1, y1, x2, y2)`` in absolute pixels (pixel edges: a box around the single
pixel (0, 0) is ``(0, 0, 1, 1)``), tight to the object's *visible* mask (the mask is the
anti-aliased shape coverage thresholded at 0.5, minus every later object's mask)::

    >>> from tlengine_plugins.object_detection.synthetic import generate_scenes
    >>> scenes = generate_scenes(classes=["circle", "square", "star"], images=4, size=128, seed=0)
    >>> image, boxes, labels = scenes[0]     # PIL RGB 128x128, [(x1, y1, x2, y2), ...], [class index, ...]

Scene ``i`` has its own random generator seeded by ``(seed, i)`` (and shares nothing with
other scenes), so the same arguments give byte-identical images and scene ``i`` does not
change when ``images`` grows. ``return_masks=True`` adds a fourth element per scene, a list
of :class:`PaintedObject` (every painted object, emitted or not, with its masks), for
debugging and tests; it draws no extra random numbers, so the images are the same.

The shape outlines, the background textures and the contrasting-colour picker are those of
:mod:`tlengine.data.synthetic_shapes` (imported from it, including its private helpers
``_draw_outline``, ``_blend_field``, ``_grid``, ``_shape_colour``, ``_check_style`` and
``_seed_words``), so both generators draw the same shapes.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tlengine.data.synthetic_shapes import (  # private helpers reused on purpose, see the module docstring
    SHAPES,
    _blend_field,
    _check_style,
    _draw_outline,
    _grid,
    _seed_words,
    _shape_colour,
)

__all__ = [
    "MIN_VISIBILITY",
    "PaintedObject",
    "SyntheticScenesArgs",
    "build_synthetic_scenes",
    "generate_scenes",
    "synthetic_scenes_spec",
]

#: An object whose visible fraction of its own mask is below this gets no box.
MIN_VISIBILITY = 0.4

# A stable stream key for scenes, so they never share random numbers with synthetic_shapes.
_SCENE_KEY = zlib.crc32(b"tlengine.object_detection.scenes")
# Proposals tried per scene for each wanted object (placement is rejection-sampled).
_TRIES_PER_OBJECT = 8
# Positions tried for a proposal that should *not* overlap earlier objects.
_POSITION_TRIES = 8

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class PaintedObject:
    """One painted object of a scene (``return_masks=True``), in painting order.

    mask: its full shape mask ([size, size] bool); visible: the part no later object covers;
    visibility: ``visible.sum() / mask.sum()``; box_index: its index in the scene's boxes
    and labels, or None when it was not emitted (visibility below :data:`MIN_VISIBILITY`).
    """

    shape: str
    label: int
    colour: tuple[float, float, float]
    mask: np.ndarray
    visible: np.ndarray
    visibility: float
    box_index: int | None

    @property
    def emitted(self) -> bool:
        return self.box_index is not None


def _check_args(
    classes: Sequence[str],
    images: int,
    size: int,
    objects: tuple[int, int],
    scale: tuple[float, float],
    occlusion: float,
    clutter: int,
    background: str,
    noise: float,
) -> None:
    if not classes:
        raise ValueError("classes must name at least one shape")
    unknown = [c for c in classes if c not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes are listed more than once: {', '.join(classes)}")
    if images < 0:
        raise ValueError(f"images must be >= 0, got {images}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    lo, hi = objects
    if not 0 <= lo <= hi:
        raise ValueError(f"objects must be (min, max) with 0 <= min <= max, got {objects}")
    smin, smax = scale
    if not 0 < smin <= smax <= 0.9:
        raise ValueError(f"scale must be (min, max) with 0 < min <= max <= 0.9, got {scale}")
    if not 0 <= occlusion <= 1:
        raise ValueError(f"occlusion must be in [0, 1], got {occlusion}")
    if clutter < 0:
        raise ValueError(f"clutter must be >= 0, got {clutter}")
    _check_style(background, noise)


def _background(size: int, rng: np.random.Generator, background: str) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """A [size, size, 3] float background and its two colours (as synthetic_shapes draws it)."""
    c1 = rng.uniform(0, 255, 3)
    c2 = np.clip(c1 + rng.uniform(-100, 100, 3), 0, 255)
    kind = ("noise", "stripes", "checker", "gradient")[int(rng.integers(4))]
    t = _blend_field(kind, size, rng)[..., None]
    if background == "textured":
        return c1 + t * (c2 - c1), (c1, c2)
    return np.broadcast_to(c1, (size, size, 3)).astype(np.float64), (c1, c2)


def _paint_clutter(img: np.ndarray, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distractors behind the objects: soft blobs or thin straight lines."""
    y, x = _grid(size)
    for _ in range(count):
        colour = rng.uniform(0, 255, 3)
        if rng.random() < 0.5:  # soft blob: blurry, so it never looks like a shape
            by, bx = rng.uniform(0, 1, 2)
            sigma = rng.uniform(0.03, 0.1)
            alpha = 0.8 * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * sigma**2))[..., None]
        else:  # thin line, anti-aliased by drawing at 4x and box-filtering down
            ss = 4
            layer = Image.new("L", (size * ss, size * ss), 0)
            p = rng.uniform(0, size * ss, 4)
            width = int(rng.integers(1, 4)) * ss
            ImageDraw.Draw(layer).line([(p[0], p[1]), (p[2], p[3])], fill=255, width=width)
            layer = layer.resize((size, size), Image.Resampling.BOX)
            alpha = 0.9 * np.asarray(layer, dtype=np.float32)[..., None] / 255.0
        img = img * (1 - alpha) + colour * alpha
    return img


def _shape_alpha(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage [size, size] float32 in [0, 1] of one shape (drawn at 2-4x, box-filtered)."""
    ss = 4 if size <= 128 else 2
    big = Image.new("L", (size * ss, size * ss), 0)
    _draw_outline(ImageDraw.Draw(big), shape, cx * ss, cy * ss, r * ss, angle)
    return np.asarray(big.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _visibilities(masks: list[np.ndarray]) -> list[tuple[np.ndarray, float]]:
    """Visible mask and visibility of every mask when later masks cover earlier ones."""
    covered = np.zeros_like(masks[0]) if masks else None
    out: list[tuple[np.ndarray, float]] = []
    for m in reversed(masks):
        vis = m & ~covered
        out.append((vis, float(vis.sum()) / max(int(m.sum()), 1)))
        covered = covered | m
    return out[::-1]


def _tight_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _render_scene(
    rng: np.random.Generator,
    *,
    classes: Sequence[str],
    size: int,
    objects: tuple[int, int],
    scale: tuple[float, float],
    occlusion: float,
    clutter: int,
    background: str,
    noise: float,
) -> tuple[Image.Image, list[Box], list[int], list[PaintedObject]]:
    img, bg_colours = _background(size, rng, background)
    img = _paint_clutter(img, size, clutter, rng)
    wanted = int(rng.integers(objects[0], objects[1] + 1))

    # Place objects one by one. A proposal is kept if its own mask is not empty and it hides
    # (pushes below MIN_VISIBILITY) at most one earlier, still-emitted object: then the count
    # of emitted objects never drops, reaches `wanted` in most scenes, and never exceeds it.
    placed: list[dict] = []
    masks: list[np.ndarray] = []
    emitted = 0
    for _ in range(_TRIES_PER_OBJECT * wanted):
        if emitted >= wanted:
            break
        label = int(rng.integers(len(classes)))
        r = float(rng.uniform(*scale)) * size / 2  # object side ~ 2 r
        angle = float(rng.uniform(0, 2 * math.pi))
        lo, hi = r + 1.0, size - r - 1.0
        overlap = bool(masks) and rng.random() < occlusion
        if overlap:  # centre near an earlier object, so the new one covers part of it
            other = placed[int(rng.integers(len(placed)))]
            d = rng.uniform(0.2, 1.0) * (other["r"] + r)
            phi = rng.uniform(0, 2 * math.pi)
            cx = float(np.clip(other["cx"] + d * math.cos(phi), lo, hi))
            cy = float(np.clip(other["cy"] + d * math.sin(phi), lo, hi))
            alpha = _shape_alpha(classes[label], size, cx, cy, r, angle)
        else:  # free position: best of a few random positions by overlap with what is there
            union = np.logical_or.reduce(masks) if masks else np.zeros((size, size), bool)
            best = None
            for _ in range(_POSITION_TRIES):
                cx, cy = (float(v) for v in rng.uniform(lo, hi, 2))
                a = _shape_alpha(classes[label], size, cx, cy, r, angle)
                hit = int((union & (a >= 0.5)).sum())
                if best is None or hit < best[0]:
                    best = (hit, cx, cy, a)
                if hit == 0:
                    break
            _, cx, cy, alpha = best  # type: ignore[misc]
        mask = alpha >= 0.5
        if not mask.any():
            continue
        before = [v >= MIN_VISIBILITY for _, v in _visibilities(masks)]
        after = [v >= MIN_VISIBILITY for _, v in _visibilities([*masks, mask])]
        if sum(before) - sum(after[:-1]) > 1:  # the new object (on top) is fully visible itself
            continue
        colour = _shape_colour(bg_colours, rng)
        shade = np.clip(colour + rng.uniform(-40, 40, 3), 0, 255)
        placed.append({"label": label, "cx": cx, "cy": cy, "r": r, "alpha": alpha, "colour": colour, "shade": shade})
        masks.append(mask)
        emitted = sum(after)

    # Paint in order (later objects over earlier ones), each with a faint gradient of its own.
    for p in placed:
        fill = p["colour"] + _blend_field("gradient", size, rng)[..., None] * (p["shade"] - p["colour"])
        a = p["alpha"][..., None]
        img = img * (1 - a) + fill * a
    img = img + rng.normal(0, rng.uniform(0, noise), img.shape)
    image = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), mode="RGB")

    boxes: list[Box] = []
    labels: list[int] = []
    details: list[PaintedObject] = []
    for p, mask, (vis, visibility) in zip(placed, masks, _visibilities(masks)):
        index = None
        if visibility >= MIN_VISIBILITY:
            index = len(boxes)
            boxes.append(_tight_box(vis))
            labels.append(p["label"])
        details.append(
            PaintedObject(
                shape=classes[p["label"]],
                label=p["label"],
                colour=tuple(float(c) for c in p["colour"]),  # type: ignore[arg-type]
                mask=mask,
                visible=vis,
                visibility=visibility,
                box_index=index,
            )
        )
    return image, boxes, labels, details


def generate_scenes(
    *,
    classes: Sequence[str],
    images: int,
    size: int = 256,
    seed: int = 0,
    objects: tuple[int, int] = (1, 5),
    scale: tuple[float, float] = (0.08, 0.35),
    occlusion: float = 0.3,
    clutter: int = 3,
    background: str = "textured",
    noise: float = 6.0,
    return_masks: bool = False,
) -> list:
    """``images`` scenes as ``(PIL RGB image, boxes, labels)`` (plus ``painted`` with ``return_masks``).

    classes: shape names (see ``synthetic_shapes.SHAPES``); a label is an index into it.
    objects: (min, max) number of *emitted* objects per scene, drawn uniformly. It is never
        exceeded; fewer than min happen only when the shapes cannot be placed (very large
        ``scale`` with many objects).
    scale: (min, max) object size as a fraction of the image side (twice the circumradius).
    occlusion: probability that an object is placed overlapping an earlier one (otherwise
        it goes where it overlaps least); overlapped objects may lose their box, see above.
    clutter: number of distractor blobs / lines drawn behind the objects.
    background: "textured" or "plain"; noise: largest pixel-noise std (0-255), 0 = none.
    """
    objects = (int(objects[0]), int(objects[1]))
    scale = (float(scale[0]), float(scale[1]))
    _check_args(classes, images, size, objects, scale, occlusion, clutter, background, noise)
    out: list = []
    for i in range(images):
        rng = np.random.default_rng([*_seed_words(seed), _SCENE_KEY, i])
        image, boxes, labels, painted = _render_scene(
            rng,
            classes=classes,
            size=size,
            objects=objects,
            scale=scale,
            occlusion=occlusion,
            clutter=clutter,
            background=background,
            noise=noise,
        )
        out.append((image, boxes, labels, painted) if return_masks else (image, boxes, labels))
    return out


# ---------------------------------------------------------------------- as a dataset
class SyntheticScenesArgs(BaseModel):
    """``data.args`` of the ``synthetic-scenes`` dataset (see :func:`generate_scenes`)."""

    model_config = ConfigDict(extra="forbid")
    classes: list[str] = Field(default_factory=lambda: ["circle", "square", "triangle"], min_length=1)
    images: int = Field(200, ge=1, le=100_000, description="scenes to generate")
    size: int = Field(256, ge=32, le=2048, description="scene side in pixels")
    seed: int = Field(0, description="generator seed (independent of the run's seed)")
    objects: tuple[int, int] = (1, 5)
    scale: tuple[float, float] = (0.08, 0.35)
    occlusion: float = Field(0.3, ge=0.0, le=1.0)
    clutter: int = Field(3, ge=0)
    background: str = "textured"
    noise: float = Field(6.0, ge=0.0)

    @model_validator(mode="after")
    def _valid(self) -> "SyntheticScenesArgs":
        try:
            _check_args(
                self.classes, self.images, self.size, self.objects, self.scale,
                self.occlusion, self.clutter, self.background, self.noise,
            )  # fmt: skip
        except ValueError as err:
            raise ValueError(str(err)) from None
        return self


def build_synthetic_scenes(args: SyntheticScenesArgs, root: Path) -> Any:
    """Generate the scenes in memory as :class:`DetectionSamples` (``root`` is unused)."""
    from .datasets import DetectionItem, DetectionSamples

    scenes = generate_scenes(
        classes=args.classes,
        images=args.images,
        size=args.size,
        seed=args.seed,
        objects=args.objects,
        scale=args.scale,
        occlusion=args.occlusion,
        clutter=args.clutter,
        background=args.background,
        noise=args.noise,
    )
    items = [
        DetectionItem(image=image, boxes=list(boxes), labels=list(labels), width=args.size, height=args.size)
        for image, boxes, labels in scenes
    ]
    n_boxes = sum(len(i.boxes) for i in items)
    source = (
        f"synthetic scenes ({len(args.classes)} classes, {args.images} images of {args.size} px, "
        f"{n_boxes} boxes, seed {args.seed})"
    )
    return DetectionSamples(items=items, classes=list(args.classes), source=source)


def synthetic_scenes_spec() -> Any:
    """The ``synthetic-scenes`` :class:`tlengine.data.DatasetSpec`."""
    from tlengine.data import DatasetSpec

    return DatasetSpec(
        name="synthetic-scenes",
        task="object-detection",
        args=SyntheticScenesArgs,
        build=build_synthetic_scenes,
        description="generated scenes of several shapes per image with occlusion, scale variation and clutter",
    )
