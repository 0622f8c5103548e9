"""Atomic file writes: write to a temporary file in the same folder, fsync, rename.

A crash leaves either the old file or the new one, never a truncated one. A failed write
(full disk, read-only folder) is a RunError naming the file, and leaves the old file.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import RunError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; on success it replaces ``path``.

    An OSError while writing (a full disk, a read-only folder...) becomes a
    :class:`~tlengine.errors.RunError` "cannot write <path>: <reason>"; on any failure or
    interruption the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should be readable like any file
            os.replace(tmp, path)
        except OSError as exc:
            raise write_error(path, exc) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_error(path: Path, reason: OSError | str) -> RunError:
    """``RunError("cannot write <path>: no space left on device")`` for an OSError or a reason."""
    if isinstance(reason, OSError):
        reason = reason.strerror or str(reason) or type(reason).__name__
    reason = reason.strip().rstrip(".")
    if reason[:1].isupper() and not reason[1:2].isupper():
        reason = reason[0].lower() + reason[1:]
    return RunError(f"cannot write {path}: {reason}")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
