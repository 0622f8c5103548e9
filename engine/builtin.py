"""The core's own plugin: registers the builtin strategies through the same hooks and
entry-point group (``core = "tlengine.builtin"``) that any third-party plugin uses."""

from __future__ import annotations

from .hookspecs import hookimpl
from .registry import Registry
from .strategies import BUILTIN_STRATEGIES


@hookimpl
def tlengine_register_strategies(strategies: Registry) -> None:
    for name, cls in BUILTIN_STRATEGIES.items():
        strategies.add(name, cls, description=(cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "")
