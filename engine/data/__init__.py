"""Dataset specs that plugins register, and helpers shared by every modality."""

from .buckets import length_buckets
from .paths import existing_file, resolve_file, resolve_image_root, resolve_under
from .spec import DatasetSpec
from .splits import split_indices

__all__ = [
    "DatasetSpec",
    "existing_file",
    "length_buckets",
    "resolve_file",
    "resolve_image_root",
    "resolve_under",
    "split_indices",
]
