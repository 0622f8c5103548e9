"""Checks that need the registries: names exist, dataset arguments fit, paths exist.

:func:`load_pipeline` is the one entry point: file or shipped name -> overrides -> schema
-> these checks, collecting every problem into one ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import DataConfig, PipelineConfig, StrategyConfig, apply_overrides, pydantic_errors, read_yaml
from .data.paths import resolve_under
from .errors import ConfigError, DataError, TLEngineError, UnknownNameError
from .plan import StagePlan, plan_stages
from .registry import Registries


@dataclass
class LoadedPipeline:
    config: PipelineConfig
    base_dir: Path  # relative data roots and weight files are resolved here
    source: str  # the file it came from


def resolve_pipeline_file(pipeline: str, registries: Registries) -> tuple[Path, Path]:
    """(yaml file, base dir) for a path or a shipped pipeline name.

    Relative paths written in a pipeline file (``data.root``, data files, weight files)
    resolve against the file's own folder, for user files and shipped pipelines alike (a
    shipped pipeline's example data sits beside it); paths typed as overrides resolve
    against the current directory (see :func:`load_pipeline`).
    """
    path = Path(pipeline)
    if path.is_file():
        return path, path.resolve().parent
    if path.is_dir():
        hint = f"; to continue that run use `tlengine run --resume {pipeline}`" if (path / "run.json").is_file() else ""
        raise TLEngineError(f"pipeline {pipeline} is a directory, not a YAML file{hint}")
    if path.suffix in (".yaml", ".yml") or "/" in pipeline or path.exists():
        raise TLEngineError(f"pipeline file {pipeline} does not exist")
    entry = registries.pipelines.find(pipeline)
    if entry is None:
        raise UnknownNameError(registries.pipelines.unknown_message(pipeline) + " (or give the path of a YAML file)")
    return Path(entry.obj), Path(entry.obj).resolve().parent


def load_pipeline(pipeline: str, overrides: list[str], registries: Registries) -> LoadedPipeline:
    """Read, override and validate a pipeline; raises ConfigError listing every problem."""
    file, base_dir = resolve_pipeline_file(pipeline, registries)
    data = apply_overrides(read_yaml(file), [_override_from_cwd(item) for item in overrides])
    return LoadedPipeline(validate(data, registries, base_dir), base_dir, str(file))


#: override keys whose relative values are paths: typed on the command line, they mean the current directory
_PATH_KEYS = ("data.root", "model.weights")


def _override_from_cwd(item: str) -> str:
    """``data.root=folder`` (also per stage / extra dataset) -> an absolute path against the
    current directory; ``model.weights=path`` too when that path exists there (not a name)."""
    key, sep, value = item.partition("=")
    if not sep or not value or not key.endswith(_PATH_KEYS):
        return item
    path = Path(value).expanduser()
    if path.is_absolute() or (key.endswith("model.weights") and not path.exists()):
        return item
    return f"{key}={path.resolve()}"


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
        for i, arm in enumerate(data.get("compare") or []):
            if isinstance(arm, dict):
                check(f"compare.{i}.name", arm.get("name"), registries.strategies)
    return errors


def _arm_locs(stage: StagePlan) -> list[str]:
    n_compare = len(stage.arms) - 1 - (1 if stage.baseline is not None else 0)
    locs = [stage.where("strategy")] + [stage.where(f"compare.{i}") for i in range(n_compare)]
    return locs + ([stage.where("baseline")] if stage.baseline is not None else [])


def check_pipeline(config: PipelineConfig, registries: Registries, base_dir: Path) -> list[tuple[str, str]]:
    """Every problem of a schema-valid pipeline that needs the registries or the disk."""
    try:
        stages = plan_stages(config)
    except ConfigError as exc:
        return exc.errors
    errors: list[tuple[str, str]] = []
    if config.seeds and len(set(config.seeds)) != len(config.seeds):
        errors.append(("seeds", "lists a seed twice"))
    if config.device not in ("auto", "cpu") and not config.device.startswith("cuda"):
        errors.append(("device", f"'{config.device}' is not a device; use auto, cpu, cuda or cuda:N"))
    seen_stages: list[str] = []
    for stage in stages:
        errors += _check_stage(stage, seen_stages, registries, base_dir)
        seen_stages.append(stage.name)
    return _dedupe(errors)  # the source shorthand shares the top-level model with the main stage


def _check_stage(stage: StagePlan, earlier: list[str], registries: Registries, base_dir: Path) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    where = stage.where
    if stage.name in earlier:
        errors.append((where("name"), f"stage name '{stage.name}' is used twice"))
    if stage.init_from is not None:
        if stage.init_from not in earlier:
            errors.append(
                (
                    where("init_from"),
                    f"'{stage.init_from}' is not an earlier stage"
                    + (f" (earlier: {', '.join(earlier)})" if earlier else " (this is the first stage)"),
                )
            )
        if stage.model.weights is not None:
            field = "model.weights" if stage.loc in ("", "source") else where("model.weights")
            errors.append(
                (
                    field,
                    "must be null when the stage starts from an earlier stage: its pretrained "
                    "parts come from there (put initial weights in the first stage, e.g. source.weights)",
                )
            )
    task_entry = registries.tasks.find(stage.task)
    if task_entry is None:
        errors.append((where("task") if stage.loc else "task", registries.tasks.unknown_message(stage.task)))
    model_loc = "model" if stage.loc in ("", "source") else where("model")
    if stage.model.backbone not in registries.backbones:
        errors.append((f"{model_loc}.backbone", registries.backbones.unknown_message(stage.model.backbone)))
    data_loc = where("data")
    errors += check_data(stage.data, data_loc, stage.task, registries, base_dir)
    for name, extra in stage.extra_data.items():
        errors += check_data(extra, where(f"extra_data.{name}"), stage.task, registries, base_dir)
    for i, name in enumerate(stage.evaluate_on):
        if name not in stage.extra_data:
            known = ", ".join(stage.extra_data) or "none"
            errors.append(
                (where(f"evaluate_on.{i}"), f"'{name}' is not one of the stage's extra_data datasets (known: {known})")
            )
    if stage.data.val_fraction + stage.data.test_fraction >= 0.9:
        errors.append((data_loc, "val_fraction + test_fraction leave less than 10% for training"))
    task_cls = task_entry.obj if task_entry is not None else None
    if task_cls is not None:
        for loc, section, schema in (
            (data_loc, stage.data, task_cls.DataOptions),
            (model_loc, stage.model, task_cls.ModelOptions),
        ):
            try:
                schema.model_validate(section.task_options)
            except ValidationError as exc:
                errors += pydantic_errors(exc, prefix=f"{loc}.")
        if stage.model.backbone in registries.backbones:
            task = task_cls(registries, stage.train)
            for field, reason in task.check_config(stage.model, stage.data, base_dir=base_dir):
                section, _, rest = field.partition(".")
                loc = {"model": model_loc, "data": data_loc}.get(section)
                errors.append((f"{loc}.{rest}" if loc and rest else where(field), reason))
    labels: dict[str, str] = {}
    for loc, arm in zip(_arm_locs(stage), stage.arms):
        errors += _check_arm(arm, loc, stage, task_cls, registries)
        if arm.arm in labels:
            errors.append(
                (
                    f"{loc}.label",
                    f"arm name '{arm.arm}' is used twice (also at {labels[arm.arm]}); give one of them a label",
                )
            )
        labels[arm.arm] = loc
    return errors


def _check_arm(
    arm: StrategyConfig, loc: str, stage: StagePlan, task_cls: Any, registries: Registries
) -> list[tuple[str, str]]:
    entry = registries.strategies.find(arm.name)
    if entry is None:
        return [(f"{loc}.name", registries.strategies.unknown_message(arm.name))]
    strategy_cls = entry.obj
    errors: list[tuple[str, str]] = []
    needed: tuple[str, ...] = ()
    try:
        args = strategy_cls.Args.model_validate(arm.args)
        needs = getattr(strategy_cls, "needs_extra_data", None)
        needed = needs(args) if needs is not None else tuple(getattr(strategy_cls, "extra_data", ()))
    except ValidationError as exc:
        errors += pydantic_errors(exc, prefix=f"{loc}.args.")
    for name in needed:
        if name not in stage.extra_data:
            errors.append(
                (
                    f"{loc}.name",
                    f"strategy '{arm.name}' needs the extra dataset '{name}': add "
                    f"{stage.where('extra_data')}.{name} to the stage",
                )
            )
    known_parts = getattr(task_cls, "pretrained_parts", ()) if task_cls is not None else ()
    for part, plan in arm.parts.items():
        if task_cls is not None and part not in known_parts:
            errors.append(
                (
                    f"{loc}.parts.{part}",
                    f"task '{stage.task}' has no pretrained part '{part}' "
                    f"(its pretrained parts: {', '.join(known_parts) or 'none'})",
                )
            )
        if getattr(strategy_cls, "frozen_backbone", False) and plan.unfreeze not in (None, 0):
            errors.append(
                (
                    f"{loc}.parts.{part}.unfreeze",
                    f"strategy '{arm.name}' keeps every pretrained part "
                    "frozen (that is what lets it train from the feature cache); use fine-tune to train blocks",
                )
            )
    if arm.cache.storage == "disk" and arm.cache.enabled and getattr(strategy_cls, "frozen_backbone", False):
        from .cache import check_cache_root

        reason = check_cache_root(Path(arm.cache.root) if arm.cache.root else None)
        if reason:
            errors.append((f"{loc}.cache.root", reason))
    return errors


def check_data(data: DataConfig, loc: str, task: str, registries: Registries, base_dir: Path) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    entry = registries.datasets.find(data.dataset)
    if entry is None:
        return [(f"{loc}.dataset", registries.datasets.unknown_message(data.dataset))]
    spec = entry.obj
    if task != spec.task and task not in spec.tasks:
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
