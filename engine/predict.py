"""Rebuild the trained model of a run directory for inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ModelConfig
from .errors import RunError
from .model import TransferModel
from .registry import Registries
from .task import Task
from .training.checkpoint import load_tensors


def load_run_model(registries: Registries, run_dir: Path, *, arm: str | None = None
                   ) -> tuple[Task, TransferModel, dict[str, Any]]:
    """(task, model in eval mode, checkpoint metadata) of a finished run (or one arm of it)."""
    run_dir = Path(run_dir)
    path = run_dir / "arms" / arm / "model.safetensors" if arm else run_dir / "checkpoint.safetensors"
    if not path.is_file():
        if not run_dir.is_dir():
            raise RunError(f"run directory {run_dir} does not exist")
        arms = sorted(p.name for p in (run_dir / "arms").glob("*") if (p / "model.safetensors").is_file())
        raise RunError(f"{run_dir} has no finished model at {path.relative_to(run_dir)}"
                       + (f"; finished arms: {', '.join(arms)}" if arms else "; did the run complete?"))
    tensors, meta = load_tensors(path)
    task: Task = registries.tasks.get(meta["task"])(registries)
    model_cfg = ModelConfig.model_validate({**meta["model"], "weights": None})
    model = task.build_model(model_cfg, meta["info"], pretrained=False, base_dir=run_dir)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise RunError(f"checkpoint {path} does not match its model ({len(missing)} missing, "
                       f"{len(unexpected)} unexpected keys)")
    model.preprocessing = meta["preprocessing"]
    model.eval()
    return task, model, meta
