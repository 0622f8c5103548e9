"""Checks that need the registries: names exist, dataset arguments fit, paths exist.

:func:`load_pipeline` is the one entry point: file or shipped name -> overrides -> schema
-> these checks, collecting every problem into one ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import DataConfig, PipelineConfig, apply_overrides, pydantic_errors, read_yaml
from .data.paths import resolve_under
from .errors import ConfigError, DataError, TLEngineError, UnknownNameError
from .registry import Registries


@dataclass
class LoadedPipeline:
    config: PipelineConfig
    base_dir: Path  # relative data roots and weight files are resolved here
    source: str     # the file it came from


def resolve_pipeline_file(pipeline: str, registries: Registries) -> tuple[Path, Path]:
    """(yaml file, base dir) for a path or a shipped pipeline name.

    Shipped pipelines resolve relative paths against the current directory, user files
    against their own folder.
    """
    path = Path(pipeline)
    if path.is_file():
        return path, path.resolve().parent
    if path.suffix in (".yaml", ".yml") or "/" in pipeline or path.exists():
        raise TLEngineError(f"pipeline file {pipeline} does not exist")
    entry = registries.pipelines.find(pipeline)
    if entry is None:
        raise UnknownNameError(registries.pipelines.unknown_message(pipeline)
                               + " (or give the path of a YAML file)")
    return Path(entry.obj), Path.cwd()


def load_pipeline(pipeline: str, overrides: list[str], registries: Registries) -> LoadedPipeline:
    """Read, override and validate a pipeline; raises ConfigError listing every problem."""
    file, base_dir = resolve_pipeline_file(pipeline, registries)
    data = apply_overrides(read_yaml(file), overrides)
    return LoadedPipeline(validate(data, registries, base_dir), base_dir, str(file))


def validate(data: dict[str, Any], registries: Registries, base_dir: Path) -> PipelineConfig:
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        errors = pydantic_errors(exc)
        errors += _name_errors_raw(data, registries)
        raise ConfigError(_dedupe(errors)) from None
    errors = check_pipeline(config, registries, base_dir)
    if errors:
        raise ConfigError(errors)
    return config


def _dedupe(errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for e in errors:
        if e not in seen:
            seen.add(e)
            out.append(e)
    return out


def _name_errors_raw(data: dict[str, Any], registries: Registries) -> list[tuple[str, str]]:
    """Unknown-name checks on raw data, so they are reported alongside schema errors."""
    errors = []

    def check(loc: str, value: Any, registry: Any) -> None:
        if isinstance(value, str) and value not in registry:
            errors.append((loc, registry.unknown_message(value)))

    if isinstance(data, dict):
        check("task", data.get("task"), registries.tasks)
        if isinstance(data.get("model"), dict):
            check("model.backbone", data["model"].get("backbone"), registries.backbones)
        if isinstance(data.get("data"), dict):
            check("data.dataset", data["data"].get("dataset"), registries.datasets)
        for key in ("strategy", "baseline"):
            if isinstance(data.get(key), dict):
                check(f"{key}.name", data[key].get("name"), registries.strategies)
    return errors


def check_pipeline(config: PipelineConfig, registries: Registries, base_dir: Path) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    if config.task not in registries.tasks:
        errors.append(("task", registries.tasks.unknown_message(config.task)))
    if config.model.backbone not in registries.backbones:
        errors.append(("model.backbone", registries.backbones.unknown_message(config.model.backbone)))
    errors += check_data(config.data, "data", config.task, registries, base_dir)
    if config.source is not None:
        errors += check_data(config.source.data, "source.data", config.task, registries, base_dir)
        if config.model.weights is not None:
            errors.append(("model.weights", "must be null when a source stage is given: the transfer "
                           "arms start from the source model (put initial weights in source.weights)"))
    arms = [("strategy", config.strategy)] + [(f"compare.{i}", s) for i, s in enumerate(config.compare)]
    if config.baseline:
        arms.append(("baseline", config.baseline))
    seen: dict[str, str] = {}
    for loc, arm in arms:
        if arm.name not in registries.strategies:
            errors.append((f"{loc}.name", registries.strategies.unknown_message(arm.name)))
        if arm.arm in seen or arm.arm == "source":
            errors.append((f"{loc}.label", f"arm name '{arm.arm}' is used twice (also at {seen.get(arm.arm, 'source')}); "
                           "give one of them a label"))
        seen[arm.arm] = loc
    if config.device not in ("auto", "cpu") and not config.device.startswith("cuda"):
        errors.append(("device", f"'{config.device}' is not a device; use auto, cpu, cuda or cuda:N"))
    if config.data.val_fraction + config.data.test_fraction >= 0.9:
        errors.append(("data", "val_fraction + test_fraction leave less than 10% for training"))
    return errors


def check_data(data: DataConfig, loc: str, task: str, registries: Registries, base_dir: Path
               ) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    entry = registries.datasets.find(data.dataset)
    if entry is None:
        return [(f"{loc}.dataset", registries.datasets.unknown_message(data.dataset))]
    spec = entry.obj
    if spec.task != task:
        errors.append((f"{loc}.dataset", f"dataset '{data.dataset}' is for task '{spec.task}', not '{task}'"))
    try:
        args = spec.args.model_validate(data.args)
    except ValidationError as exc:
        return errors + pydantic_errors(exc, prefix=f"{loc}.args.")
    root = data_root(data, base_dir)
    if data.root is not None and not root.is_dir():
        errors.append((f"{loc}.root", f"data root {root} does not exist or is not a directory"))
        return errors
    for field in ("path", "image_root"):
        value = getattr(args, field, None)
        if isinstance(value, str):
            try:
                target = resolve_under(root, value, what=f"{loc}.args.{field}")
            except DataError as exc:
                errors.append((f"{loc}.args.{field}", str(exc)))
                continue
            if not target.exists():
                errors.append((f"{loc}.args.{field}", f"{target} does not exist"))
    return errors


def data_root(data: DataConfig, base_dir: Path) -> Path:
    return (base_dir / data.root).resolve() if data.root else base_dir.resolve()
