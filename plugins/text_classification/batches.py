"""Tokenised texts, dynamic padding and length-bucketed batches.

Texts are tokenised once, when the data is built (a fast tokenizer does thousands per
second), and truncated to ``max_length``; a batch is padded only to its own longest
text, rounded up to a multiple of 8 (fewer distinct shapes, aligned bf16 kernels), so
short messages cost what they are. Batches group texts of similar length
(:class:`LengthBucketBatchSampler`), which cuts the padding further.

``padding: max_length`` pads every batch to ``max_length`` instead (what a naive loop
does; kept for the benchmark and for compiled encoders that want one shape).
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
from tlengine.data.buckets import length_buckets
from torch.utils.data import Dataset, Sampler

__all__ = ["TextDataset", "LengthBucketBatchSampler", "collate_texts", "tokenize"]

#: batches are padded to a multiple of this many tokens
PAD_MULTIPLE = 8
#: a training bucket spans this many batches: sorted by length inside, shuffled across


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text (with the special tokens), truncated to ``max_length``."""
    if not texts:
        return []
    out = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)
    return [list(ids) for ids in out["input_ids"]]


class TextDataset(Dataset):
    """Texts with labels and their token ids: item ``i`` is ``(token ids, label, text)``."""

    def __init__(self, texts: list[str], labels: list[int], token_ids: list[list[int]]):
        if not len(texts) == len(labels) == len(token_ids):
            raise ValueError("texts, labels and token ids differ in length")
        self.texts, self.labels, self.token_ids = texts, labels, token_ids

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[list[int], int, str]:
        return self.token_ids[i], self.labels[i], self.texts[i]

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.token_ids]


def collate_texts(
    samples: Sequence[tuple[list[int], int, str]], *, pad_id: int = 0, pad_to: int | None = None
) -> tuple[dict[str, Any], torch.Tensor]:
    """``[(ids, label, text)]`` -> (``{"input_ids": [B,T] int64, "attention_mask": [B,T]
    int64, "text": [B] str}``, labels [B] int64). Right padding with ``pad_id``; T is the
    longest text rounded up to a multiple of 8, or ``pad_to``."""
    longest = max(len(ids) for ids, _, _ in samples)
    t = pad_to if pad_to is not None else PAD_MULTIPLE * math.ceil(longest / PAD_MULTIPLE)
    ids = torch.full((len(samples), t), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(samples), t), dtype=torch.int64)
    for row, (tokens, _, _) in enumerate(samples):
        ids[row, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.int64)
        mask[row, : len(tokens)] = 1
    labels = torch.as_tensor([label for _, label, _ in samples], dtype=torch.int64)
    return {"input_ids": ids, "attention_mask": mask, "text": [text for _, _, text in samples]}, labels


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of indices whose texts have similar lengths, deterministic in ``seed``.

    shuffle: draw a random order (or, with ``weights``, ``len(lengths)`` indices with
        replacement, e.g. a class-balanced draw), cut it into buckets of
        ``tlengine.data.buckets.BUCKET_BATCHES`` batches, sort each bucket by length, batch it, and shuffle the
        batches; otherwise sort everything by length (evaluation, extraction: the least
        padding; the caller keeps the indices).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        weights: torch.Tensor | None = None,
    ):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle, self.seed, self.weights = shuffle, seed, weights

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        yield from length_buckets(
            self.lengths, self.batch_size, seed=self.seed, shuffle=self.shuffle, weights=self.weights
        )
