"""Typed, named registries that plugins fill through registration hooks.

A registry maps a name to a component (a task class, a backbone factory, a dataset
spec, a strategy class, a pipeline file, a weights entry). Names are looked up with
:meth:`Registry.get`, which names the unknown one and lists the known ones::

    >>> reg = Registry("backbone")
    >>> reg.add("resnet18", make_resnet18, description="torchvision ResNet-18")
    >>> reg.names("resnet*")
    ['resnet18']
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import PluginError, UnknownNameError

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """One registered component and where it came from."""

    name: str
    obj: T
    plugin: str = ""
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> component for one kind of component (``kind`` is used in messages)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._fallbacks: list[tuple[Callable[[str], T | None], str, str]] = []
        # Set by the plugin manager while a plugin's hooks run, so entries know their plugin.
        self.current_plugin: str = ""

    def add(self, name: str, obj: T, *, description: str = "", **meta: Any) -> T:
        """Register ``obj`` under ``name``; a name registered twice is a clash."""
        if name in self._entries:
            other = self._entries[name].plugin or "an earlier registration"
            raise PluginError(
                f"{self.kind} '{name}' is registered twice: by plugin '{other}' and by "
                f"plugin '{self.current_plugin or '?'}'"
            )
        self._entries[name] = Entry(name, obj, self.current_plugin, description, dict(meta))
        return obj

    def register(self, name: str, *, description: str = "", **meta: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(obj: T) -> T:
            return self.add(name, obj, description=description, **meta)

        return deco

    def add_fallback(self, resolver: Callable[[str], T | None], pattern: str) -> None:
        """Resolve names not registered one by one (e.g. every ``timm/<model>``).

        ``resolver(name)`` returns the component or None; ``pattern`` is shown to users.
        """
        self._fallbacks.append((resolver, pattern, self.current_plugin))

    def __contains__(self, name: str) -> bool:
        return self.find(name) is not None

    def find(self, name: str) -> Entry[T] | None:
        """The entry for ``name`` or None (fallback resolvers included)."""
        if name in self._entries:
            return self._entries[name]
        for resolver, _, plugin in self._fallbacks:
            obj = resolver(name)
            if obj is not None:
                return Entry(name, obj, plugin)
        return None

    def get(self, name: str) -> T:
        """The component registered as ``name``; raises UnknownNameError listing known names."""
        entry = self.find(name)
        if entry is None:
            raise UnknownNameError(self.unknown_message(name))
        return entry.obj

    def entry(self, name: str) -> Entry[T]:
        entry = self.find(name)
        if entry is None:
            raise UnknownNameError(self.unknown_message(name))
        return entry

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3)
        msg = f"unknown {self.kind} '{name}'"
        if close:
            msg += f" (did you mean {', '.join(repr(c) for c in close)}?)"
        shown = ", ".join(known[:40])
        if len(known) > 40:
            shown += f", ... ({len(known)} in all; `tlengine plugins --json` lists every one)"
        msg += f"; known: {shown or 'none'}"
        if self._fallbacks:
            msg += "; also " + ", ".join(p for _, p, _ in self._fallbacks)
        return msg

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern``, sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self) -> Iterator[Entry[T]]:
        for name in sorted(self._entries):
            yield self._entries[name]

    def remove_plugin(self, plugin: str) -> None:
        """Drop everything one plugin registered (used when its registration fails)."""
        self._entries = {k: e for k, e in self._entries.items() if e.plugin != plugin}
        self._fallbacks = [f for f in self._fallbacks if f[2] != plugin]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class Registries:
    """All registries the engine knows; one instance per plugin manager."""

    tasks: Registry[Any] = field(default_factory=lambda: Registry("task"))
    backbones: Registry[Any] = field(default_factory=lambda: Registry("backbone"))
    datasets: Registry[Any] = field(default_factory=lambda: Registry("dataset"))
    strategies: Registry[Any] = field(default_factory=lambda: Registry("strategy"))
    pipelines: Registry[Any] = field(default_factory=lambda: Registry("pipeline"))
    weights: Registry[Any] = field(default_factory=lambda: Registry("weights"))

    def all(self) -> dict[str, Registry[Any]]:
        return {
            "tasks": self.tasks,
            "backbones": self.backbones,
            "datasets": self.datasets,
            "strategies": self.strategies,
            "pipelines": self.pipelines,
            "weights": self.weights,
        }
