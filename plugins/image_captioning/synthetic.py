"""Deterministic synthetic captioned scenes: 1-3 coloured shapes with compositional captions.

Each scene is a ``size`` x ``size`` RGB image with a few shapes (shape names of
:mod:`tlengine.data.synthetic_shapes`, drawn with its outlines), each with a named colour
(:data:`COLOURS`) and a size class, ``small`` or ``large``, on a neutral grey background
(plain or textured, so no background is mistaken for a named colour) with pixel noise.
Shapes never overlap, and no two shapes of a scene share the same (size, colour, shape)
description, so every description names exactly one object.

Every scene has ``captions_per_image`` reference captions (distinct whenever the scene
allows it), phrased differently: relations seen from either object ("a small red circle
above a large blue square" / "a large blue square below a small red circle"), size
synonyms (:data:`SIZE_WORDS`), relation synonyms (:data:`RELATION_WORDS`) and an optional
"there is" opening. A relation compares the two centres along the axis where they are
further apart (image ``y`` grows downwards): "left of", "right of", "above", "below";
positions are drawn so that this axis is clear (the other offset is at most
:data:`AXIS_RATIO` of it) whenever the scene allows it. A single shape is placed by the
third of the image it is in ("at the top left", "in the centre", ...). Shapes are always
named by their shape name and colour name, unchanged.

Scene ``i`` has its own random generators seeded by ``(seed, i)``: one for the image and
one for the phrasing, so the same arguments give byte-identical images and the same
captions, scene ``i`` does not change when ``images`` grows, and ``captions_per_image``
changes the captions but not the images::

    >>> from tlengine_plugins.image_captioning.synthetic import generate_caption_scenes
    >>> scenes = generate_caption_scenes(images=4, size=128, seed=0)
    >>> scenes[0].image, scenes[0].captions, scenes[0].objects   # PIL RGB, [str, ...], [DrawnObject, ...]

This module imports no torch, so registering the datasets stays cheap.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tlengine.data import DatasetSpec
from tlengine.data.synthetic_shapes import (  # private helpers reused on purpose, as object_detection does
    BACKGROUNDS,
    SHAPES,
    _blend_field,
    _check_style,
    _draw_outline,
    _seed_words,
)

from .datasets import TASK, CaptionItem, CaptionSamples, plural

__all__ = [
    "COLOURS",
    "SIZE_WORDS",
    "RELATION_WORDS",
    "INVERSE",
    "AXIS_RATIO",
    "DrawnObject",
    "CaptionScene",
    "relation",
    "generate_caption_scenes",
    "SyntheticCaptionsArgs",
    "build_synthetic_captions",
    "SYNTHETIC_CAPTIONS",
]

#: Named colours (RGB); each object is painted its colour with a small random jitter.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 30),
    "orange": (245, 135, 20),
    "purple": (135, 50, 180),
    "pink": (245, 125, 190),
    "brown": (120, 70, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}

#: Size class -> the words captions use for it (the first is the canonical one).
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}

#: Relation -> the phrases captions use for it (the first is the canonical one).
RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}

#: The relation seen from the other object.
INVERSE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

#: Positions are drawn so that, for every pair, the offset along the minor axis is at most
#: this fraction of the offset along the major one (when the scene allows it).
AXIS_RATIO = 0.6

# Circumradius as a fraction of the image side, per size class.
_RADIUS: dict[str, tuple[float, float]] = {"small": (0.07, 0.10), "large": (0.15, 0.19)}
# Random streams: images and phrasing never share random numbers (nor with other generators).
_IMAGE_KEY = zlib.crc32(b"tlengine.image_captioning.scenes")
_CAPTION_KEY = zlib.crc32(b"tlengine.image_captioning.captions")
_PLACE_TRIES = 60
_MAX_ANGLE = 0.25  # radians of rotation either way, so a square stays a square


@dataclass(frozen=True)
class DrawnObject:
    """One drawn shape: centre ``(cx, cy)`` and circumradius ``r`` in pixels (y grows downwards)."""

    shape: str
    colour: str
    size: str  # "small" or "large"
    cx: float
    cy: float
    r: float
    angle: float

    def describe(self, size_word: str | None = None) -> str:
        """``"small red circle"`` (with ``size_word`` instead of the size class if given)."""
        return f"{size_word or self.size} {self.colour} {self.shape}"


@dataclass
class CaptionScene:
    """A generated scene: the image, its captions and what was drawn (in painting order)."""

    image: Image.Image
    captions: list[str]
    objects: list[DrawnObject]


def relation(a: DrawnObject, b: DrawnObject) -> str:
    """Where ``a`` is relative to ``b``: along the axis where their centres are further apart."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dx) >= abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def _region(obj: DrawnObject, size: int) -> str:
    """Where a lone object is, by thirds of the image: "at the top left", "in the centre"..."""
    col = min(int(3 * obj.cx / size), 2)
    row = min(int(3 * obj.cy / size), 2)
    vertical = ("top", "", "bottom")[row]
    horizontal = ("left", "", "right")[col]
    if vertical and horizontal:
        return f"at the {vertical} {horizontal}"
    if vertical:
        return f"at the {vertical}"
    if horizontal:
        return f"on the {horizontal}"
    return "in the centre"


def _check_args(
    classes: Sequence[str],
    colours: Sequence[str],
    images: int,
    size: int,
    objects: tuple[int, int],
    captions_per_image: int,
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
    if not colours:
        raise ValueError("colours must name at least one colour")
    unknown = [c for c in colours if c not in COLOURS]
    if unknown:
        raise ValueError(f"unknown colour(s) {', '.join(unknown)}; known: {', '.join(COLOURS)}")
    if len(set(colours)) != len(colours):
        raise ValueError(f"colours are listed more than once: {', '.join(colours)}")
    if images < 0:
        raise ValueError(f"images must be >= 0, got {images}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    lo, hi = objects
    if not 1 <= lo <= hi <= 3:
        raise ValueError(f"objects must be (min, max) with 1 <= min <= max <= 3, got {objects}")
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
    _check_style(background, noise)


def _axis_clear(a: tuple[float, float], b: tuple[float, float]) -> bool:
    dx, dy = abs(a[0] - b[0]), abs(a[1] - b[1])
    return min(dx, dy) <= AXIS_RATIO * max(dx, dy)


def _place(rng: np.random.Generator, classes, colours, size: int, wanted: int) -> list[DrawnObject]:
    """Up to ``wanted`` non-overlapping objects with distinct descriptions (fewer if they do not fit)."""
    placed: list[DrawnObject] = []
    for _ in range(wanted):
        shape = classes[int(rng.integers(len(classes)))]
        colour = colours[int(rng.integers(len(colours)))]
        size_class = ("small", "large")[int(rng.integers(2))]
        taken = {(o.size, o.colour, o.shape) for o in placed}
        if (size_class, colour, shape) in taken:
            free = [
                (s, c, sh) for s in ("small", "large") for c in colours for sh in classes if (s, c, sh) not in taken
            ]
            if not free:
                break
            size_class, colour, shape = free[int(rng.integers(len(free)))]
        r = float(rng.uniform(*_RADIUS[size_class])) * size
        angle = float(rng.uniform(-_MAX_ANGLE, _MAX_ANGLE))
        lo, hi = r + 1.0, size - r - 1.0
        fallback = None
        chosen = None
        for _ in range(_PLACE_TRIES):
            cx, cy = (float(v) for v in rng.uniform(lo, hi, 2))
            if any(math.hypot(cx - o.cx, cy - o.cy) < r + o.r + 0.02 * size for o in placed):
                continue
            if all(_axis_clear((cx, cy), (o.cx, o.cy)) for o in placed):
                chosen = (cx, cy)
                break
            if fallback is None:
                fallback = (cx, cy)
        chosen = chosen or fallback
        if chosen is None:
            continue  # does not fit next to the others
        placed.append(DrawnObject(shape, colour, size_class, chosen[0], chosen[1], r, angle))
    return placed


def _paint(
    rng: np.random.Generator, objects: list[DrawnObject], size: int, background: str, noise: float
) -> Image.Image:
    grey = rng.uniform(95, 165)
    c1 = grey + rng.uniform(-12, 12, 3)  # a slightly tinted grey
    c2 = np.clip(c1 + rng.uniform(-45, 45), 0, 255) + rng.uniform(-8, 8, 3)
    kind = ("noise", "stripes", "checker", "gradient")[int(rng.integers(4))]
    t = _blend_field(kind, size, rng)[..., None]
    if background == "textured":
        img = c1 + t * (c2 - c1)
    else:  # plain: the texture is still drawn, so both styles share every other random value
        img = np.broadcast_to(c1, (size, size, 3)).astype(np.float64)
    ss = 4 if size <= 128 else 2
    for obj in objects:
        big = Image.new("L", (size * ss, size * ss), 0)
        _draw_outline(ImageDraw.Draw(big), obj.shape, obj.cx * ss, obj.cy * ss, obj.r * ss, obj.angle)
        alpha = np.asarray(big.resize((size, size), Image.Resampling.BOX), dtype=np.float32)[..., None] / 255.0
        colour = np.clip(np.array(COLOURS[obj.colour], dtype=np.float64) + rng.uniform(-18, 18, 3), 0, 255)
        img = img * (1 - alpha) + colour * alpha
    img = img + rng.normal(0, rng.uniform(0, noise), img.shape) if noise > 0 else img
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def _phrase(rng: np.random.Generator, obj: DrawnObject, article: str = "a") -> str:
    words = SIZE_WORDS[obj.size]
    return f"{article} {obj.describe(words[int(rng.integers(len(words)))])}"


def _rel_words(rng: np.random.Generator, rel: str) -> str:
    words = RELATION_WORDS[rel]
    return words[int(rng.integers(len(words)))]


def _caption(rng: np.random.Generator, objects: list[DrawnObject], plan: tuple, size: int) -> str:
    """One caption for ``plan``: ``("single", variant)`` or ``("pairs", ((i, j), ...))``."""
    if plan[0] == "single":
        obj = objects[0]
        variant = plan[1]
        text = _phrase(rng, obj)
        if variant >= 1:
            text = f"{text} {_region(obj, size)}"
        if variant == 2:
            text = f"there is {text}"
        return text
    clauses = []
    named: set[int] = set()
    for i, j in plan[1]:
        first = _phrase(rng, objects[i], "the" if i in named else "a")
        named.add(i)
        second = _phrase(rng, objects[j], "the" if j in named else "a")
        named.add(j)
        clauses.append(f"{first} {_rel_words(rng, relation(objects[i], objects[j]))} {second}")
    text = " and ".join(clauses)
    if rng.random() < 0.25:
        text = f"there is {text}"
    return text


def _plans(n: int) -> list[tuple]:
    """The caption structures a scene of ``n`` objects allows (every one mentions every object)."""
    if n == 1:
        return [("single", 0), ("single", 1), ("single", 2)]
    if n == 2:
        return [("pairs", ((0, 1),)), ("pairs", ((1, 0),))]
    plans = []
    for a, b, c in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        plans.append(("pairs", ((a, b), (c, b))))  # "a A rel a B and a C rel the B"
    return plans


def _captions(rng: np.random.Generator, objects: list[DrawnObject], count: int, size: int) -> list[str]:
    plans = _plans(len(objects))
    order = rng.permutation(len(plans))
    out: list[str] = []
    for k in range(count):
        plan = plans[int(order[k % len(plans)])]
        text = _caption(rng, objects, plan, size)
        for _ in range(8):  # another wording if this exact caption is already there
            if text not in out:
                break
            text = _caption(rng, objects, plans[int(rng.integers(len(plans)))], size)
        out.append(text)
    return out


def generate_caption_scenes(
    *,
    classes: Sequence[str] = ("circle", "square", "triangle"),
    colours: Sequence[str] = ("red", "green", "blue", "yellow"),
    images: int,
    size: int = 128,
    seed: int = 0,
    objects: tuple[int, int] = (1, 3),
    captions_per_image: int = 3,
    background: str = "textured",
    noise: float = 4.0,
) -> list[CaptionScene]:
    """``images`` scenes, each a :class:`CaptionScene` (image, captions, drawn objects).

    classes: shape names (see ``synthetic_shapes.SHAPES``); colours: names in :data:`COLOURS`.
    objects: (min, max) shapes per scene, 1 <= min <= max <= 3, drawn uniformly (fewer only
        when they do not fit or the descriptions run out).
    background: "textured" or "plain" (neutral greys); noise: largest pixel-noise std (0-255).
    """
    objects = (int(objects[0]), int(objects[1]))
    _check_args(classes, colours, images, size, objects, captions_per_image, background, noise)
    out: list[CaptionScene] = []
    for i in range(images):
        rng = np.random.default_rng([*_seed_words(seed), _IMAGE_KEY, i])
        wanted = int(rng.integers(objects[0], objects[1] + 1))
        drawn = _place(rng, list(classes), list(colours), size, wanted)
        image = _paint(rng, drawn, size, background, noise)
        words = np.random.default_rng([*_seed_words(seed), _CAPTION_KEY, i])
        out.append(CaptionScene(image, _captions(words, drawn, captions_per_image, size), drawn))
    return out


# ---------------------------------------------------------------------- as a dataset
class SyntheticCaptionsArgs(BaseModel):
    """``data.args`` of the ``synthetic-captions`` dataset (see :func:`generate_caption_scenes`)."""

    model_config = ConfigDict(extra="forbid")
    classes: list[str] = Field(
        default_factory=lambda: ["circle", "square", "triangle"], min_length=1, description="shape names"
    )
    colours: list[str] = Field(
        default_factory=lambda: ["red", "green", "blue", "yellow"], min_length=1, description="colour names"
    )
    images: int = Field(200, ge=1, le=100_000, description="scenes to generate")
    size: int = Field(128, ge=32, le=2048, description="scene side in pixels")
    seed: int = Field(0, description="generator seed (independent of the run's seed)")
    objects: tuple[int, int] = Field((1, 3), description="(min, max) shapes per scene, at most 3")
    captions_per_image: int = Field(3, ge=1, le=20, description="reference captions per scene")
    background: str = Field("textured", description=f"one of {', '.join(BACKGROUNDS)}")
    noise: float = Field(4.0, ge=0.0, description="largest pixel-noise standard deviation (0-255)")

    @model_validator(mode="after")
    def _valid(self) -> "SyntheticCaptionsArgs":
        _check_args(
            self.classes, self.colours, self.images, self.size, self.objects,
            self.captions_per_image, self.background, self.noise,
        )  # fmt: skip
        return self


def build_synthetic_captions(args: SyntheticCaptionsArgs, root: Path) -> CaptionSamples:
    """Generate the scenes in memory as :class:`CaptionSamples` (``root`` is unused)."""
    scenes = generate_caption_scenes(
        classes=args.classes,
        colours=args.colours,
        images=args.images,
        size=args.size,
        seed=args.seed,
        objects=args.objects,
        captions_per_image=args.captions_per_image,
        background=args.background,
        noise=args.noise,
    )
    items = [CaptionItem(s.image, list(s.captions), args.size, args.size) for s in scenes]
    captions = sum(len(i.captions) for i in items)
    source = (
        f"synthetic captions ({plural(len(args.classes), 'shape')}, {plural(len(args.colours), 'colour')}, "
        f"{plural(len(items), 'image')} of {args.size} px, {plural(captions, 'caption')}, seed {args.seed})"
    )
    return CaptionSamples(items=items, source=source)


SYNTHETIC_CAPTIONS = DatasetSpec(
    name="synthetic-captions",
    task=TASK,
    args=SyntheticCaptionsArgs,
    build=build_synthetic_captions,
    description="generated scenes of 1-3 coloured shapes with compositional captions (several per image)",
)
