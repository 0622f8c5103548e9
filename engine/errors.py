"""Errors a user can cause and fix.

Every exception here carries one plain sentence saying what is wrong and where. The CLI
prints that sentence (no traceback unless ``--debug``) and exits non-zero. Anything that
is *not* a ``TLEngineError`` is a bug in tlengine or a plugin and keeps its traceback.
"""

from __future__ import annotations


class TLEngineError(Exception):
    """A problem with the user's input or environment. ``str(err)`` is the message."""

    exit_code = 1


class ConfigError(TLEngineError):
    """One or more problems in a pipeline config, each as (dotted.field, reason)."""

    exit_code = 2

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = list(errors)
        super().__init__("\n".join(f"config error: {loc}: {msg}" for loc, msg in self.errors))


class UnknownNameError(TLEngineError):
    """A name (backbone, task, dataset, ...) that no registered plugin provides."""

    exit_code = 2


class DataError(TLEngineError):
    """Missing, empty, corrupt or inconsistent data."""


class WeightsError(TLEngineError):
    """Pretrained weights that cannot be found, loaded, or do not fit the model."""


class PluginError(TLEngineError):
    """A plugin that failed to import or to register its components."""


class RunError(TLEngineError):
    """A run directory that cannot be created, written, or resumed."""
