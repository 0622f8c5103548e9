"""Finds plugins through the ``tlengine`` entry-point group and fills the registries.

Builtin plugins are listed in tlengine's own ``[project.entry-points.tlengine]``, so
there is one discovery path for everything. Each plugin is loaded and registered on its
own: one that fails to import, or registers a name another plugin already has, is
recorded with a one-line error naming it, its distribution and its entry point, and the
others keep working.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import TLEngineError
from .registry import Registries

REGISTRATION_HOOKS = {
    "tasks": "tlengine_register_tasks",
    "backbones": "tlengine_register_backbones",
    "datasets": "tlengine_register_datasets",
    "strategies": "tlengine_register_strategies",
    "pipelines": "tlengine_register_pipelines",
    "weights": "tlengine_register_weights",
}


@dataclass
class PluginInfo:
    """What ``tlengine plugins`` shows about one plugin."""

    name: str
    distribution: str
    version: str
    entry_point: str
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "registered": self.registered,
            "error": self.error,
        }


class PluginManager:
    """Holds the pluggy manager, the registries and what each plugin did."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registries = Registries()
        self.plugins: list[PluginInfo] = []

    @property
    def hook(self) -> Any:
        return self.pm.hook

    @property
    def errors(self) -> list[str]:
        return [p.error for p in self.plugins if p.error]

    def load_entry_points(self, group: str = hookspecs.PROJECT) -> None:
        """Import and register every plugin advertised under the entry-point ``group``."""
        eps = sorted(md.entry_points(group=group), key=lambda ep: (ep.dist.name if ep.dist else "", ep.name))
        # The core first, so builtin names win and third-party clashes are reported on the newcomer.
        eps.sort(key=lambda ep: 0 if (ep.dist and ep.dist.name == "tlengine") else 1)
        seen: set[str] = set()
        for ep in eps:
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            info = PluginInfo(ep.name, dist, version, f"{ep.name} = {ep.value}")
            self.plugins.append(info)
            if ep.name in seen:
                info.error = (
                    f"plugin '{ep.name}' (distribution {dist}, entry point '{info.entry_point}') "
                    f"uses a plugin name that another distribution already uses; it was skipped"
                )
                continue
            seen.add(ep.name)
            try:
                module = ep.load()
            except Exception as exc:  # any import failure of third-party code
                info.error = (
                    f"plugin '{ep.name}' (distribution {dist}, entry point '{info.entry_point}') "
                    f"failed to import: {type(exc).__name__}: {exc}"
                )
                continue
            self.register(module, info)

    def register(self, plugin: ModuleType | object, info: PluginInfo) -> None:
        """Register one plugin object and run its registration hooks into the registries.

        On failure everything this plugin registered is removed again and ``info.error``
        says why; the other plugins are untouched.
        """
        if info not in self.plugins:
            self.plugins.append(info)
        try:
            self.pm.register(plugin, name=info.name)
        except Exception as exc:
            info.error = f"plugin '{info.name}' (distribution {info.distribution}) is invalid: {exc}"
            return
        regs = self.registries.all()
        try:
            for kind, hook_name in REGISTRATION_HOOKS.items():
                registry = regs[kind]
                before = set(registry.names())
                registry.current_plugin = info.name
                try:
                    for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                        if impl.plugin is plugin:
                            impl.function(registry)
                finally:
                    registry.current_plugin = ""
                added = sorted(set(registry.names()) - before)
                if added:
                    info.registered[kind] = added
        except Exception as exc:
            for registry in regs.values():
                registry.remove_plugin(info.name)
            self.pm.unregister(plugin)
            info.registered = {}
            reason = str(exc) if isinstance(exc, TLEngineError) else f"{type(exc).__name__}: {exc}"
            info.error = (
                f"plugin '{info.name}' (distribution {info.distribution}, entry point "
                f"'{info.entry_point}') failed to register: {reason}"
            )

    def warn_errors(self, stream: Any = None) -> None:
        """Print one line per broken plugin (to stderr), once."""
        stream = stream or sys.stderr
        for err in self.errors:
            print(f"warning: {err}", file=stream)


_MANAGER: PluginManager | None = None


def get_plugin_manager(*, reload: bool = False) -> PluginManager:
    """The process-wide plugin manager with every installed plugin loaded."""
    global _MANAGER
    if _MANAGER is None or reload:
        manager = PluginManager()
        manager.load_entry_points()
        _MANAGER = manager
    return _MANAGER


def registries() -> Registries:
    """Shortcut for ``get_plugin_manager().registries``."""
    return get_plugin_manager().registries
