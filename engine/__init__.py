"""tlengine: a plugin-based multimodal transfer-learning engine.

>>> import tlengine
>>> tlengine.list_backbones("resnet*")[:2]
['resnet101', 'resnet152']
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import ConfigError, DataError, TLEngineError, UnknownNameError, WeightsError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402


def list_backbones(pattern: str = "*") -> list[str]:
    """Registered backbone names matching a shell-style pattern (timm names too via ``timm/``)."""
    from .plugins import registries

    return registries().backbones.names(pattern)


__all__ = [
    "ConfigError",
    "DataError",
    "TLEngineError",
    "UnknownNameError",
    "WeightsError",
    "hookimpl",
    "list_backbones",
    "__version__",
]
