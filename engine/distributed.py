"""Running under torchrun: the process group, who writes, and how work splits across ranks.

tlengine never launches processes itself. ``torchrun --nproc-per-node N -m tlengine run
PIPELINE`` starts N copies of the same command (``tlengine run --nproc N`` is a shortcut
that execs exactly that); each one calls :func:`init_from_env`, which joins the process
group torchrun describes in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``). A plain ``tlengine run`` is a world of one, and every
helper here is then a no-op.

What the ranks share (see ARCHITECTURE.md, "Running on several processes"):

* every rank builds the same pipeline (rank 0 first, so data it generates is there for
  the others), trains the same model and ends each step with the same weights;
* rank 0 alone writes the run directory; the others learn its path from it;
* each global batch (what one process would train on) is split across the ranks
  (:func:`shard_loader`), and each rank's loss is weighted by its share of the batch, so
  the averaged gradient is the gradient of the whole batch;
* evaluation batches go whole to the ranks in turn (:func:`whole_batches`); rank 0 scores
  what they all predicted;
* feature extraction splits the rows still missing across the ranks
  (:mod:`tlengine.training.feature_cache`).

One process group serves CPU and CUDA tensors: ``cpu:gloo,cuda:nccl`` where CUDA is
present, ``gloo`` otherwise; so cache rows (CPU) travel over gloo even on a GPU cluster.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .errors import TLEngineError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run (a world of one without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank within this machine: which GPU it uses
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


_world = World()

#: how long a rank waits for the others at a collective before giving up (rank 0 alone
#: evaluates and writes, so the others wait that long at most)
DEFAULT_TIMEOUT = timedelta(minutes=60)


def world() -> World:
    """The world this process joined (``World()`` until :func:`init_from_env` found torchrun)."""
    return _world


def init_from_env(timeout: timedelta = DEFAULT_TIMEOUT) -> World:
    """Join the process group torchrun set up in the environment, once; without torchrun
    (no ``WORLD_SIZE`` above 1) return a world of one and start nothing."""
    global _world
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or _world.distributed:
        return _world
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise TLEngineError("WORLD_SIZE is set but RANK is not: start several processes with torchrun") from None
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, timeout=timeout)
    _world = World(rank, size, local_rank, backend)
    return _world


def shutdown() -> None:
    """Leave the process group (the end of a run); a world of one again."""
    global _world
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _world = World()


def barrier() -> None:
    """Wait until every rank got here."""
    if _world.distributed:
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (pickled: keep it small)."""
    if not _world.distributed:
        return obj
    box = [obj if _world.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not _world.distributed:
        return [obj]
    out: list[Any] = [None] * _world.size
    dist.all_gather_object(out, obj)
    return out


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0; None on the others."""
    if not _world.distributed:
        return [obj]
    out: list[Any] | None = [None] * _world.size if _world.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over the ranks (float64)."""
    if not _world.distributed or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def on_main(fn: Any) -> Any:
    """Run ``fn()`` on rank 0 only and hand its (picklable) result to every rank: the
    evaluation, whose metrics need every prediction together (mAP, WER), runs once."""
    if not _world.distributed:
        return fn()
    return broadcast_object(fn() if _world.is_main else None)


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block, then the others do: what rank 0 generates or downloads on
    the way (synthetic data, a kernel build) is there for them to reuse."""
    if not _world.distributed:
        yield
        return
    if not _world.is_main:
        dist.barrier()
    yield
    if _world.is_main:
        dist.barrier()


def move_tensor(tensor: torch.Tensor, src: int, dst: int | None = None) -> torch.Tensor | None:
    """Move a CPU tensor from rank ``src`` to rank ``dst`` (to every rank when None), any
    dtype (sent as bytes). ``src`` passes the tensor; receivers pass one of the same shape
    and dtype to fill and get it back; ``src`` gets its own back, other ranks None."""
    if dst is not None and _world.rank not in (src, dst):
        return None
    if not tensor.numel():
        return tensor
    raw = tensor.contiguous().reshape(tensor.shape[0], -1).view(torch.uint8)
    if dst is None:
        dist.broadcast(raw, src=src)
    elif _world.rank == src:
        dist.send(raw, dst=dst)
    else:
        dist.recv(raw, src=src)
    return raw.view(tensor.dtype).reshape(tensor.shape)


def split_rows(rows: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """Rank ``rank``'s share of ``rows``: every ``size``-th from position ``rank``. The
    shares of all ranks partition ``rows`` (each row in exactly one share)."""
    return rows[rank::size]


@dataclass
class ShardedLoader:
    """This rank's part of every batch a loader would give one process.

    ``counts[i]`` = (samples of batch ``i`` on this rank, samples in the whole batch ``i``).
    A rank whose share of a short last batch is empty gets one stand-in sample of that
    batch, counted 0 (its loss is weighted 0): every rank steps the same number of times,
    and no sample is dropped or counted twice.
    """

    loader: DataLoader
    counts: list[tuple[int, int]]
    size: int  # ranks the batches are split across

    def __iter__(self) -> Iterator[Any]:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.counts)

    def weight(self, step: int) -> float:
        """What this rank's mean loss of batch ``step`` is multiplied by so that the
        average over ranks (what DDP takes of the gradients) is the whole batch's mean."""
        mine, whole = self.counts[step]
        return mine * self.size / whole if whole else 0.0


def _batches(loader: DataLoader) -> list[list[int]]:
    """The batches (lists of dataset positions) ``loader`` gives one process, in order: drawn
    through a DataLoader like it (which takes a seed from the loader's generator before its
    sampler draws) that loads nothing."""
    positions = DataLoader(
        range(len(loader.dataset)),  # type: ignore[arg-type]
        batch_sampler=loader.batch_sampler,
        collate_fn=list,
        generator=loader.generator,
    )
    return list(positions)


def _loader_over(loader: DataLoader, batches: list[list[int]]) -> DataLoader:
    """``loader``'s dataset, collate and workers over the given batches."""
    return DataLoader(
        loader.dataset,
        batch_sampler=batches,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,  # its seed draw comes from there, as the task's loader's does
    )


def whole_batches(loader: DataLoader, w: World | None = None) -> DataLoader:
    """This rank's whole batches of ``loader``: batch i goes to rank i mod size, none split,
    none repeated (how an evaluation is shared; :func:`in_loader_order` puts them back)."""
    w = w or _world
    return _loader_over(loader, _batches(loader)[w.rank :: w.size])


def in_loader_order(per_rank: list[list[Any]]) -> list[Any]:
    """Undo :func:`whole_batches`: per-rank lists of per-batch results -> one list in batch order."""
    size, total = len(per_rank), sum(len(r) for r in per_rank)
    return [per_rank[i % size][i // size] for i in range(total)]


def shard_loader(loader: DataLoader, w: World | None = None) -> ShardedLoader:
    """Split each batch of ``loader`` (any task's: its own batch sampler, collate and
    workers are kept) across the ranks: rank r takes positions r, r+size, ... of it."""
    w = w or _world
    local, counts = [], []
    batches = _batches(loader)
    for batch in batches:
        mine = batch[w.rank :: w.size]
        counts.append((len(mine), len(batch)))
        local.append(mine or batch[:1])
    return ShardedLoader(_loader_over(loader, local), counts, w.size)
