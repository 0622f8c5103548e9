"""Rebuild the trained model of a run directory for inference."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from .config import ExtractionConfig, ModelConfig, StrategyConfig
from .errors import RunError
from .execution import configure_execution
from .model import TransferModel
from .registry import Registries
from .task import Task, TaskData
from .training.checkpoint import load_tensors


def model_file(run_dir: Path, *, arm: str | None = None, stage: str | None = None, seed: int | None = None) -> Path:
    """The model of the run's primary arm (``checkpoint.safetensors``), or of ``arm`` in
    ``stage`` (default: the last stage) under ``seed`` (default: the first)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run directory {run_dir} does not exist")
    if arm is None and stage is None and seed is None:
        path = run_dir / "checkpoint.safetensors"
        if not path.is_file():
            raise RunError(
                f"{run_dir} has no checkpoint.safetensors; did the run complete? "
                f"(`tlengine run --resume {run_dir}` finishes it)"
            )
        return path
    finished = sorted(
        (
            p.parent.relative_to(run_dir / "arms").as_posix()
            for p in (run_dir / "arms").glob("*/*/seed*/model.safetensors")
        ),
        key=lambda f: (f.split("/")[0], f.split("/")[1], int(f.split("/")[2][4:] or 0)),
    )
    matches = [
        f
        for f in finished
        if (stage is None or f.split("/")[0] == stage)
        and (arm is None or f.split("/")[1] == arm)
        and (seed is None or f.split("/")[2] == f"seed{seed}")
    ]
    if stage is None and matches:
        last_stage = _last_stage(run_dir) or matches[-1].split("/")[0]
        matches = [f for f in matches if f.split("/")[0] == last_stage] or matches
    if not matches:
        raise RunError(
            f"{run_dir} has no finished model for"
            + "".join(f" {k} {v}" for k, v in (("stage", stage), ("arm", arm), ("seed", seed)) if v is not None)
            + (f"; finished: {', '.join(finished)}" if finished else "; did the run complete?")
        )
    return run_dir / "arms" / matches[0] / "model.safetensors"


def adapted_model_file(run_dir: Path, speaker: str | None, *, arm: str | None = None) -> Path | None:
    """For a run whose arms adapt a model to one speaker (their ``info["adapted_to"]``): the
    model adapted to ``speaker`` (the first such arm of the last stage holding one, or
    ``arm``), or with ``speaker`` None the unadapted base (the ``zero-shot`` arm). None when
    the run adapts to no one and no speaker was asked for."""
    import json

    rows = []
    for path in sorted(Path(run_dir).glob("arms/*/*/seed*/model.json")):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        rows.append((path, meta.get("info", {}).get("adapted_to"), meta.get("strategy"), meta.get("arm")))
    speakers = sorted({s for _, s, _, _ in rows if s})
    if speaker is None:
        if not speakers:
            return None
        base = [p for p, _, strategy, name in rows if strategy == "zero-shot" and arm in (None, name)]
        if not base:
            raise RunError(
                f"{run_dir} has no zero-shot arm (the unadapted model); pass --speaker ({', '.join(speakers)})"
            )
        return base[-1].with_suffix(".safetensors")
    found = [p for p, s, strategy, name in rows if s == speaker and strategy != "zero-shot" and arm in (None, name)]
    if not found:
        known = ", ".join(speakers) or "none"
        what = f"speaker '{speaker}'" + (f" with arm '{arm}'" if arm else "")
        raise RunError(f"{run_dir} holds no model adapted to {what} (adapted speakers: {known})")
    last_stage = found[-1].parts[-4]
    return next(p for p in found if p.parts[-4] == last_stage).with_suffix(".safetensors")


def _last_stage(run_dir: Path) -> str | None:
    import json

    try:
        summary = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        return list(summary["stages"])[-1]
    except (OSError, ValueError, KeyError, IndexError):
        return None


def load_run_model(
    registries: Registries,
    run_dir: Path,
    *,
    arm: str | None = None,
    stage: str | None = None,
    seed: int | None = None,
    device: torch.device | None = None,
    path: Path | None = None,
) -> tuple[Task, TransferModel, dict[str, Any]]:
    """(task, model in eval mode, checkpoint metadata) of a finished run (or one arm of it,
    or the model file ``path`` of one of its arms).

    The model is rebuilt from its config with random init, the strategy re-adds its own
    parts (adapters), then the saved weights are loaded strictly. Its parts run as the
    run's ``extraction`` settings say (:mod:`tlengine.execution`), on ``device`` (CPU).
    """
    path = path or model_file(run_dir, arm=arm, stage=stage, seed=seed)
    tensors, meta = load_tensors(path)
    if "task" not in meta or "model" not in meta:
        raise RunError(f"{path} holds no tlengine model metadata; is it a tlengine checkpoint?")
    task: Task = registries.tasks.get(meta["task"])(registries)
    model_cfg = ModelConfig.model_validate({**meta["model"], "weights": None})
    init = {part: False for part in task.pretrained_parts}
    model = task.build_model(model_cfg, meta["info"], init=init, base_dir=Path(run_dir))
    strategy = None
    if meta.get("strategy_config"):
        strategy_cfg = StrategyConfig.model_validate(meta["strategy_config"])
        strategy = registries.strategies.get(strategy_cfg.name)(strategy_cfg)
        strategy.prepare(model, _data_info(meta))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise RunError(
            f"checkpoint {path} does not match its model ({len(missing)} missing, {len(unexpected)} unexpected keys)"
        )
    model.preprocessing = meta["preprocessing"]
    model.eval()
    if strategy is not None and strategy.frozen_backbone:  # its pretrained parts were never trained
        model.frozen_parts = {p.name for p in model.pretrained_parts}
    # how the run's frozen parts ran (no compile: a few inputs never pay for it)
    extraction = ExtractionConfig.model_validate({**meta.get("extraction", {}), "compile": "off"})
    configure_execution(
        model,
        extraction,
        device=device or torch.device("cpu"),
        task_allows_reduced=task.allows_reduced_precision,
        echo=lambda line: print(line, file=sys.stderr),
    )
    return task, model, meta


def _data_info(meta: dict[str, Any]) -> TaskData | None:
    """What a strategy's ``prepare`` gets when a saved model is rebuilt: no samples, the
    extra datasets' ``info`` (a multitask head needs its classes); None when the run had
    no extra datasets (as for every run saved before they were recorded)."""
    extra = meta.get("extra_info") or {}
    if not extra:
        return None
    return TaskData(
        [], [], [], info=meta.get("info", {}), extra={n: TaskData([], [], [], info=i) for n, i in extra.items()}
    )
