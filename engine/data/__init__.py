"""Dataset specs that plugins register, and helpers shared by every modality."""

from .paths import resolve_under
from .spec import DatasetSpec
from .splits import split_indices

__all__ = ["DatasetSpec", "resolve_under", "split_indices"]
