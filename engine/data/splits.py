"""Deterministic, stratified train/val/test splits."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Hashable, Sequence


def split_indices(
    labels: Sequence[Hashable], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Split sample indices per label so every split keeps the class balance.

    Each class with at least 3 samples puts at least one in test and (if
    ``val_fraction > 0``) one in val. Same labels + fractions + seed -> same split.
    """
    by_label: dict[Hashable, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    train, val, test = [], [], []
    for label in sorted(by_label, key=str):
        idx = by_label[label][:]
        rng.shuffle(idx)
        n = len(idx)
        n_test = round(n * test_fraction)
        n_val = round(n * val_fraction)
        if n >= 3:
            n_test = max(n_test, 1 if test_fraction > 0 else 0)
            n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = min(n_test, max(n - 1, 0))
        n_val = min(n_val, max(n - 1 - n_test, 0))
        test += idx[:n_test]
        val += idx[n_test : n_test + n_val]
        train += idx[n_test + n_val :]
    return sorted(train), sorted(val), sorted(test)
