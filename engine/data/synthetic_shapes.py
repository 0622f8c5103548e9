"""Deterministic synthetic images: one coloured shape on a textured background.

The class of an image is the *shape type* (circle, star, ...). Everything else is a
nuisance variable drawn independently of the class: background texture (smooth noise,
stripes, checkerboard, gradient) and its colours, shape colour, size (0.35-0.8 of the
image side), position (always fully inside the frame), rotation, a few soft distractor
blobs behind the shape, and pixel noise. So neither colour nor texture is a shortcut: a
model has to look at the outline.

Generation needs no files and no network and is fast (about 1000 images of 64 px per
second per core or better), which makes it the dataset of the quickstart and the tests::

    >>> from tlengine.data.synthetic_shapes import SHAPES, generate
    >>> samples = generate(SHAPES[:4], per_class=10, size=64, seed=0)
    >>> image, label = samples[0]          # PIL RGB 64x64, label 0 (= "circle")

Each sample has its own random generator seeded by ``(seed, shape, sample index)``, so a
sample does not change when ``per_class`` grows or other shapes are added or removed.

Three switches make the images easier (for experiments and for telling whether a model
fails because of the nuisances or for another reason); the defaults are the full
difficulty described above: ``background="textured" | "plain"``, ``distractors=True``
and ``noise=8.0`` (the largest pixel-noise standard deviation, 0-255 scale)::

    >>> clean = generate(["circle", "square"], per_class=10, size=64, seed=0,
    ...                  background="plain", distractors=False, noise=0)
"""

from __future__ import annotations

import math
import zlib
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPES", "BACKGROUNDS", "render_shape_image", "generate", "contact_sheet"]

#: Every shape this module can draw; the first four are the easiest to tell apart.
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "hexagon",
    "ring",
    "diamond",
    "pentagon",
    "heart",
    "arrow",
    "crescent",
)

#: Background styles: two colours mixed by a random texture, or one flat colour.
BACKGROUNDS: tuple[str, ...] = ("textured", "plain")

# Shape size and how strongly the shape must stand out from the background.
_MIN_SCALE, _MAX_SCALE = 0.35, 0.8
_MIN_SHAPE_CONTRAST = 140.0  # Euclidean distance in RGB (0-255) to both background colours


# ----------------------------------------------------------------------- geometry
# Outlines in a unit frame: centred on the origin, inside the unit circle (so any
# rotation of a shape whose circumradius is r stays inside a circle of radius r).
def _regular_polygon(n: int, start: float = -math.pi / 2) -> np.ndarray:
    a = start + 2 * math.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    a = -math.pi / 2 + math.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _fit_unit(points: np.ndarray) -> np.ndarray:
    """Centre a point set on its bounding box and scale it into the unit circle."""
    points = points - (points.max(0) + points.min(0)) / 2
    return points / np.linalg.norm(points, axis=1).max()


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return _fit_unit(np.stack([x, y], axis=1))


def _cross(w: float = 0.32) -> np.ndarray:
    pts = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)]
    return _fit_unit(np.array(pts, dtype=float))


def _arrow() -> np.ndarray:
    pts = [(-1, -0.2), (0.1, -0.2), (0.1, -0.58), (1, 0), (0.1, 0.58), (0.1, 0.2), (-1, 0.2)]
    return _fit_unit(np.array(pts, dtype=float))


_POLYGONS: dict[str, np.ndarray] = {
    "square": _regular_polygon(4, start=math.pi / 4),
    "triangle": _regular_polygon(3),
    "pentagon": _regular_polygon(5),
    "hexagon": _regular_polygon(6),
    "star": _star(),
    "diamond": np.array([(0, -1), (0.55, 0), (0, 1), (-0.55, 0)], dtype=float),
    "cross": _cross(),
    "heart": _heart(),
    "arrow": _arrow(),
}


def _draw_outline(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float) -> None:
    """Fill ``shape`` (255) on a mask: centre (cx, cy), circumradius r, rotation angle."""
    if shape in _POLYGONS:
        c, s = math.cos(angle), math.sin(angle)
        pts = _POLYGONS[shape] @ np.array([[c, s], [-s, c]]) * r + (cx, cy)
        draw.polygon([tuple(p) for p in pts.tolist()], fill=255)
    elif shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "ring":
        ri = 0.55 * r
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)
    elif shape == "crescent":
        # A disc with an offset, slightly smaller disc cut out of it.
        ri, off = 0.82 * r, 0.45 * r
        ox, oy = cx + off * math.cos(angle), cy + off * math.sin(angle)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        draw.ellipse((ox - ri, oy - ri, ox + ri, oy + ri), fill=0)
    else:  # pragma: no cover - guarded by the callers
        raise ValueError(f"unknown shape '{shape}'; known: {', '.join(SHAPES)}")


# ----------------------------------------------------------------------- textures
@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): (y, x), each [size, size] float32."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(c, c, indexing="ij")


def _blend_field(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A [size, size] float32 field in [0, 1] used to mix two colours."""
    y, x = _grid(size)
    phi = rng.uniform(0, math.pi)
    u = x * math.cos(phi) + y * math.sin(phi)
    if kind == "noise":
        k = int(rng.integers(2, 7))
        small = Image.fromarray(rng.random((k, k), dtype=np.float32), mode="F")
        return np.clip(np.asarray(small.resize((size, size), Image.Resampling.BICUBIC)), 0, 1)
    if kind == "stripes":
        freq = rng.uniform(2, 8)
        return 0.5 + 0.5 * np.sin(2 * math.pi * freq * u + rng.uniform(0, 2 * math.pi))
    if kind == "checker":
        v = -x * math.sin(phi) + y * math.cos(phi)
        cells = rng.uniform(2, 6)
        # tanh of a product of sines: a checkerboard with soft (anti-aliased) edges.
        return 0.5 + 0.5 * np.tanh(6 * np.sin(math.pi * cells * u) * np.sin(math.pi * cells * v))
    # gradient
    return (u - u.min()) / max(float(u.max() - u.min()), 1e-6)


def _shape_colour(bg: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A random colour far from every background colour (best of a few tries)."""
    best, best_dist = None, -1.0
    for _ in range(32):
        c = rng.uniform(0, 255, 3)
        d = min(float(np.linalg.norm(c - b)) for b in bg)
        if d >= _MIN_SHAPE_CONTRAST:
            return c
        if d > best_dist:
            best, best_dist = c, d
    return best  # type: ignore[return-value]


# ----------------------------------------------------------------------- rendering
def _check_style(background: str, noise: float) -> None:
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, got '{background}'")
    if not noise >= 0:  # also rejects NaN
        raise ValueError(f"noise must be >= 0, got {noise}")


def render_shape_image(
    shape: str,
    *,
    size: int,
    rng: np.random.Generator,
    background: str = "textured",
    distractors: bool = True,
    noise: float = 8.0,
) -> Image.Image:
    """Draw one ``size`` x ``size`` RGB image of ``shape`` using only ``rng`` for randomness.

    Background colours, texture, shape colour, scale, position, rotation and distractor
    blobs are all drawn from ``rng``; the same generator state gives the same pixels.

    background: "textured" (two colours mixed by a random texture) or "plain" (the first
        of those colours only).
    distractors: draw the 0-3 soft blobs behind the shape.
    noise: the pixel noise's standard deviation is drawn uniformly from [0, noise]
        (0-255 scale); 0 turns it off.

    These switches only decide what is *painted*: every random value is drawn whatever
    they are, so the same ``rng`` state gives the same shape, colours and placement in
    every style (switching distractors off removes the blobs and changes nothing else).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape '{shape}'; known: {', '.join(SHAPES)}")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    _check_style(background, noise)

    # Background: two colours of moderate contrast mixed by a texture field.
    c1 = rng.uniform(0, 255, 3)
    c2 = np.clip(c1 + rng.uniform(-100, 100, 3), 0, 255)
    kind = ("noise", "stripes", "checker", "gradient")[int(rng.integers(4))]
    t = _blend_field(kind, size, rng)[..., None]
    if background == "textured":
        img = c1 + t * (c2 - c1)  # [size, size, 3] float
    else:  # plain: the first colour only (the texture was still drawn, see the note above)
        img = np.broadcast_to(c1, (size, size, 3)).astype(np.float64)

    # Soft distractor blobs behind the shape (blurry, so they never look like a shape).
    y, x = _grid(size)
    for _ in range(int(rng.integers(0, 4))):
        by, bx = rng.uniform(0, 1, 2)
        sigma = rng.uniform(0.03, 0.08)
        colour = rng.uniform(0, 255, 3)
        if distractors:
            alpha = 0.8 * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * sigma**2))[..., None]
            img = img * (1 - alpha) + colour * alpha

    # Shape mask, drawn at 2-4x resolution and box-filtered down for smooth edges.
    ss = 4 if size <= 128 else 2
    big = size * ss
    r = rng.uniform(_MIN_SCALE, _MAX_SCALE) * big / 2
    margin = 1.0 * ss
    lo, hi = r + margin, big - r - margin
    cx, cy = rng.uniform(lo, hi, 2)
    angle = rng.uniform(0, 2 * math.pi)
    mask = Image.new("L", (big, big), 0)
    _draw_outline(ImageDraw.Draw(mask), shape, float(cx), float(cy), float(r), float(angle))
    mask = mask.resize((size, size), Image.Resampling.BOX)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0

    # Shape fill: a contrasting colour with a faint gradient of its own.
    s1 = _shape_colour((c1, c2), rng)
    s2 = np.clip(s1 + rng.uniform(-40, 40, 3), 0, 255)
    fill = s1 + _blend_field("gradient", size, rng)[..., None] * (s2 - s1)
    img = img * (1 - alpha) + fill * alpha

    img = img + rng.normal(0, rng.uniform(0, noise), img.shape)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def _shape_key(shape: str) -> int:
    # A stable number per shape name (not its position in a list), so a shape's images do
    # not depend on which other shapes are selected. crc32 is stable across processes.
    return zlib.crc32(shape.encode("utf-8"))


def _seed_words(seed: int) -> tuple[int, int]:
    """Any Python int (negative too) as two non-negative 32-bit words for SeedSequence."""
    s = seed % 2**64
    return s & 0xFFFFFFFF, s >> 32


def generate(
    shapes: Sequence[str],
    per_class: int,
    size: int,
    seed: int,
    *,
    background: str = "textured",
    distractors: bool = True,
    noise: float = 8.0,
) -> list[tuple[Image.Image, int]]:
    """``per_class`` images of each shape as ``(PIL RGB image, label)``.

    The label is the index of the shape in ``shapes``. Samples are ordered class by
    class. Sample ``i`` of shape ``s`` depends only on ``(seed, s, i, size)`` and the
    style switches ``background``, ``distractors`` and ``noise`` (see
    :func:`render_shape_image`).
    """
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    if len(set(shapes)) != len(shapes):
        raise ValueError(f"shapes are listed more than once: {', '.join(shapes)}")
    _check_style(background, noise)
    out: list[tuple[Image.Image, int]] = []
    for label, shape in enumerate(shapes):
        key = _shape_key(shape)
        for i in range(per_class):
            rng = np.random.default_rng([*_seed_words(seed), key, i])
            out.append(
                (
                    render_shape_image(
                        shape, size=size, rng=rng, background=background, distractors=distractors, noise=noise
                    ),
                    label,
                )
            )
    return out


def contact_sheet(samples: Sequence[tuple[Image.Image, int]], columns: int = 8, scale: int = 2) -> Image.Image:
    """Tile samples into one image (for eyeballing what the generator draws)."""
    side = samples[0][0].width * scale
    rows = math.ceil(len(samples) / columns)
    sheet = Image.new("RGB", (columns * side, rows * side), (255, 255, 255))
    for k, (im, _) in enumerate(samples):
        sheet.paste(im.resize((side, side), Image.Resampling.NEAREST), ((k % columns) * side, (k // columns) * side))
    return sheet
