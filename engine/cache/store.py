"""Feature store: rows of pooled backbone features, in memory or memory-mapped on disk.

Layout: ``R = num_samples * views`` rows of ``D_row`` values; the row of (sample ``i``,
view ``v``) is ``i * views + v``. ``data`` is ``[R, D_row]`` in the key's dtype, ``scales``
float32 ``[R]`` (int8 dequantisation, 1.0 otherwise), ``filled`` one flag per row.

Disk layout, one directory per key (``root/<digest[:20]>`` or ``...-r{rank}of{world}``)::

    meta.json    key, shape, created / last_used, hits, complete, checksum (atomic writes)
    data.bin     [R, D_row] raw rows          (memory-mapped, MAP_SHARED)
    scales.bin   float32 [R]                  (memory-mapped)
    filled.bin   uint8 [R], 1 = row durable   (memory-mapped)
    checksums.json  per chunk of rows: checksum of its committed rows (atomic writes)

Crash safety: a row's filled flag is only set (in the file) after its data and scale
are on disk, and ``complete`` is only set after every flag is, with a checksum of
data + scales. A crash therefore leaves a resumable partial cache whose filled rows are
all valid; rows written but not committed are missing and get recomputed. A complete
cache whose checksum does not match, or a directory whose meta does not match the key,
is deleted and rebuilt with a one-line notice.

Committed rows carry their own checksums, per chunk of ``chunk_rows`` consecutive rows
(a few MiB): blake2b over the chunk's filled flags and the bytes and scales of its filled
rows. Every change of the flags (commit, or clearing them before a rewrite) first writes
``checksums.json`` listing both the chunk's current and its next checksum, then changes
and syncs the flags; so a crash anywhere leaves flags that match one of the listed sums.
Resuming a partial cache re-checks every chunk: a chunk whose committed rows no longer
match (bytes changed on disk) loses its flags, with one notice, and its rows are
extracted again instead of being trained on (or checksummed into a "complete" cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from tlengine.atomic import write_json, write_text
from tlengine.cache.key import DIGEST_CHARS, FORMAT_VERSION, CacheKey
from tlengine.errors import TLEngineError
from tlengine.kernels.reference import last_occurrence

try:
    import fcntl
except ImportError:  # Windows: no flock; concurrent use of one disk cache is not guarded there
    fcntl = None  # type: ignore[assignment]

META, DATA, SCALES, FILLED, SUMS = "meta.json", "data.bin", "scales.bin", "filled.bin", "checksums.json"
CACHE_FILES = (META, DATA, SCALES, FILLED, SUMS)
_CHUNK = 16 << 20
_SUM_CHUNK_BYTES = 4 << 20  # rows per checksummed chunk: about this many bytes of data + scales

# fdatasync is enough: the files never change size after creation, and msync(MS_SYNC)
# itself is vfs_fsync_range(..., datasync=1) on Linux.
_datasync = getattr(os, "fdatasync", os.fsync)


class CacheWarning(UserWarning):
    """Kept for compatibility: the cache's notices (a corrupt or mismatched cache being
    rebuilt, rows re-extracted, waiting for another process) now go through :data:`echo`
    as one plain line instead of ``warnings.warn``."""


def _print_notice(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


echo: Callable[[str], None] = _print_notice
"""Receives the cache's one-line notices; the default prints ``warning: <message>`` to
stderr. Replace it (``tlengine.cache.store.echo = ...``) to route them elsewhere."""


class CacheMissError(LookupError):
    """A row was read before it was written: a bug in the caller, not a user error."""


Storage = Literal["memory", "disk"]
Kernels = Literal["auto", "fused", "torch"]


def _ops(kernels: Kernels) -> tuple[Callable[..., None], Callable[..., torch.Tensor]]:
    """(pool_quantize_scatter, gather_dequantize) for a ``kernels`` choice (see
    :func:`tlengine.kernels.ops_for`)."""
    from tlengine.kernels import ops_for

    ops = ops_for(kernels)
    return ops.pool_quantize_scatter, ops.gather_dequantize


class FeatureCache:
    """One feature cache. Create with :meth:`open`; use as a context manager or call
    :meth:`close` (which commits) when done."""

    def __init__(
        self,
        *,
        key: CacheKey,
        num_samples: int,
        row_dim: int,
        storage: Storage,
        path: Path | None,
        device: torch.device,
        shard: tuple[int, int],
        data: torch.Tensor,
        scales: torch.Tensor,
        filled: torch.Tensor,
        filled_map: torch.Tensor | None,
        fds: dict[str, int],
        meta: dict[str, Any] | None,
        complete: bool,
        commit_every: int,
        lock: "CacheLock | None" = None,
        kernels: Kernels = "auto",
        sums: "RowSums | None" = None,
    ) -> None:
        self.key = key
        self.num_samples = num_samples
        self.views = key.views
        self.row_dim = row_dim
        self.storage = storage
        self.path = path
        self.device = device
        self.shard = shard
        self.data = data  # [R, D_row], key dtype
        self.scales = scales  # float32 [R]
        self._filled = filled  # bool [R] on device: committed or written in this process
        self._filled_map = filled_map  # uint8 [R] memory map (disk only): the durable flags
        self._fds = fds
        self._meta = meta
        self._sums = sums  # disk only: per-chunk checksums of the committed rows
        self._complete = complete
        self._commit_every = commit_every
        self._pending: list[torch.Tensor] = []  # CPU int64 row ids written since the last commit
        self._writes_since_commit = 0
        self._written = torch.zeros(self.rows, dtype=torch.bool)
        self._rows_reused = int(filled.sum())
        self._hits = 0
        self._closed = False
        self._lock = lock
        self.kernels = kernels
        self._scatter, self._gather = _ops(kernels)
        self._fd_finalizer = weakref.finalize(self, _release, dict(fds), lock)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        key: CacheKey,
        *,
        num_samples: int,
        row_dim: int,
        storage: Storage = "memory",
        root: Path | str | None = None,
        device: torch.device | str = "cpu",
        shard: tuple[int, int] = (0, 1),
        commit_every: int = 32,
        kernels: Kernels = "auto",
    ) -> "FeatureCache":
        """Open (create, resume or reuse) the cache for ``key``.

        ``row_dim``: values per row after pooling (see :func:`row_dim_for`). ``storage``:
        "memory" (a tensor on ``device``, CPU or CUDA) or "disk" (CPU memory maps under
        ``root``, default :func:`tlengine.cache.manage.default_root`). ``shard``: (rank,
        world) for DDP; each rank owns its own directory. ``commit_every``: disk writes are
        committed every that many :meth:`write` calls (0: only on :meth:`commit`,
        :meth:`finalize` or :meth:`close`). ``kernels``: "auto" (fused ops where built),
        "fused" (required) or "torch" (the reference ops).
        """
        if num_samples < 1 or row_dim < 1:
            raise ValueError(f"num_samples and row_dim must be >= 1, got {num_samples} and {row_dim}")
        rank, world = shard
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        if commit_every < 0:
            raise ValueError(f"commit_every must be >= 0, got {commit_every}")
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # "cuda" is the current device: name it, so
            device = torch.device("cuda", torch.cuda.current_device())  # features on cuda:N compare equal
        rows = num_samples * key.views
        _ops(kernels)  # fail before touching any file
        common = dict(
            key=key,
            num_samples=num_samples,
            row_dim=row_dim,
            device=device,
            shard=(rank, world),
            commit_every=commit_every,
            kernels=kernels,
        )
        if storage == "memory":
            return cls(
                storage="memory",
                path=None,
                data=torch.zeros(rows, row_dim, dtype=key.torch_dtype, device=device),
                scales=torch.ones(rows, dtype=torch.float32, device=device),
                filled=torch.zeros(rows, dtype=torch.bool, device=device),
                filled_map=None,
                fds={},
                meta=None,
                complete=False,
                **common,
            )
        if storage != "disk":
            raise ValueError(f"storage must be 'memory' or 'disk', got '{storage}'")
        if device.type != "cpu":
            raise ValueError(
                f"disk caches are memory-mapped on the CPU; got device '{device}' "
                "(use storage='memory' to keep the cache on a GPU)"
            )
        if root is None:
            from tlengine.cache.manage import default_root

            root = default_root()
        path = Path(root) / cache_dir_name(key, (rank, world))
        identity = _identity(key, num_samples, row_dim, (rank, world))
        sizes = _file_sizes(rows, row_dim, key.torch_dtype)

        lock = CacheLock(Path(root), path.name)
        fds: dict[str, int] = {}
        try:
            # Readers of a complete, valid cache share it; anything else (create, resume,
            # rebuild) needs it exclusively, and re-checks once it has it.
            lock.acquire(shared=True)
            meta = read_meta(path) if path.exists() else None
            if not (meta and meta.get("complete") and _check_existing(path, identity, sizes) is None):
                lock.acquire(shared=False)
                meta = _prepare_dir(path, identity, sizes)
            fds.update({name: os.open(path / name, os.O_RDWR) for name in (DATA, SCALES, FILLED)})
            data = torch.from_file(str(path / DATA), shared=True, size=rows * row_dim, dtype=key.torch_dtype).view(
                rows, row_dim
            )
            scales = torch.from_file(str(path / SCALES), shared=True, size=rows, dtype=torch.float32)
            filled_map = torch.from_file(str(path / FILLED), shared=True, size=rows, dtype=torch.uint8)
            sums = RowSums(path, data, scales, filled_map, fds[FILLED])
            if not meta["complete"]:
                # Resuming (we hold the lock exclusively): committed rows must still be what was committed.
                sums.verify()
        except BaseException:
            _close_fds(fds)
            lock.release()
            raise
        cache = cls(
            storage="disk",
            path=path,
            data=data,
            scales=scales,
            filled=filled_map != 0,
            filled_map=filled_map,
            fds=fds,
            meta=meta,
            complete=bool(meta["complete"]),
            lock=lock,
            sums=sums,
            **common,
        )
        meta["last_used"] = _now()
        if cache._rows_reused:
            meta["hits"] = int(meta.get("hits", 0)) + 1
        if not cache._complete and cache._rows_reused == rows:
            cache.finalize()  # a crash between the last commit and the meta write
        else:
            # Concurrent readers may race here; write_json is atomic, so at worst a hit is lost.
            write_json(path / META, meta)
        return cache

    # ------------------------------------------------------------------ rows
    @property
    def rows(self) -> int:
        """R = num_samples * views."""
        return self.num_samples * self.views

    @staticmethod
    def row_index(samples: torch.Tensor, views: int, view_ids: torch.Tensor | int | None = None) -> torch.Tensor:
        """Row ids for sample ids ``samples`` [B] with ``views`` views per sample.

        With ``view_ids`` ([B] or an int): ``samples * views + view_ids``, shape [B]. Without:
        every view of every sample, ``[B * views]`` in (sample, view) order.
        """
        samples = torch.as_tensor(samples, dtype=torch.int64)
        if view_ids is None:
            return (samples[:, None] * views + torch.arange(views, device=samples.device)).reshape(-1)
        return samples * views + torch.as_tensor(view_ids, dtype=torch.int64, device=samples.device)

    @staticmethod
    def sample_view(rows: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse of :meth:`row_index`: row ids [B] -> (sample ids [B], view ids [B])."""
        rows = torch.as_tensor(rows, dtype=torch.int64)
        return rows // views, rows % views

    def missing(self) -> torch.Tensor:
        """int64 [M] (CPU) ids of the rows not written yet, ascending."""
        return torch.nonzero(~self._filled, as_tuple=False).reshape(-1).cpu()

    @property
    def is_complete(self) -> bool:
        """True once finalized (disk: ``meta.json`` says complete and the checksum matched)."""
        return self._complete

    def draw_views(self, epoch: int, num_samples: int | None = None, seed: int = 0) -> torch.Tensor:
        """int64 [num_samples] view ids in [0, views): one view per sample for ``epoch``,
        the same for the same (seed, epoch) in every process and run."""
        n = self.num_samples if num_samples is None else num_samples
        if self.views == 1:
            return torch.zeros(n, dtype=torch.int64)
        mixed = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(mixed, "little") & ((1 << 63) - 1))
        return torch.randint(0, self.views, (n,), generator=gen, dtype=torch.int64)

    # ------------------------------------------------------------------ writing
    def write(
        self,
        features: torch.Tensor,
        rows: torch.Tensor,
        *,
        pooling: str | None = None,
        l2_normalize: bool | None = None,
    ) -> None:
        """Pool, normalise and quantise ``features`` ([N,C,H,W] or [N,T,D]) into ``rows`` [N].

        ``pooling`` / ``l2_normalize`` default to the key's and must agree with it: the key
        is what later readers trust. On disk the rows become durable at the next commit.
        """
        self._check_open()
        if pooling is not None and pooling != self.key.pooling:
            raise ValueError(f"pooling '{pooling}' differs from the cache key's '{self.key.pooling}'")
        if l2_normalize is not None and bool(l2_normalize) != self.key.l2_normalize:
            raise ValueError(f"l2_normalize={l2_normalize} differs from the cache key's {self.key.l2_normalize}")
        rows = torch.as_tensor(rows)
        if rows.dim() != 1:
            raise ValueError(f"rows must be 1-D, got shape {list(rows.shape)}")
        rows = self._row_ids(rows)
        rows_cpu = self._before_rewrite(rows)
        if features.device == self.device:
            self._scatter(features, self.data, self.scales, rows, self.key.pooling, self.key.l2_normalize)
        else:
            self._write_staged(features, rows)
        self._after_write(rows, rows_cpu)

    def put_rows(self, rows: torch.Tensor, data: torch.Tensor, scales: torch.Tensor) -> None:
        """Store rows that are already pooled and quantised, as :meth:`rows_of` gives them
        from a cache of the same key (another rank's share of a sharded extraction):
        ``rows`` [N], ``data`` [N, D_row] in the key's dtype, ``scales`` float32 [N].
        Byte for byte, no re-quantisation; durable at the next commit like :meth:`write`."""
        self._check_open()
        rows = torch.as_tensor(rows)
        if rows.dim() != 1 or tuple(data.shape) != (rows.shape[0], self.row_dim) or data.dtype != self.data.dtype:
            raise ValueError(
                f"put_rows takes rows [N], data [N, {self.row_dim}] {self.data.dtype} and scales [N]; got "
                f"{list(rows.shape)}, {list(data.shape)} {data.dtype}, {list(scales.shape)}"
            )
        if not rows.numel():
            return
        rows = self._row_ids(rows)
        rows_cpu = self._before_rewrite(rows)
        self.data[rows] = data.to(self.device)
        self.scales[rows] = scales.to(self.device, torch.float32)
        self._after_write(rows, rows_cpu)

    def rows_of(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(data [N, D_row] in the key's dtype, scales float32 [N]) of filled ``rows``, on
        the CPU, as stored: what :meth:`put_rows` takes."""
        self._check_open()
        rows = self._row_ids(rows)
        if not bool(self._filled[rows].all()):
            raise CacheMissError("rows_of: some rows were not written")
        return self.data[rows].cpu(), self.scales[rows].cpu()

    def absorb_shards(self) -> int:
        """Take in the committed rows of this key's per-rank shard caches (``<dir>-r{rank}of{world}``,
        left beside it by a sharded extraction that was interrupted), commit them here and
        delete the shards. Returns how many rows came in; 0 for a memory cache or a shard."""
        self._check_open()
        if self.path is None or self.shard != (0, 1):
            return 0
        taken = 0
        for other in sorted(self.path.parent.glob(f"{self.path.name}-r*of*")):
            found = re.fullmatch(r"-r(\d+)of(\d+)", other.name[len(self.path.name) :])
            if not found or not other.is_dir() or int(found[1]) >= int(found[2]):
                continue
            with FeatureCache.open(
                self.key,
                num_samples=self.num_samples,
                row_dim=self.row_dim,
                storage="disk",
                root=self.path.parent,
                shard=(int(found[1]), int(found[2])),
                commit_every=0,
                kernels=self.kernels,
            ) as shard:
                done = torch.nonzero(shard._filled, as_tuple=False).reshape(-1)
                new = done[~self._filled[done].cpu()]
                self.put_rows(new, *shard.rows_of(new))
            self._written[new] = False  # reused (extracted by an earlier process), not extracted now
            self._rows_reused += int(new.numel())
            self.commit()  # durable here before the shard goes
            remove_cache_dir(other)
            taken += int(new.numel())
        if taken:
            echo(f"feature cache {self.path.name}: took {taken} rows from an interrupted sharded extraction")
        return taken

    def _before_rewrite(self, rows: torch.Tensor) -> torch.Tensor:
        rows_cpu = rows.cpu()
        if self._complete:
            self._mark_incomplete()  # first: it takes the exclusive lock that rewriting needs
        if self._filled_map is not None:
            self._uncommit(rows_cpu)
        return rows_cpu

    def _after_write(self, rows: torch.Tensor, rows_cpu: torch.Tensor) -> None:
        self._filled[rows] = True
        self._written[rows_cpu] = True
        self._pending.append(rows_cpu)
        self._writes_since_commit += 1
        if self._commit_every and self._writes_since_commit >= self._commit_every:
            self.commit()

    def commit(self) -> None:
        """Make every row written so far durable (disk) and mark it filled.

        Order matters: data and scales are synced first, only then are the flags set
        and synced, so a durable flag always points at durable data.
        """
        self._check_open()
        if self._filled_map is not None and self._pending:
            # fsync/fdatasync on any descriptor of a file also writes back the pages dirtied
            # through MAP_SHARED mappings of it: since Linux 2.6.19 the kernel tracks those
            # pages as dirty in the page cache (clean shared pages are write-protected, the
            # first store faults and dirties them), and msync(MS_SYNC) on a shared file
            # mapping is itself only vfs_fsync_range(file, range, datasync=1) (mm/msync.c;
            # MS_ASYNC is a no-op). So syncing our descriptors is msync without needing the
            # address torch mapped. (The BSDs and macOS have a unified buffer cache as well.)
            _datasync(self._fds[DATA])
            _datasync(self._fds[SCALES])
            assert self._sums is not None
            self._sums.set_flags(torch.cat(self._pending), 1)  # checksums first, then the flags
        self._pending.clear()
        self._writes_since_commit = 0

    def finalize(self) -> None:
        """Commit, check every row is filled, and mark the cache complete (disk: checksum
        of data + scales, then an atomic ``meta.json`` write)."""
        self._check_open()
        if self._complete and not self._pending:
            return
        self.commit()
        left = int((~self._filled).sum())
        if left:
            raise RuntimeError(f"cannot finalize the feature cache: {left} of {self.rows} rows are still missing")
        if self.path is not None:
            assert self._meta is not None
            self._meta.update(complete=True, checksum=_checksum(self.path), last_used=_now())
            write_json(self.path / META, self._meta)
            assert self._lock is not None
            self._lock.acquire(shared=True)
        self._complete = True

    # ------------------------------------------------------------------ reading
    def read(self, rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Rows [B] -> dequantised features ``[B, D_row]`` in ``dtype`` on the cache device.

        Raises :class:`CacheMissError` if any row has not been written.
        """
        self._check_open()
        rows = self._row_ids(rows)
        ok = self._filled[rows]
        if not bool(ok.all()):
            bad = rows[~ok][:8].tolist()
            raise CacheMissError(
                f"feature cache rows {bad}{'...' if int((~ok).sum()) > 8 else ''} were read "
                "before being written (extract missing() rows first)"
            )
        self._hits += rows.numel()
        return self._gather(self.data, self.scales, rows, dtype)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def stats(self) -> dict[str, Any]:
        """rows, rows_reused (filled when opened), rows_extracted (written by this process),
        hits (row reads), bytes, storage, kernels, dtype, views, digest, path."""
        return {
            "rows": self.rows,
            "rows_reused": self._rows_reused,
            "rows_extracted": int(self._written.sum()),
            "hits": self._hits,
            "bytes": self.nbytes,
            "storage": self.storage,
            "kernels": self.kernels,
            "dtype": self.key.dtype,
            "views": self.views,
            "digest": self.key.digest()[:DIGEST_CHARS],
            "path": str(self.path) if self.path is not None else None,
        }

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size() + self.rows * 4 + self.rows

    def close(self) -> None:
        """Commit pending rows and release the memory maps. Idempotent."""
        if self._closed:
            return
        self.commit()
        self._closed = True
        self.data = self.scales = self._filled = self._filled_map = self._sums = None  # type: ignore[assignment]
        self._fd_finalizer()

    def __enter__(self) -> "FeatureCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.path if self.path is not None else self.device
        return (
            f"FeatureCache({self.key.backbone}/{self.key.layer}, {self.rows}x{self.row_dim} {self.key.dtype}, "
            f"{self.storage} {where}, {self.rows - int((~self._filled).sum()) if not self._closed else '?'}"
            f"/{self.rows} filled)"
        )

    def _row_ids(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` as int64 on the cache device, each in [0, R)."""
        rows = torch.as_tensor(rows).to(device=self.device, dtype=torch.int64)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.rows):
            raise IndexError(f"rows must be in [0, {self.rows}), got [{int(rows.min())}, {int(rows.max())}]")
        return rows

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the feature cache is closed")

    def _write_staged(self, features: torch.Tensor, rows: torch.Tensor) -> None:
        # Features on another device (a GPU backbone feeding a CPU/disk cache): pool and
        # quantise where they are, then move only the [N, D_row] rows, not the [N,C,H,W] maps.
        n = features.shape[0]
        stage = torch.empty(n, self.row_dim, dtype=self.data.dtype, device=features.device)
        stage_scales = torch.empty(n, dtype=torch.float32, device=features.device)
        self._scatter(
            features,
            stage,
            stage_scales,
            torch.arange(n, device=features.device),
            self.key.pooling,
            self.key.l2_normalize,
        )
        winners = last_occurrence(rows)  # same rule as the kernel: a repeated row's last write wins
        target = rows[winners]
        self.data[target] = stage.to(self.device)[winners]
        self.scales[target] = stage_scales.to(self.device)[winners]

    def _uncommit(self, rows_cpu: torch.Tensor) -> None:
        # Rewriting a durable row: its flag must be durably cleared before the data changes,
        # or a crash mid-rewrite would leave a torn row flagged valid.
        assert self._filled_map is not None
        durable = rows_cpu[self._filled_map[rows_cpu] != 0]
        if durable.numel():
            assert self._sums is not None
            self._sums.set_flags(durable, 0)

    def _mark_incomplete(self) -> None:
        if self.path is not None:
            assert self._meta is not None and self._lock is not None
            if not self._lock.acquire(shared=False, wait=False):
                self._lock.acquire(shared=True)  # the failed conversion dropped our shared lock
                raise RuntimeError(f"cannot rewrite rows of feature cache {self.path}: other processes are reading it")
            self._meta.update(complete=False, checksum=None)
            write_json(self.path / META, self._meta)
        self._complete = False


# ---------------------------------------------------------------------- locking
_HELD: set[str] = set()  # lock files this process holds: a second open would wait on itself forever


class CacheLock:
    """Advisory ``flock`` on ``root/.locks/<name>.lock``, shared by readers of a complete
    cache and exclusive while a process creates, verifies, rebuilds or writes it. The
    kernel drops it when the process dies, so a crashed writer never blocks the next run.
    A no-op where ``fcntl`` is missing (Windows)."""

    def __init__(self, root: Path, name: str) -> None:
        lock_dir = Path(root) / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.path = lock_dir / f"{name}.lock"
        self._id = str(self.path.resolve())
        if self._id in _HELD:
            raise RuntimeError(f"feature cache {Path(root) / name} is already open in this process; close it first")
        self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        _HELD.add(self._id)

    def acquire(self, shared: bool, wait: bool = True) -> bool:
        """Take (or convert to) a shared or exclusive lock; with ``wait=False`` return False
        instead of blocking. Conversion is not atomic (flock(2)): state must be re-checked."""
        if fcntl is None or self.fd is None:
            return True
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(self.fd, op | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not wait:
                return False
        echo(f"feature cache {self.name} is in use by another process; waiting for it")
        fcntl.flock(self.fd, op)
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
            _HELD.discard(self._id)


# ---------------------------------------------------------------------- row checksums
class RowSums:
    """Checksums of a disk cache's committed rows, one per chunk, kept in ``checksums.json``.

    Chunk ``c`` is rows ``[c * chunk_rows, (c + 1) * chunk_rows)``. Its checksum covers the
    chunk's filled flags and the bytes and scales of its filled rows only, so writing rows
    that are not committed yet leaves it valid; it changes exactly when flags change, which
    goes through :meth:`set_flags`.
    """

    def __init__(
        self, path: Path, data: torch.Tensor, scales: torch.Tensor, flags: torch.Tensor, flags_fd: int
    ) -> None:
        self.path = path
        self._raw = data.view(torch.uint8)  # [R, row bytes]: any dtype as bytes (numpy has no bfloat16)
        self._scales = scales
        self._flags = flags  # the memory-mapped filled.bin
        self._fd = flags_fd
        self.rows = flags.numel()
        self.chunk_rows = max(1, _SUM_CHUNK_BYTES // (self._raw.shape[1] + 4))
        self._sums: list[str] | None = None  # of the durable state; computed when first needed

    @property
    def chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)

    def verify(self) -> None:
        """Check every chunk holding committed rows against ``checksums.json``. A chunk that
        does not match (or has no checksum) loses its flags, so its rows count as missing and
        are extracted again; one notice says how many. Needs the exclusive lock."""
        stored = self._read()
        sums: list[str] = []
        bad_rows = bad_chunks = 0
        for c in range(self.chunks):
            start, stop = self._bounds(c)
            now = self._sum(c)
            filled = int((self._flags[start:stop] != 0).sum())
            if filled and (stored is None or now not in stored[c]):
                self._flags[start:stop] = 0
                bad_rows, bad_chunks = bad_rows + filled, bad_chunks + 1
                now = self._sum(c)
            sums.append(now)
        if bad_rows:
            _datasync(self._fd)
            why = (
                f"have no checksums ({SUMS} is missing or unreadable)"
                if stored is None
                else "do not match their checksums (changed on disk after they were written)"
            )
            echo(
                f"feature cache {self.path}: {bad_rows} committed rows in {bad_chunks} "
                f"chunk{'s' if bad_chunks > 1 else ''} {why}; extracting them again"
            )
        self._sums = sums
        if stored != [[x] for x in sums]:
            self._write([[x] for x in sums])

    def set_flags(self, rows: torch.Tensor, value: int) -> None:
        """Set (1) or clear (0) the durable flags of ``rows`` (CPU int64). ``checksums.json``
        first lists each touched chunk's current and next checksum, then the flags change and
        are synced: a crash in between leaves flags matching one of the two."""
        sums = self._current()
        rows = torch.unique(rows)  # sorted
        ids, counts = torch.unique_consecutive(rows // self.chunk_rows, return_counts=True)
        after: dict[int, str] = {}
        for c, part in zip(ids.tolist(), torch.split(rows, counts.tolist())):
            start, _ = self._bounds(c)
            flags = self._flags[start : start + self.chunk_rows].clone()
            flags[part - start] = value
            after[c] = self._sum(c, flags)
        self._write([[old] if after.get(c, old) == old else [old, after[c]] for c, old in enumerate(sums)])
        self._flags[rows] = value
        _datasync(self._fd)
        for c, new in after.items():
            sums[c] = new

    def _current(self) -> list[str]:
        # A cache opened complete skips verify(): its whole-cache checksum was checked instead.
        if self._sums is None:
            self._sums = [self._sum(c) for c in range(self.chunks)]
        return self._sums

    def _bounds(self, c: int) -> tuple[int, int]:
        start = c * self.chunk_rows
        return start, min(self.rows, start + self.chunk_rows)

    def _sum(self, c: int, flags: torch.Tensor | None = None) -> str:
        start, stop = self._bounds(c)
        filled = (self._flags[start:stop] if flags is None else flags) != 0
        h = hashlib.blake2b(digest_size=16)
        h.update(filled.to(torch.uint8).numpy())
        if bool(filled.all()):
            h.update(self._raw[start:stop].numpy())  # no copy: hashes the mapped pages
            h.update(self._scales[start:stop].numpy())
        elif bool(filled.any()):
            h.update(self._raw[start:stop][filled].numpy())
            h.update(self._scales[start:stop][filled].numpy())
        return h.hexdigest()

    def _read(self) -> list[list[str]] | None:
        """The stored checksums (adopting the file's chunk size), or None if missing or invalid."""
        try:
            obj = json.loads((self.path / SUMS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(obj, dict):
            return None
        chunk_rows, chunks = obj.get("chunk_rows"), obj.get("chunks")
        if not (
            isinstance(chunk_rows, int)
            and chunk_rows >= 1
            and isinstance(chunks, list)
            and len(chunks) == -(-self.rows // chunk_rows)
            and all(isinstance(e, list) and all(isinstance(x, str) for x in e) for e in chunks)
        ):
            return None
        self.chunk_rows = chunk_rows
        return chunks

    def _write(self, chunks: list[list[str]]) -> None:
        text = json.dumps(
            {"algorithm": "blake2b-128", "chunk_rows": self.chunk_rows, "chunks": chunks}, separators=(",", ":")
        )
        write_text(self.path / SUMS, text + "\n")


# ---------------------------------------------------------------------- helpers
def check_cache_root(root: Path | str | None = None) -> str | None:
    """None if the disk feature-cache folder can be created and written, else one sentence
    naming the folder and why.

    ``root``: the folder (``strategy.cache.root``); None means :func:`default_root`
    (``$TLENGINE_CACHE_DIR/features`` or ``~/.cache/tlengine/features``). Nothing is created
    that stays: a missing folder is judged by its nearest existing ancestor, and writability
    by an anonymous temporary file that is gone when the check returns.
    """
    if root is None:
        from tlengine.cache.manage import default_root

        folder = default_root()
        hint = "set TLENGINE_CACHE_DIR or strategy.cache.root to a writable folder"
    else:
        folder = Path(root).expanduser()
        hint = "set strategy.cache.root to a writable folder"
    probe = folder
    while not probe.is_dir():
        if probe.exists() or probe.is_symlink():  # a file (or a dangling link) where a folder must be
            return f"feature cache folder {folder} cannot be created ({probe} is not a folder); {hint}"
        if probe.parent == probe:
            return f"feature cache folder {folder} cannot be created (no part of that path exists); {hint}"
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if probe == folder:
            return f"feature cache folder {folder} is not writable ({reason}); {hint}"
        return f"feature cache folder {folder} cannot be created ({probe} is not writable: {reason}); {hint}"
    return None


def row_dim_for(feature_shape: tuple[int, ...] | torch.Size, pooling: str) -> int:
    """Values per cache row for one sample's features of ``feature_shape`` ([C,H,W] or
    [T,D], no batch dimension) under ``pooling`` (see ``kernels.reference.pooled_rows``)."""
    shape = tuple(int(s) for s in feature_shape)
    if len(shape) == 3:
        c, h, w = shape
        if pooling == "cls":
            raise ValueError("pooling 'cls' needs [T,D] token features, got [C,H,W]")
        return c * h * w if pooling == "none" else c
    if len(shape) == 2:
        t, d = shape
        return t * d if pooling == "none" else d
    raise ValueError(f"feature_shape must be [C,H,W] or [T,D], got {list(shape)}")


def cache_dir_name(key: CacheKey, shard: tuple[int, int] = (0, 1)) -> str:
    """``<digest[:20]>``, or ``<digest[:20]>-r{rank}of{world}`` for a shard of a DDP run."""
    name = key.digest()[:DIGEST_CHARS]
    rank, world = shard
    return f"{name}-r{rank}of{world}" if world > 1 else name


def read_meta(path: Path) -> dict[str, Any] | None:
    """The ``meta.json`` of cache directory ``path``, or None if it is missing or not a
    feature-cache meta file."""
    try:
        meta = json.loads((Path(path) / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    needed = ("format_version", "digest", "key", "num_samples", "row_dim", "rows", "shard", "complete")
    if not isinstance(meta, dict) or any(k not in meta for k in needed):
        return None
    return meta


def remove_cache_dir(path: Path) -> None:
    """Delete a cache directory: only its own files, and only if nothing else is in it."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        raise TLEngineError(f"{path} is not a feature cache directory")
    entries = list(path.iterdir())
    foreign = [e.name for e in entries if not _is_cache_file(e)]
    if foreign:
        raise TLEngineError(
            f"{path} holds files that are not part of a feature cache ({', '.join(sorted(foreign))}); not deleting it"
        )
    for entry in entries:
        entry.unlink()
    path.rmdir()


def _is_cache_file(entry: Path) -> bool:
    if entry.is_symlink() or not entry.is_file():
        return False
    # atomic writes leave ".meta.json.XXXX.tmp" (or checksums.json) behind only if killed mid-write.
    return entry.name in CACHE_FILES or (
        entry.name.startswith((f".{META}.", f".{SUMS}.")) and entry.name.endswith(".tmp")
    )


def _identity(key: CacheKey, num_samples: int, row_dim: int, shard: tuple[int, int]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "digest": key.digest(),
        "key": key.as_dict(),
        "num_samples": num_samples,
        "views": key.views,
        "rows": num_samples * key.views,
        "row_dim": row_dim,
        "dtype": key.dtype,
        "shard": [shard[0], shard[1]],
    }


def _file_sizes(rows: int, row_dim: int, dtype: torch.dtype) -> dict[str, int]:
    elem = torch.empty(0, dtype=dtype).element_size()
    return {DATA: rows * row_dim * elem, SCALES: rows * 4, FILLED: rows}


def _prepare_dir(path: Path, identity: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
    """Validate an existing cache directory (rebuilding it if it is unusable) or create a
    fresh one; returns its meta dict."""
    if path.exists():
        problem = _check_existing(path, identity, sizes)
        if problem is None:
            meta = read_meta(path)
            assert meta is not None
            return meta
        echo(f"feature cache {path}: {problem}; deleting and rebuilding it")
        remove_cache_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        with open(path / name, "wb") as fh:
            fh.truncate(size)  # sparse zeros: unfilled rows cost no disk until written
            os.fsync(fh.fileno())
    now = _now()
    meta = {
        **identity,
        "created": now,
        "last_used": now,
        "hits": 0,
        "complete": False,
        "checksum": None,
        "bytes": sum(sizes.values()),
    }
    write_json(path / META, meta)
    _fsync_dir(path)
    return meta


def _check_existing(path: Path, identity: dict[str, Any], sizes: dict[str, int]) -> str | None:
    """None if ``path`` is a usable cache for ``identity``, else what is wrong with it."""
    meta = read_meta(path)
    if meta is None:
        return "meta.json is missing or unreadable"
    for field, want in identity.items():
        if meta.get(field) != want:
            return f"meta.json field '{field}' does not match the cache key"
    for name, size in sizes.items():
        p = path / name
        if not p.is_file() or p.stat().st_size != size:
            return f"{name} is missing or has the wrong size"
    if meta["complete"]:
        if meta.get("checksum") != _checksum(path):
            return "checksum mismatch (data.bin or scales.bin changed since it was written)"
        with open(path / FILLED, "rb") as fh:
            if fh.read().count(0):
                return "marked complete but some rows are not filled"
    return None


def _checksum(path: Path) -> str:
    # Plain reads see what the shared mappings wrote: both go through the same page cache.
    h = hashlib.blake2b(digest_size=32)
    for name in (DATA, SCALES):
        with open(path / name, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return "blake2b:" + h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some platforms/filesystems refuse fsync on directories
    finally:
        os.close(fd)


def _release(fds: dict[str, int], lock: "CacheLock | None") -> None:
    _close_fds(fds)
    if lock is not None:
        lock.release()


def _close_fds(fds: dict[str, int]) -> None:
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
