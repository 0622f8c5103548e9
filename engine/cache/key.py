"""What a cached feature depends on, and fingerprints of the pieces.

A ``CacheKey`` names everything that changes the features stored for a dataset: the
backbone and its exact weights, the layer tapped, the preprocessing (including the
augmentation that produces the views), the dataset, the pooling, the storage dtype and
the on-disk format. Its ``digest()`` names the cache directory, so a change to any field
is a different cache and a stale one is never read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

import torch

FORMAT_VERSION = 1
"""Bump when the files or their meaning change; old caches then stop matching."""

DIGEST_CHARS = 20
"""Length of the digest prefix used as a cache directory name."""

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
}
POOLINGS = ("avg", "max", "cls", "none")


@dataclass(frozen=True)
class CacheKey:
    """Identity of one feature cache. ``preprocessing`` must be JSON-able (it is copied
    through JSON, so tuples become lists and later edits to the caller's dict do not leak in)."""

    backbone: str
    weights_fingerprint: str
    layer: str
    preprocessing: Mapping[str, Any]
    dataset_fingerprint: str
    pooling: str
    dtype: str
    views: int = 1
    l2_normalize: bool = False
    precision: str = "fp32"  # what the frozen part computed in (tlengine.execution): bf16 features differ
    format_version: int = field(default=FORMAT_VERSION)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"cache dtype must be one of {list(DTYPES)}, got '{self.dtype}'")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}, got '{self.pooling}'")
        if isinstance(self.views, bool) or not isinstance(self.views, int) or self.views < 1:
            raise ValueError(f"views must be a positive int, got {self.views!r}")
        try:
            prep = json.loads(_canonical_json(dict(self.preprocessing)))
        except (TypeError, ValueError) as err:
            raise ValueError(f"preprocessing must be a JSON-able dict: {err}") from None
        object.__setattr__(self, "preprocessing", prep)
        object.__setattr__(self, "l2_normalize", bool(self.l2_normalize))

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (what ``meta.json`` stores as ``key``)."""
        d = asdict(self)
        d["preprocessing"] = json.loads(_canonical_json(d["preprocessing"]))
        return d

    def digest(self) -> str:
        """sha256 (64 hex chars) of the canonical JSON of ``as_dict()``."""
        return hashlib.sha256(_canonical_json(self.as_dict()).encode("utf-8")).hexdigest()

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def __hash__(self) -> int:  # the preprocessing dict is unhashable; the digest covers every field
        return hash(self.digest())


def fingerprint_state_dict(module_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """blake2b (hex) over every tensor's name, shape, dtype and bytes, in name order.

    Includes buffers (e.g. BatchNorm running statistics), which change features as much as
    weights do. Non-tensor entries are hashed by their ``repr``.
    """
    if isinstance(module_or_state_dict, torch.nn.Module):
        state = module_or_state_dict.state_dict()
    else:
        state = module_or_state_dict
    h = hashlib.blake2b(digest_size=20)
    for name in sorted(state):
        value = state[name]
        _update(h, name.encode("utf-8"))
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            _update(h, f"{tuple(t.shape)}|{t.dtype}".encode("ascii"))
            # Viewing as bytes works for every dtype (bfloat16 has no numpy counterpart).
            _update(h, memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        else:
            _update(h, repr(value).encode("utf-8"))
    return h.hexdigest()


def fingerprint_items(items: Iterable[bytes | str]) -> str:
    """blake2b (hex) over a sequence of items that identify a dataset (file names and sizes,
    content hashes, generator arguments...: the caller decides). Order matters."""
    h = hashlib.blake2b(digest_size=20)
    for item in items:
        _update(h, item.encode("utf-8") if isinstance(item, str) else bytes(item))
    return h.hexdigest()


def _update(h: Any, data: bytes | memoryview) -> None:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") hash differently.
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    h.update(size.to_bytes(8, "little"))
    h.update(data)


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
