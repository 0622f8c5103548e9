"""Listing and removing feature caches on disk (what ``tlengine cache ls / rm`` shows).

Only directories holding a valid feature-cache ``meta.json`` and nothing but cache files
are ever deleted: a wrong ``--root`` cannot remove arbitrary data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tlengine.cache.store import CACHE_FILES, FILLED, CacheLock, read_meta, remove_cache_dir
from tlengine.errors import TLEngineError


def cache_base() -> Path:
    """``$TLENGINE_CACHE_DIR``, else ``~/.cache/tlengine``: feature caches (``features/``) and
    compiled frozen parts (``inductor/``) live below it."""
    base = os.environ.get("TLENGINE_CACHE_DIR")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "tlengine"


def default_root() -> Path:
    """``$TLENGINE_CACHE_DIR/features``, else ``~/.cache/tlengine/features``."""
    return cache_base() / "features"


def list_caches(root: Path | str | None = None) -> list[dict[str, Any]]:
    """One dict per cache directory under ``root``, oldest first: digest (directory name),
    path, size (bytes on disk: sparse files count only written blocks), bytes (full
    size once filled), key (all key
    fields), created, last_used, hits, complete, rows_filled, rows_total, row_dim, dtype,
    views, shard. Directories without a valid meta.json are not caches and are skipped."""
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        meta = read_meta(entry)
        if meta is None:
            continue
        out.append(
            {
                "digest": entry.name,
                "path": entry,
                "size": _disk_usage(entry),
                "bytes": int(meta.get("bytes", 0)),
                "key": meta["key"],
                "created": meta.get("created"),
                "last_used": meta.get("last_used"),
                "hits": int(meta.get("hits", 0)),
                "complete": bool(meta["complete"]),
                "rows_filled": _rows_filled(entry / FILLED),
                "rows_total": int(meta["rows"]),
                "row_dim": int(meta["row_dim"]),
                "dtype": meta.get("dtype"),
                "views": meta.get("views"),
                "shard": meta.get("shard"),
            }
        )
    out.sort(key=lambda c: (c["created"] or "", c["digest"]))
    return out


def remove_caches(selectors: list[str], *, root: Path | str | None = None, all: bool = False) -> list[Path]:
    """Delete caches whose directory name starts with one of ``selectors`` (or every cache
    with ``all=True``); returns the deleted paths.

    Every selector is checked before anything is deleted: one that matches no cache, or
    more than one, raises :class:`TLEngineError` naming it, and so does a cache another
    process has open.
    """
    caches = list_caches(root)
    if all:
        targets = [c["path"] for c in caches]
    else:
        targets = []
        for sel in selectors:
            sel = sel.strip().lower()
            if not sel:
                raise TLEngineError("an empty cache digest selects nothing; use --all to remove every cache")
            hits = [c["path"] for c in caches if c["digest"].lower().startswith(sel)]
            if not hits:
                raise TLEngineError(f"no feature cache matches '{sel}' under {root or default_root()}")
            if len(hits) > 1:
                names = ", ".join(p.name for p in hits)
                raise TLEngineError(f"'{sel}' matches {len(hits)} feature caches ({names}); give more of the digest")
            if hits[0] not in targets:
                targets.append(hits[0])
    locks: list[CacheLock] = []
    try:
        for path in targets:
            try:
                lock = CacheLock(path.parent, path.name)
            except RuntimeError:
                raise TLEngineError(
                    f"feature cache {path.name} is open in this process; close it before removing it"
                ) from None
            locks.append(lock)
            if not lock.acquire(shared=False, wait=False):
                raise TLEngineError(f"feature cache {path.name} is in use by another process; not removing it")
        for path in targets:
            remove_cache_dir(path)
    finally:
        for lock in locks:
            lock.release()
    return targets


def format_size(num_bytes: int | float) -> str:
    """1536 -> '1.5 KiB'; binary units up to TiB."""
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024:
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _disk_usage(path: Path) -> int:
    total = 0
    for name in CACHE_FILES:
        try:
            st = (path / name).stat()
        except OSError:
            continue
        blocks = getattr(st, "st_blocks", None)
        total += min(st.st_size, blocks * 512) if blocks is not None else st.st_size
    return total


def _rows_filled(path: Path) -> int:
    filled = 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(16 << 20):
                filled += len(chunk) - chunk.count(0)
    except OSError:
        return 0
    return filled
