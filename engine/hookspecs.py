"""Every hook a tlengine plugin can implement.

A plugin is a module (or object) with functions decorated by :data:`hookimpl` whose
names are hook names below. It is found through the ``tlengine`` entry-point group::

    # pyproject.toml of a plugin distribution
    [project.entry-points.tlengine]
    my_plugin = "my_package.plugin"

Registration hooks are called once per process, when the plugin manager loads, in plugin
load order; each adds components to a :class:`tlengine.registry.Registry`. Lifecycle
hooks are called by the runner while a pipeline runs; they may log or export, and must
not change the run's results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # imports for annotations only; keeps plugin import cheap
    from pathlib import Path

    from .registry import Registry

PROJECT = "tlengine"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------- registration hooks
@hookspec
def tlengine_register_tasks(tasks: "Registry") -> None:
    """Called at load time. Add :class:`tlengine.task.Task` subclasses by task name,
    e.g. ``tasks.add("image-classification", ImageClassificationTask)``."""


@hookspec
def tlengine_register_backbones(backbones: "Registry") -> None:
    """Called at load time. Add backbone factories by name (``backbones.add(name, fn)``)
    or a resolver for a whole family (``backbones.add_fallback(fn, "timm/<name>")``).
    What a factory takes and returns is defined by the task that uses it."""


@hookspec
def tlengine_register_datasets(datasets: "Registry") -> None:
    """Called at load time. Add :class:`tlengine.data.DatasetSpec` objects by name."""


@hookspec
def tlengine_register_strategies(strategies: "Registry") -> None:
    """Called at load time. Add :class:`tlengine.strategies.Strategy` subclasses by
    name (the core registers ``feature-extraction``, ``fine-tune`` and ``scratch``).

    A strategy may declare its arguments (``Args``, a pydantic model validating
    ``strategy.args``), the stage datasets it needs (``extra_data``), add parts to the
    model before training (``prepare``; parts with ``owner="strategy"`` are saved alone in
    ``own.safetensors``) and own the training step (``training_step`` returns named
    losses). See the README's plugin guide for a complete one."""


@hookspec
def tlengine_register_pipelines(pipelines: "Registry") -> None:
    """Called at load time. Add shipped pipelines: ``pipelines.add(name, path_to_yaml,
    description=...)``; ``tlengine run NAME`` then runs that file."""


@hookspec
def tlengine_register_weights(weights: "Registry") -> None:
    """Called at load time. Add named pretrained weights
    (:class:`tlengine.weights.NamedWeights`) that can be used offline or downloaded."""


# ------------------------------------------------------------------- lifecycle hooks
@hookspec
def tlengine_before_run(run_dir: "Path", config: dict[str, Any]) -> None:
    """Called once after the run directory and its ``config.yaml`` exist, before any
    training. ``config`` is the resolved pipeline as plain data. Returns nothing."""


@hookspec
def tlengine_on_epoch_end(run_dir: "Path", arm: str, epoch: int, metrics: dict[str, float]) -> None:
    """Called after each epoch of each arm (``epoch`` counts from 1) with the line just
    appended to ``metrics.jsonl`` (it also names the ``stage`` and ``seed``). Returns nothing."""


@hookspec
def tlengine_after_run(run_dir: "Path", summary: dict[str, Any]) -> None:
    """Called once after ``metrics.json`` is written; ``summary`` is its content.
    Returns nothing."""
