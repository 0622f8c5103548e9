"""Length-bucketed batches: items of similar length together, so padding stays small.

Shared by every task whose inputs vary in length (text tokens, audio clips).
"""

from __future__ import annotations

from typing import Sequence

import torch

#: a training bucket spans this many batches: sorted by length inside, shuffled across
BUCKET_BATCHES = 50


def length_buckets(
    lengths: Sequence[float],
    batch_size: int,
    *,
    seed: int,
    shuffle: bool,
    weights: torch.Tensor | None = None,
    bucket_batches: int = BUCKET_BATCHES,
) -> list[list[int]]:
    """Batches of indices into ``lengths`` (any unit: tokens, samples, seconds).

    shuffle: draw a random order (``torch.randperm`` seeded by ``seed``; with ``weights``
        [N], ``N`` indices drawn with replacement, e.g. a class-balanced draw), cut it into
        buckets of ``bucket_batches * batch_size`` items, sort each bucket by length, batch
        it, and shuffle the batches (same generator). Without it every item is sorted by
        ``(length, index)`` and batched in that order (evaluation: the least padding).
    The same arguments always give the same batches; without ``weights`` every index
    appears exactly once. The last batch of a bucket may be smaller than ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if bucket_batches < 1:
        raise ValueError(f"bucket_batches must be >= 1, got {bucket_batches}")
    lengths = list(lengths)
    n = len(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: (lengths[i], i))
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    generator = torch.Generator().manual_seed(seed)
    if weights is not None:
        order = torch.multinomial(weights, n, replacement=True, generator=generator).tolist()
    else:
        order = torch.randperm(n, generator=generator).tolist()
    span = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, n, span):
        bucket = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
