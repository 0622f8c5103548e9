"""Dataset specs that plugins register, and helpers shared by every modality."""

from .paths import existing_file, resolve_file, resolve_image_root, resolve_under
from .spec import DatasetSpec
from .splits import split_indices

__all__ = [
    "DatasetSpec",
    "existing_file",
    "resolve_file",
    "resolve_image_root",
    "resolve_under",
    "split_indices",
]
