"""Feature cache: frozen-backbone features extracted once, reused by every later epoch.

``CacheKey`` says what the features depend on, ``FeatureCache`` stores them (memory or
memory-mapped disk, crash-safe and resumable), ``list_caches`` / ``remove_caches`` manage
the on-disk caches under ``default_root()``; ``check_cache_root`` says (in one sentence) why
a disk-cache folder could not be used, before anything is written.
"""

from tlengine.cache.key import FORMAT_VERSION, CacheKey, fingerprint_items, fingerprint_state_dict
from tlengine.cache.manage import default_root, format_size, list_caches, remove_caches
from tlengine.cache.store import CacheMissError, CacheWarning, FeatureCache, check_cache_root, row_dim_for

__all__ = [
    "FORMAT_VERSION",
    "CacheKey",
    "CacheMissError",
    "CacheWarning",
    "FeatureCache",
    "check_cache_root",
    "default_root",
    "fingerprint_items",
    "fingerprint_state_dict",
    "format_size",
    "list_caches",
    "remove_caches",
    "row_dim_for",
]
