"""Training from a feature cache: the frozen part of the model runs once per sample.

For an arm whose strategy freezes every pretrained part, :class:`CachedFeatures` runs
``model.forward_features`` once per training sample and augmented view (and once per
val/test sample), stores what the task's :class:`tlengine.task.CacheSpec` asks for in a
:class:`tlengine.cache.FeatureCache`, and from then on serves batches of cached rows, so
every epoch trains only what comes after the frozen part (``model.forward_head``).

What is stored per sample (``CacheSpec.layout``):

* ``vector`` — the features pooled to [D] by the fused ``pool_quantize_scatter`` op
  (avg / max / cls). Padded sequences (``forward_features`` returns ``(features [N,T,D],
  lengths [N])``) pool under their mask: the mask is applied by a PyTorch pre-pass
  (padding zeroed and the mean rescaled by T/length, or set to -inf for max), and the
  pooling, cast or int8 quantisation and scatter stay fused.
* ``sequence`` — the whole [T,D] sequence (pooling ``none``), with the lengths of
  padded sequences in a second one-value-per-row cache.
* ``map`` — the whole [C,H,W] map (pooling ``none``).
* ``maps`` — several named maps (``forward_features`` returns ``{name: [N,C,H,W]}``, e.g. a
  detector backbone's strides 8/16/32), each flattened channels-last and concatenated into
  one row; served back as the same dict of [B,C,H,W] maps.

Training rows of augmented views keep the view they came from, so a task whose targets
follow the geometry (flipped boxes) adjusts them in ``Task.view_targets``.

A task opts in by implementing ``targets``, ``dataset_fingerprint`` and
``extraction_batches`` (see :class:`tlengine.task.Task`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from .. import distributed
from ..cache import CacheKey, FeatureCache, fingerprint_state_dict
from ..cache.store import remove_cache_dir
from ..config import CacheConfig
from ..errors import TLEngineError
from ..execution import InputFormat
from ..task import CacheSpec, Task, to_device
from .progress import progress_bar


class HeadOnly(nn.Module):
    """Wraps a TransferModel so that calling it runs ``model.forward_head`` on cached inputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        return self.model.forward_head(inputs, *args, **kwargs)


#: samples of the first extraction batch, which also checks reduced precision against fp32
PROBE_SAMPLES = 8


def _take(targets: Any, idx: torch.Tensor) -> Any:
    if isinstance(targets, torch.Tensor):
        return targets[idx]
    return [targets[i] for i in idx.tolist()]


class _RowBatches(Dataset):
    """Index dataset whose batches are gathered from the cache in one call (``__getitems__``)."""

    def __init__(
        self, served: "CachedFeatures", split: str, rows: torch.Tensor, targets: Any, views: torch.Tensor | None = None
    ):
        self.served, self.split, self.rows, self.targets, self.views = served, split, rows, targets, views

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitems__(self, indices: list[int]) -> tuple[Any, Any]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        targets = _take(self.targets, idx)
        if self.views is not None:
            targets = self.served.task.view_targets(targets, self.views[idx])
        return self.served.inputs(self.split, self.rows[idx]), targets

    def __getitem__(self, i: int) -> tuple[Any, Any]:  # pragma: no cover - batched path above
        return self.__getitems__([i])


def _missing(cache: FeatureCache, lengths: FeatureCache | None) -> torch.Tensor:
    """Rows (CPU int64, ascending) missing from a cache or from its lengths cache."""
    missing = cache.missing()
    return missing if lengths is None else torch.unique(torch.cat([missing, lengths.missing()]))


def _move_rows(cache: FeatureCache, rows: torch.Tensor, src: int, dst: int | None) -> None:
    """Copy ``rows`` of rank ``src``'s ``cache`` into the same rows of rank ``dst``'s (of
    every rank's when ``dst`` is None), as stored (no re-quantisation)."""
    world = distributed.world()
    if world.rank == src:
        data, scales = cache.rows_of(rows)
    else:
        data = torch.empty(rows.numel(), cache.row_dim, dtype=cache.data.dtype)
        scales = torch.empty(rows.numel(), dtype=torch.float32)
    data = distributed.move_tensor(data, src, dst)
    scales = distributed.move_tensor(scales, src, dst)
    if world.rank != src and data is not None and scales is not None:
        cache.put_rows(rows, data, scales)


def trains_from_cache(task: Task, strategy: Any) -> bool:
    """Whether an arm trains from the feature cache: its strategy freezes every pretrained
    part for the whole run, its cache is enabled and its task supports the cache."""
    return strategy.frozen_backbone and strategy.config.cache.enabled and task.supports_feature_cache


def _identity_collate(batch: Any) -> Any:
    return batch


def _flatten_maps(maps: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, int, int]]) -> torch.Tensor:
    """``{name: [B,C,H,W]}`` -> [B, sum(C*H*W)], each map channels-last ([H,W,C] per sample),
    in the order (and with the shapes) the probe recorded."""
    if list(maps) != list(shapes) or any(tuple(m.shape[1:]) != shapes[n] for n, m in maps.items()):
        got = {n: list(m.shape[1:]) for n, m in maps.items()}
        raise TLEngineError(f"feature maps changed shape between batches: {got}, expected {dict(shapes)}")
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1) for m in maps.values()], dim=1)


def _unflatten_maps(flat: torch.Tensor, shapes: Mapping[str, tuple[int, int, int]]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`_flatten_maps`: [B, sum(C*H*W)] -> ``{name: [B,C,H,W]}`` (channels-last views)."""
    out, start = {}, 0
    for name, (c, h, w) in shapes.items():
        size = c * h * w
        out[name] = flat[:, start : start + size].reshape(-1, h, w, c).permute(0, 3, 1, 2)
        start += size
    return out


def fit_tokens(features: torch.Tensor, lengths: torch.Tensor, max_tokens: int) -> torch.Tensor:
    """Padded sequences [N,T,D] -> [N,max_tokens,D]: positions past each length zeroed (so a
    row does not depend on how its batch was padded), then padded or cut to ``max_tokens``."""
    if int(lengths.max()) > max_tokens:
        raise TLEngineError(
            f"a sequence of {int(lengths.max())} tokens is longer than the cache's max_tokens ({max_tokens})"
        )
    t = features.shape[1]
    mask = torch.arange(t, device=features.device)[None, :] < lengths.to(features.device)[:, None]
    features = features * mask[..., None].to(features.dtype)
    if t >= max_tokens:
        return features[:, :max_tokens]
    return torch.nn.functional.pad(features, (0, 0, 0, max_tokens - t))


def masked_for_pooling(features: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """The PyTorch pre-pass that makes the unmasked fused pooling of padded sequences
    [N,T,D] equal their masked pooling: avg — padding zeroed, scaled by T/length; max —
    padding set to -inf; cls — unchanged (position 0 is never padding)."""
    if pooling == "cls":
        return features
    t = features.shape[1]
    mask = torch.arange(t, device=features.device)[None, :] < lengths.to(features.device)[:, None]
    if pooling == "max":
        return features.masked_fill(~mask[..., None], float("-inf"))
    scale = (t / lengths.clamp(min=1).to(features.device, torch.float32)).to(features.dtype)
    return features * mask[..., None].to(features.dtype) * scale[:, None, None]


class CachedFeatures:
    """Builds (or reopens) the caches of one arm and serves batches from them."""

    def __init__(
        self,
        task: Task,
        model: nn.Module,
        data: Any,
        config: CacheConfig,
        *,
        device: torch.device,
        seed: int,
        batch_size: int,
        num_workers: int = 0,
    ):
        self.task, self.model, self.data, self.config = task, model, data, config
        self.device, self.seed, self.batch_size = device, seed, batch_size
        self.num_workers = num_workers
        self.spec: CacheSpec = task.cache_spec(model)
        self.caches: dict[str, FeatureCache] = {}
        self.length_caches: dict[str, FeatureCache] = {}
        self.targets: dict[str, Any] = {}
        self.sample_shape: tuple[int, ...] = ()
        #: ``maps`` layout: name -> (C, H, W) of each map, in row order
        self.map_shapes: dict[str, tuple[int, int, int]] = {}
        self.extraction_seconds = 0.0
        #: split -> rows this process ran the frozen part for (its share under torchrun)
        self.rows_extracted: dict[str, int] = {}
        self.rows_by_rank: list[dict[str, int]] = []
        self.head = HeadOnly(model)
        # The data's effective preprocessing (a dataset may override e.g. crop_pct), so the
        # cached views match what the naive loop and evaluation see.
        self.preprocessing = dict(getattr(data, "info", {}).get("preprocessing") or model.preprocessing)

    # ------------------------------------------------------------------ building
    @property
    def _pooling(self) -> str:
        return self.spec.pooling if self.spec.layout == "vector" else "none"

    def _frozen_fingerprint(self) -> str:
        frozen = nn.ModuleList([p.module for p in self.model.pretrained_parts])
        return fingerprint_state_dict(frozen)

    def _key(self, split: str, dataset: Dataset, views: int, layer: str, pooling: str, dtype: str) -> CacheKey:
        return CacheKey(
            backbone=self.model.arch,
            weights_fingerprint=self._fingerprint,
            layer=layer,
            preprocessing={**self.preprocessing, "augmentation": self.task.cache_augmentation},
            dataset_fingerprint=f"{split}:{self.task.dataset_fingerprint(dataset)}",
            pooling=pooling,
            dtype=dtype,
            views=views,
            l2_normalize=self.spec.l2_normalize and layer == self.spec.layout,
            precision=self._precision,
        )

    @property
    def _execution(self) -> Any:
        return getattr(self.model, "execution", None)

    @property
    def _precision(self) -> str:
        """What the frozen parts compute in (known after the probe's precision check)."""
        if self._execution is None:
            return "fp32"
        names = [p.name for p in self.model.pretrained_parts]
        return (
            ",".join(
                sorted({self._execution.parts[n].stats()["precision"] for n in names if n in self._execution.parts})
            )
            or "fp32"
        )

    def _input_format(self) -> InputFormat:
        return self._execution.input_format() if self._execution is not None else InputFormat()

    def _forward(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.model.forward_features(inputs)
        if isinstance(out, Mapping):  # named maps -> one row [B,1,sum(C*H*W)], each map channels-last
            return _flatten_maps(out, self.map_shapes).unsqueeze(1), None
        feats, lengths = out if isinstance(out, tuple) else (out, None)
        if feats.dim() == 2:  # pooled [B,D] -> one token [B,1,D]
            feats = feats.unsqueeze(1)
        if lengths is not None and self.spec.layout == "vector":
            feats, lengths = masked_for_pooling(feats, lengths, self.spec.pooling), None
        if lengths is not None:  # sequence rows: a fixed number of tokens, padding zeroed
            feats = fit_tokens(feats, lengths, self._max_tokens())
        return feats, lengths

    def _max_tokens(self) -> int:
        if not self.spec.max_tokens:
            raise TLEngineError(
                f"task '{self.task.name}' caches padded sequences but its cache_spec sets no "
                "max_tokens (the fixed number of tokens per cache row)"
            )
        return self.spec.max_tokens

    def _probe(self, dataset: Dataset) -> tuple[tuple[int, ...], bool]:
        """Per-sample shape of the frozen part's output, and whether it has lengths. This is
        the frozen part's first call, so it is also the reduced-precision check (on up to
        ``PROBE_SAMPLES`` samples), which decides the cache key's precision."""
        n = min(PROBE_SAMPLES, len(dataset))
        inputs, _ = next(
            iter(
                self.task.extraction_batches(
                    dataset,
                    indices=torch.arange(n),
                    view=0,
                    seed=self.seed,
                    batch_size=n,
                    preprocessing=self.preprocessing,
                    kernels=self.config.kernels,
                    train=False,
                    input_format=self._input_format(),
                    num_workers=0,
                )
            )
        )
        with torch.no_grad():
            out = self.model.forward_features(to_device(inputs, self.device))
        if isinstance(out, Mapping):
            if self.spec.layout != "maps":
                raise TLEngineError(
                    f"task '{self.task.name}': forward_features returned named maps but cache_spec's layout is "
                    f"'{self.spec.layout}' (use 'maps')"
                )
            self.map_shapes = {name: tuple(int(d) for d in m.shape[1:]) for name, m in out.items()}
            return (1, sum(c * h * w for c, h, w in self.map_shapes.values())), False
        feats = out[0] if isinstance(out, tuple) else out
        shape = tuple(feats.shape[1:]) if feats.dim() > 2 else (1, int(feats.shape[1]))
        has_lengths = isinstance(out, tuple) and self.spec.layout == "sequence"
        if has_lengths:
            shape = (self._max_tokens(), *shape[1:])
        return shape, has_lengths

    def _row_dim_of(self, shape: tuple[int, ...]) -> int:
        if self._pooling == "none":
            return int(torch.tensor(shape).prod())
        return int(shape[0] if len(shape) == 3 else shape[-1])

    def prepare(self) -> None:
        """Extract every missing row of the train (``views`` per sample), val and test caches.

        Under torchrun the rows still missing are split across the ranks
        (:func:`tlengine.distributed.split_rows`), each rank runs the frozen part on its
        share only, and the rows are then exchanged: a memory cache ends whole on every
        rank; a disk cache is rank 0's, with the other ranks' shares written first to
        shard caches of their own (durable: a killed extraction resumes from them, see
        :meth:`FeatureCache.absorb_shards`) and sent to rank 0, whose whole cache every
        rank then reads (one machine, or storage all machines share)."""
        t0 = time.perf_counter()
        self.model.eval()
        self._fingerprint = self._frozen_fingerprint()
        world = distributed.world()
        self._storage_device = self.device if self.config.storage == "memory" else torch.device("cpu")
        self.sample_shape, self._has_lengths = self._probe(self.data.train)
        self._row_dim = self._row_dim_of(self.sample_shape)
        splits = {"train": self.config.views, "val": 1, "test": 1}
        # Who holds a whole cache while extracting: every rank in memory, rank 0 alone on disk.
        holds_whole = world.is_main or self.config.storage == "memory"
        opened, missing = {}, {}
        for split, views in splits.items():  # open every cache first: what is missing tells compile: auto what is left
            dataset = getattr(self.data, split)
            self.targets[split] = self.task.targets(dataset)
            if len(dataset) and holds_whole:
                opened[split] = self._open(split, views)
                self.caches[split], lengths = opened[split]
                if lengths is not None:
                    self.length_caches[split] = lengths
                missing[split] = _missing(*opened[split])
        missing = distributed.broadcast_object(missing)  # every rank splits the same rows
        if self._execution is not None:
            self._execution.expect(sum(int(m.numel()) for m in missing.values()) // world.size)
        for split, rows in missing.items():
            dataset, views = getattr(self.data, split), splits[split]
            if world.distributed:
                self._extract_shared(split, views, opened.get(split), rows)
            elif rows.numel():
                self._extract(split, dataset, *opened[split], rows, views)
                self.rows_extracted[split] = int(rows.numel())
            for cache in opened.get(split, ()):
                if cache is not None:
                    cache.finalize()
        if world.distributed and self.config.storage == "disk":
            distributed.barrier()  # rank 0 finalized every cache: the others read it from here on
            if not holds_whole:
                for split in missing:
                    self.caches[split], lengths = self._open(split, splits[split])
                    if lengths is not None:
                        self.length_caches[split] = lengths
        self.rows_by_rank = distributed.all_gather_objects(self.rows_extracted)
        self.extraction_seconds = time.perf_counter() - t0

    def _open(
        self, split: str, views: int, shard: tuple[int, int] = (0, 1)
    ) -> tuple[FeatureCache, FeatureCache | None]:
        """(cache, lengths cache or None) of one split; on disk, rows that a sharded
        extraction left in shard caches come in first."""
        dataset = getattr(self.data, split)
        open_args = dict(
            num_samples=len(dataset),
            storage=self.config.storage,
            root=self._root(),
            device=self._storage_device,
            kernels=self.config.kernels,
            shard=shard,
        )
        key = self._key(split, dataset, views, self.spec.layout, self._pooling, self.config.dtype)
        cache = FeatureCache.open(key, row_dim=self._row_dim, **open_args)
        lengths = None
        if self._has_lengths:
            lkey = self._key(split, dataset, views, "lengths", "none", "float32")
            lengths = FeatureCache.open(lkey, row_dim=1, **open_args)
        for c in (cache, lengths):
            if c is not None and not c.is_complete:
                c.absorb_shards()
        return cache, lengths

    def _extract_shared(
        self,
        split: str,
        views: int,
        whole: tuple[FeatureCache, FeatureCache | None] | None,
        missing: torch.Tensor,
    ) -> None:
        """One rank's part of a sharded extraction of ``missing`` rows, then the exchange."""
        if not missing.numel():  # every rank sees the same rows: nothing to split, nothing to exchange
            return
        world = distributed.world()
        mine = distributed.split_rows(missing, world.rank, world.size)
        # rank 0 (or a memory cache) writes into the whole cache; other disk ranks into a
        # shard of their own, which survives a kill of this rank
        target = whole if whole is not None else self._open(split, views, shard=(world.rank, world.size))
        todo = mine[torch.isin(mine, _missing(*target))]
        if todo.numel():
            self._extract(split, getattr(self.data, split), *target, todo, views)
        self.rows_extracted[split] = int(todo.numel())
        to_all = self.config.storage == "memory"  # memory: every rank needs every row; disk: rank 0 does
        for cache in target:
            for src in range(world.size):
                rows = distributed.split_rows(missing, src, world.size)
                if cache is not None and rows.numel() and (to_all or src != 0):
                    _move_rows(cache, rows, src, None if to_all else 0)
        if whole is None:  # our rows are committed in rank 0's cache once it passed this barrier
            distributed.barrier()
            for cache in target:
                if cache is not None:
                    path = cache.path
                    cache.close()
                    remove_cache_dir(path)
        elif not to_all:
            for cache in target:
                if cache is not None:
                    cache.commit()
            distributed.barrier()

    def _root(self) -> Path | None:
        return Path(self.config.root) if self.config.root else None

    def _extract(
        self,
        split: str,
        dataset: Dataset,
        cache: FeatureCache,
        lengths_cache: FeatureCache | None,
        missing: torch.Tensor,
        views: int,
    ) -> None:
        missing_samples, missing_views = FeatureCache.sample_view(missing, views)
        for view in range(views):
            samples = missing_samples[missing_views == view]
            if not samples.numel():
                continue
            batches = self.task.extraction_batches(
                dataset,
                indices=samples,
                view=view,
                seed=self.seed,
                batch_size=self.batch_size,
                preprocessing=self.preprocessing,
                kernels=self.config.kernels,
                train=split == "train",
                input_format=self._input_format(),
                num_workers=self.num_workers,
            )
            total = -(-int(samples.numel()) // self.batch_size)
            desc = f"extracting {split} features" + (f" (view {view + 1}/{views})" if views > 1 else "")
            with torch.no_grad():
                for inputs, sample_idx in progress_bar(batches, desc=desc, total=total):
                    feats, lengths = self._forward(to_device(inputs, self.device))
                    rows = FeatureCache.row_index(sample_idx, views, view).to(cache.device)
                    # pooled on the features' device; only the rows move to the cache's
                    cache.write(feats, rows, pooling=self._pooling, l2_normalize=cache.key.l2_normalize)
                    if lengths_cache is not None:
                        lengths_cache.write(lengths.to(torch.float32).reshape(-1, 1, 1), rows.to(lengths_cache.device))
        cache.commit()
        if lengths_cache is not None:
            lengths_cache.commit()

    # ------------------------------------------------------------------ serving
    def inputs(self, split: str, rows: torch.Tensor) -> Any:
        """What ``model.forward_head`` takes for cache ``rows`` of ``split``."""
        cache = self.caches[split]
        flat = cache.read(rows.to(cache.device))
        if self.spec.layout == "map":  # stored token-major ([H*W, C], see pool_quantize_scatter)
            c, h, w = self.sample_shape
            feats = flat.reshape(-1, h, w, c).permute(0, 3, 1, 2)  # [B,C,H,W], channels-last in memory
        elif self.spec.layout == "maps":
            feats = _unflatten_maps(flat, self.map_shapes)
        else:
            shape = (flat.shape[1],) if self.spec.layout == "vector" else self.sample_shape
            feats = flat.reshape(flat.shape[0], *shape)
        lengths = None
        if split in self.length_caches:
            lengths = self.length_caches[split].read(rows).reshape(-1).round().to(torch.int64)
        return self.task.cached_inputs(feats, lengths)

    def train_loader(self, epoch: int, *, batch_size: int, seed: int) -> DataLoader:
        """One view per sample for this epoch, shuffled by ``seed`` (or drawn by the task's
        ``sample_weights``, e.g. class-balanced)."""
        cache, targets = self.caches["train"], self.targets["train"]
        n = len(targets)
        rows = FeatureCache.row_index(torch.arange(n), cache.views, cache.draw_views(epoch, n, seed))
        generator = torch.Generator().manual_seed(seed)
        weights = self.task.sample_weights(self.data.train)
        sampler = WeightedRandomSampler(weights, n, generator=generator) if weights is not None else None
        views = rows % cache.views if cache.views > 1 else None
        return DataLoader(
            _RowBatches(self, "train", rows, targets, views),
            batch_size=batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=generator,
            collate_fn=_identity_collate,
        )

    def eval_loader(self, split: str, *, batch_size: int) -> DataLoader:
        """Every cached row of ``split`` (val/test) in sample order."""
        targets = self.targets[split]
        rows = torch.arange(len(targets), dtype=torch.int64)
        return DataLoader(
            _RowBatches(self, split, rows, targets), batch_size=batch_size, shuffle=False, collate_fn=_identity_collate
        )

    def split_size(self, split: str) -> int:
        return len(self.targets.get(split, []))

    def close(self) -> None:
        """Release the caches (a disk cache stays locked while open)."""
        for cache in [*self.caches.values(), *self.length_caches.values()]:
            cache.close()

    def stats(self) -> dict[str, Any]:
        return {
            "extraction_seconds": round(self.extraction_seconds, 3),
            "storage": self.config.storage,
            "dtype": self.config.dtype,
            "views": self.config.views,
            "kernels": self.config.kernels,
            "precision": self._precision,
            "layout": dataclasses.asdict(self.spec),
            "sample_shape": list(self.sample_shape),
            "splits": {split: cache.stats for split, cache in self.caches.items()},
            # rows each rank ran the frozen part for, per split (one entry without torchrun)
            "rows_extracted_by_rank": self.rows_by_rank,
        }
