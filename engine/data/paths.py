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
