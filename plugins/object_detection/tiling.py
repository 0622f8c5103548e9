"""Cutting a large image (aerial photos, scanned documents) into overlapping square tiles,
with its boxes clipped to each tile and shifted into the tile's coordinates (``data.tile``).

Boxes are xyxy absolute pixels, as everywhere in :mod:`.datasets`. This module imports
no torch.
"""

from __future__ import annotations

from .datasets import Box, DetectionItem

__all__ = ["tile"]


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride`` pixels, the last one flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return starts


def tile(
    item: DetectionItem, image_size: tuple[int, int], tile: int, overlap: int, min_visible: float = 0.6
) -> list[tuple[Box, list[Box], list[int]]]:
    """Cut a large ``(width, height)``-pixel image into ``tile x tile`` patches overlapping by ``overlap`` pixels.

    Tiles start every ``tile - overlap`` pixels; the last row/column is moved back to end
    at the image border, so every pixel is covered and no tile leaves the image (an image
    smaller than ``tile`` along an axis gets one tile as long as the image there).

    Returns, for every tile (including tiles without boxes), ``(crop_box, boxes, labels)``:
    ``crop_box`` is the tile as xyxy absolute pixels of the image (what ``PIL.Image.crop``
    takes); ``boxes`` are the item's boxes clipped to the tile and shifted into its
    coordinates (xyxy pixels, origin at the tile's top-left corner), kept only when at least
    ``min_visible`` of the box's area lies inside the tile.
    """
    if tile <= 0:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be at least 0 and smaller than tile ({tile}), got {overlap}")
    if not 0 < min_visible <= 1:
        raise ValueError(f"min_visible must be in (0, 1], got {min_visible}")
    width, height = image_size
    stride = tile - overlap
    out: list[tuple[Box, list[Box], list[int]]] = []
    for y0 in _starts(height, tile, stride):
        for x0 in _starts(width, tile, stride):
            x1, y1 = x0 + min(tile, width), y0 + min(tile, height)
            crop: Box = (float(x0), float(y0), float(x1), float(y1))
            boxes: list[Box] = []
            labels: list[int] = []
            for (bx1, by1, bx2, by2), label in zip(item.boxes, item.labels):
                area = (bx2 - bx1) * (by2 - by1)
                cx1, cy1, cx2, cy2 = max(bx1, x0), max(by1, y0), min(bx2, x1), min(by2, y1)
                if cx2 <= cx1 or cy2 <= cy1 or area <= 0:
                    continue
                if (cx2 - cx1) * (cy2 - cy1) < min_visible * area:
                    continue
                boxes.append((cx1 - x0, cy1 - y0, cx2 - x0, cy2 - y0))
                labels.append(label)
            out.append((crop, boxes, labels))
    return out
