"""Data paths that cannot escape their root."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError


def resolve_under(root: Path, relative: str | Path, *, what: str = "data path") -> Path:
    """``root / relative``, resolved, refusing anything that ends up outside ``root``.

    Absolute paths are accepted only if they lie inside ``root``; ``..`` and symlinks
    that lead out are refused with a DataError naming the path.
    """
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise DataError(f"{what} '{relative}' is outside the data root {root}")
    return candidate


def resolve_file(root: Path, base: Path, relative: str, where: str) -> Path:
    """``base / relative`` (an image named inside an annotation file in ``base``), inside
    ``root``; DataError naming ``where`` (file and row) if it leads out. Existence is the
    caller's to check (a missing image may be skippable, an escape never is)."""
    try:
        return resolve_under(root, base / relative, what="image")
    except DataError:
        raise DataError(f"{where}: image path '{relative}' is outside the data root {Path(root).resolve()}") from None


def existing_file(root: Path, relative: str, what: str) -> Path:
    """``root / relative`` inside ``root``, which must be an existing file (DataError naming ``what``)."""
    path = resolve_under(root, relative, what=what)
    if not path.is_file():
        raise DataError(f"{what} {path} {'is not a file' if path.exists() else 'does not exist'}")
    return path


def resolve_image_root(root: Path, image_root: str | None, default: Path) -> Path:
    """The folder image paths are relative to: ``image_root`` inside ``root`` (an existing
    directory), or ``default`` (usually the annotation file's folder) when it is None."""
    if image_root is None:
        return default
    folder = resolve_under(root, image_root, what="image_root")
    if not folder.is_dir():
        raise DataError(f"image_root {folder} is not an existing directory")
    return folder
