"""Feature-extraction training from a feature cache: the frozen backbone runs once.

For an arm whose strategy freezes the whole backbone, :class:`CachedFeatures` runs the
backbone once per training sample and augmented view (and once per val/test sample),
stores the features in a :class:`tlengine.cache.FeatureCache`, and from then on serves
``(features [B,D], targets [B])`` batches, so every epoch trains only the head.

A task opts in by implementing ``targets``, ``dataset_fingerprint`` and
``extraction_batches`` (see :class:`tlengine.task.Task`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..cache import CacheKey, FeatureCache, fingerprint_state_dict
from ..config import CacheConfig
from ..task import Task
from .progress import progress_bar

class HeadOnly(nn.Module):
    """Wraps a TransferModel so that ``forward(features) = head(features)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.head(features)


class _RowBatches(Dataset):
    """Index dataset whose batches are gathered from the cache in one call (``__getitems__``)."""

    def __init__(self, cache: FeatureCache, rows: torch.Tensor, targets: torch.Tensor):
        self.cache, self.rows, self.targets = cache, rows, targets

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return self.cache.read(self.rows[idx].to(self.cache.device)), self.targets[idx]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - batched path above
        feats, targets = self.__getitems__([i])
        return feats[0], targets[0]


def _identity_collate(batch: Any) -> Any:
    return batch


class CachedFeatures:
    """Builds (or reopens) the caches of one arm and serves batches from them."""

    def __init__(self, task: Task, model: nn.Module, data: Any, config: CacheConfig, *, device: torch.device,
                 seed: int, batch_size: int):
        self.task, self.model, self.data, self.config = task, model, data, config
        self.device, self.seed, self.batch_size = device, seed, batch_size
        self.caches: dict[str, FeatureCache] = {}
        self.targets: dict[str, torch.Tensor] = {}
        self.extraction_seconds = 0.0
        self.head = HeadOnly(model)
        # The data's effective preprocessing (a dataset may override e.g. crop_pct), so the
        # cached views match what the naive loop and evaluation see.
        self.preprocessing = dict(getattr(data, "info", {}).get("preprocessing") or model.preprocessing)

    # ------------------------------------------------------------------ building
    def _key(self, split: str, dataset: Dataset, views: int) -> CacheKey:
        return CacheKey(
            backbone=self.model.arch, weights_fingerprint=fingerprint_state_dict(self.model.backbone),
            layer="pooled", preprocessing={**self.preprocessing, "augmentation": self.task.cache_augmentation},
            dataset_fingerprint=f"{split}:{self.task.dataset_fingerprint(dataset)}", pooling="avg",
            dtype=self.config.dtype, views=views, l2_normalize=False)

    def prepare(self) -> None:
        """Extract every missing row of the train (``views`` per sample), val and test caches."""
        t0 = time.perf_counter()
        self.model.eval()
        storage_device = self.device if self.config.storage == "memory" else torch.device("cpu")
        for split, views in (("train", self.config.views), ("val", 1), ("test", 1)):
            dataset = getattr(self.data, split)
            n = len(dataset)
            self.targets[split] = self.task.targets(dataset)
            if n == 0:
                continue
            key = self._key(split, dataset, views)
            cache = FeatureCache.open(key, num_samples=n, row_dim=self.model.feature_dim, storage=self.config.storage,
                                      root=self._root(), device=storage_device, kernels=self.config.kernels)
            self.caches[split] = cache
            missing = cache.missing()
            if missing.numel():
                self._extract(split, dataset, cache, missing, views)
            cache.finalize()
        self.extraction_seconds = time.perf_counter() - t0

    def _root(self) -> Path | None:
        return Path(self.config.root) if self.config.root else None

    def _extract(self, split: str, dataset: Dataset, cache: FeatureCache, missing: torch.Tensor, views: int) -> None:
        missing_samples, missing_views = FeatureCache.sample_view(missing, views)
        for view in range(views):
            samples = missing_samples[missing_views == view]
            if not samples.numel():
                continue
            batches = self.task.extraction_batches(dataset, indices=samples, view=view, seed=self.seed,
                                                   batch_size=self.batch_size, preprocessing=self.preprocessing,
                                                   kernels=self.config.kernels, train=split == "train")
            total = -(-int(samples.numel()) // self.batch_size)
            desc = f"extracting {split} features" + (f" (view {view + 1}/{views})" if views > 1 else "")
            with torch.no_grad():
                for inputs, sample_idx in progress_bar(batches, desc=desc, total=total):
                    feats = self.model.backbone(inputs.to(self.device, non_blocking=True))
                    if feats.dim() == 2:  # pooled [B,D] -> one token [B,1,D]
                        feats = feats.unsqueeze(1)
                    rows = FeatureCache.row_index(sample_idx, views, view).to(cache.device)
                    # pooled on the features' device; only the rows move to the cache's
                    cache.write(feats, rows, pooling="avg", l2_normalize=False)
        cache.commit()

    # ------------------------------------------------------------------ serving
    def train_loader(self, epoch: int, *, batch_size: int, seed: int) -> DataLoader:
        """One view per sample for this epoch, shuffled by ``seed``."""
        cache, targets = self.caches["train"], self.targets["train"]
        n = targets.shape[0]
        rows = FeatureCache.row_index(torch.arange(n), cache.views, cache.draw_views(epoch, n, seed))
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(_RowBatches(cache, rows, targets), batch_size=batch_size, shuffle=True,
                          generator=generator, collate_fn=_identity_collate)

    def eval_dataset(self, split: str) -> Dataset:
        """All features of ``split`` (val/test) as a TensorDataset of (features [D], target)."""
        targets = self.targets[split]
        if split not in self.caches:
            return TensorDataset(torch.zeros(0, self.model.feature_dim), targets)
        rows = torch.arange(targets.shape[0], dtype=torch.int64, device=self.caches[split].device)
        return TensorDataset(self.caches[split].read(rows).cpu(), targets)

    def close(self) -> None:
        """Release the caches (a disk cache stays locked while open)."""
        for cache in self.caches.values():
            cache.close()

    def stats(self) -> dict[str, Any]:
        return {"extraction_seconds": round(self.extraction_seconds, 3), "storage": self.config.storage,
                "dtype": self.config.dtype, "views": self.config.views, "kernels": self.config.kernels,
                "splits": {split: cache.stats for split, cache in self.caches.items()}}

