"""Runs a validated pipeline: prepare everything, then train each arm in a run directory.

Run directory (``tlengine run`` prints its path)::

    config.yaml           the resolved pipeline (overrides applied)
    run.json              where it came from, tlengine version, device
    status.json           running | failed (with the error) | complete
    metrics.jsonl         one line per epoch per arm, appended live
    metrics.json          the summary (written last, only when the run completed)
    checkpoint.safetensors + checkpoint.json   the primary arm's final model
    arms/<arm>/           state.safetensors (resume), model.safetensors, result.json
    plots/                loss and metric curves, confusion matrices, arm comparison

Everything a user can get wrong (config, names, data, weights, output directory) is
checked *before* the run directory is created, so a failed start leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from . import __version__, kernels
from .atomic import write_json, write_text
from .config import PipelineConfig, StrategyConfig, TrainConfig, dump_yaml
from .errors import RunError, TLEngineError
from .model import TransferModel
from .plugins import PluginManager
from .reporting.plots import plot_arm_comparison, plot_curves
from .strategies import Strategy
from .task import Evaluation, Task, TaskData
from .training import checkpoint
from .training.loop import Arm, ArmResult, train_arm
from .training.seeding import derive_seed, seed_everything
from .validation import LoadedPipeline, data_root, validate

SOURCE_ARM = "source"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TLEngineError(f"device '{name}' was asked for but no CUDA device is available; use device=auto or cpu")
    return device


@dataclass
class Prepared:
    """Everything built from the config before any training starts."""

    config: PipelineConfig
    task: Task
    data: TaskData
    arms: list[Arm]
    source: Arm | None
    preprocessing: dict[str, Any]
    device: torch.device
    base_dir: Path


class Runner:
    """Prepares and runs one pipeline; ``echo`` receives human-readable progress lines."""

    def __init__(self, manager: PluginManager, echo: Callable[[str], None] = print):
        self.manager = manager
        self.registries = manager.registries
        self.echo = echo

    # ------------------------------------------------------------------ preparation
    def build_model(self, task: Task, config: PipelineConfig, info: dict[str, Any], *, pretrained: bool,
                    arm: str, base_dir: Path, weights: str | None = None) -> TransferModel:
        seed_everything(derive_seed(config.seed, arm, "init"))
        model_cfg = config.model if weights is None else config.model.model_copy(update={"weights": weights})
        return task.build_model(model_cfg, info, pretrained=pretrained, base_dir=base_dir)

    def strategy(self, cfg: StrategyConfig) -> Strategy:
        return self.registries.strategies.get(cfg.name)(cfg)

    def arm_train(self, config: PipelineConfig, cfg: StrategyConfig) -> TrainConfig:
        update = {k: v for k, v in (("epochs", cfg.epochs), ("lr", cfg.lr)) if v is not None}
        return config.train.model_copy(update=update)

    def prepare(self, loaded: LoadedPipeline) -> Prepared:
        config, base_dir = loaded.config, loaded.base_dir
        task: Task = self.registries.tasks.get(config.task)(self.registries)
        device = resolve_device(config.device)
        has_source = config.source is not None

        # The pretrained model decides the preprocessing (size, mean/std), so build it first.
        model_cfg = config.model
        if has_source:
            model_cfg = model_cfg.model_copy(update={"weights": config.source.weights})
        preprocessing = task.preprocessing(model_cfg, pretrained=model_cfg.weights is not None, base_dir=base_dir)
        data = task.build_data(config.data, preprocessing=preprocessing, base_dir=data_root(config.data, base_dir),
                               seed=config.data.split_seed)
        source = None
        if has_source:
            src_data = task.build_data(config.source.data, preprocessing=preprocessing,
                                       base_dir=data_root(config.source.data, base_dir),
                                       seed=config.source.data.split_seed)
            src_model = self.build_model(task, config, src_data.info, arm=SOURCE_ARM, base_dir=base_dir,
                                         pretrained=config.source.weights is not None,
                                         weights=config.source.weights)
            src_cfg = StrategyConfig(name="fine-tune" if config.source.weights else "scratch",
                                     label=SOURCE_ARM, backbone_lr_mult=1.0)
            source = Arm(SOURCE_ARM, self.strategy(src_cfg), src_model, src_data, config.source.train, config.seed)
        arms = []
        for cfg in config.arms():
            strategy = self.strategy(cfg)
            pretrained = strategy.uses_pretrained and not has_source
            model = self.build_model(task, config, data.info, pretrained=pretrained, arm=cfg.arm, base_dir=base_dir)
            arms.append(Arm(cfg.arm, strategy, model, data, self.arm_train(config, cfg), config.seed))
        return Prepared(config, task, data, arms, source, preprocessing, device, base_dir)

    # ------------------------------------------------------------------ the run
    def create_run_dir(self, config: PipelineConfig, output: Path | None) -> Path:
        if output is None:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            parent = Path(config.output_dir)
            output = parent / f"{config.name}-{stamp}"
            i = 1
            while output.exists():
                output = parent / f"{config.name}-{stamp}-{i}"
                i += 1
        elif output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise RunError(f"output directory {output} already exists and is not empty; choose another "
                           f"--output, or continue it with `tlengine run --resume {output}`")
        try:
            output.mkdir(parents=True, exist_ok=True)
            (output / "arms").mkdir(exist_ok=True)
            (output / "plots").mkdir(exist_ok=True)
        except OSError as exc:
            raise RunError(f"output directory {output} cannot be created or is not writable ({exc.strerror})") from None
        return output

    def run(self, loaded: LoadedPipeline, *, output: Path | None = None) -> Path:
        prepared = self.prepare(loaded)
        run_dir = self.create_run_dir(loaded.config, output)
        write_text(run_dir / "config.yaml", dump_yaml(loaded.config))
        write_json(run_dir / "run.json", {
            "pipeline_file": loaded.source, "base_dir": str(loaded.base_dir), "tlengine_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(prepared.device),
            "torch": torch.__version__})
        write_text(run_dir / "metrics.jsonl", "")
        self.echo(f"run directory: {run_dir}")
        return self._execute(prepared, run_dir, resume=False)

    def resume(self, run_dir: Path) -> Path:
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file() or not (run_dir / "run.json").is_file():
            raise RunError(f"{run_dir} is not a tlengine run directory (no config.yaml / run.json)")
        status = _read_json(run_dir / "status.json") or {}
        if status.get("state") == "complete":
            raise RunError(f"run {run_dir} is already complete; nothing to resume")
        meta = _read_json(run_dir / "run.json") or {}
        with open(run_dir / "config.yaml", encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        base_dir = Path(meta.get("base_dir", "."))
        config = validate(data, self.registries, base_dir)
        prepared = self.prepare(LoadedPipeline(config, base_dir, meta.get("pipeline_file", "")))
        self.echo(f"resuming run directory: {run_dir}")
        return self._execute(prepared, run_dir, resume=True)

    def _execute(self, p: Prepared, run_dir: Path, *, resume: bool) -> Path:
        config, task = p.config, p.task
        write_json(run_dir / "status.json", {"state": "running"})
        hook = self.manager.hook
        hook.tlengine_before_run(run_dir=run_dir, config=config.model_dump(mode="json"))
        started = time.perf_counter()
        records = self._restore_records(run_dir, p) if resume else []
        if any(_uses_fused_kernels(task, arm) for arm in p.arms):
            # A first-use build of the kernels (about a minute) happens here, in the open, and
            # not inside the first cached arm's time.
            kernels.extension_available()

        def on_epoch(record: dict[str, Any]) -> None:
            records.append(record)
            with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            shown = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in record.items() if k not in ("arm",))
            self.echo(f"[{record['arm']}] {shown}")
            hook.tlengine_on_epoch_end(run_dir=run_dir, arm=record["arm"], epoch=record["epoch"],
                                       metrics=dict(record))

        try:
            results: dict[str, ArmResult] = {}
            source_result = None
            if p.source is not None:
                source_result = self._run_arm(p, p.source, run_dir, on_epoch, resume)
                src_ckpt = run_dir / "arms" / SOURCE_ARM / "model.safetensors"
                for arm in p.arms:
                    if arm.strategy.uses_pretrained:
                        arm.model = self.build_model(task, config, p.data.info, pretrained=True, arm=arm.name,
                                                     base_dir=p.base_dir, weights=str(src_ckpt))
            for arm in p.arms:
                results[arm.name] = self._run_arm(p, arm, run_dir, on_epoch, resume)
            summary = self._finish(p, run_dir, results, source_result, records, time.perf_counter() - started)
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            write_json(run_dir / "status.json", {"state": "failed", "error": reason,
                                                 "resume": f"tlengine run --resume {run_dir}"})
            raise
        hook.tlengine_after_run(run_dir=run_dir, summary=summary)
        return run_dir

    def _restore_records(self, run_dir: Path, p: Prepared) -> list[dict[str, Any]]:
        """On resume, keep metrics.jsonl lines only up to each arm's saved state."""
        records = []
        for arm in ([p.source] if p.source else []) + p.arms:
            arm_dir = run_dir / "arms" / arm.name
            result = _read_json(arm_dir / "result.json")
            if result is not None:
                records += result["history"]
            elif (arm_dir / "state.safetensors").exists():
                _, meta = checkpoint.load_tensors(arm_dir / "state.safetensors")
                records += meta.get("history", [])
        write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        return records

    def _run_arm(self, p: Prepared, arm: Arm, run_dir: Path, on_epoch: Callable[[dict[str, Any]], None],
                 resume: bool) -> ArmResult:
        arm_dir = run_dir / "arms" / arm.name
        arm_dir.mkdir(parents=True, exist_ok=True)
        done = _read_json(arm_dir / "result.json")
        if resume and done is not None:
            self.echo(f"[{arm.name}] already finished; skipping")
            return _result_from_json(done)
        model_meta = self._model_meta(p, arm)
        self.echo(f"[{arm.name}] {arm.strategy.name}: {model_meta['backbone']} "
                  f"({'pretrained' if model_meta['pretrained'] else 'random init'}), "
                  f"{len(arm.data.train)} train / {len(arm.data.val)} val / {len(arm.data.test)} test samples, "
                  f"{arm.train.epochs} epochs")
        result = train_arm(p.task, arm, device=p.device, state_path=arm_dir / "state.safetensors",
                           on_epoch=on_epoch, resume=resume, num_workers=p.config.data.num_workers)
        checkpoint.save_model(arm_dir / "model.safetensors", arm.model, model_meta)
        write_json(arm_dir / "result.json", _result_to_json(result))
        (arm_dir / "state.safetensors").unlink(missing_ok=True)  # the final model replaces it
        metric = p.task.primary_metric
        self.echo(f"[{arm.name}] test {metric} = {result.test.metrics.get(metric, float('nan')):.4f} "
                  f"({result.seconds:.1f} s)")
        return result

    def _model_meta(self, p: Prepared, arm: Arm) -> dict[str, Any]:
        if arm.name == SOURCE_ARM:
            pretrained = p.config.source.weights is not None
        else:
            pretrained = arm.strategy.uses_pretrained and (p.config.model.weights is not None or p.source is not None)
        return {"task": p.config.task, "pipeline": p.config.name, "arm": arm.name,
                "strategy": arm.strategy.name, "backbone": p.config.model.backbone, "arch": arm.model.arch,
                "pretrained": pretrained, "weights": p.config.model.weights,
                "model": p.config.model.model_dump(mode="json"), "info": arm.data.info,
                "preprocessing": arm.model.preprocessing}

    def _finish(self, p: Prepared, run_dir: Path, results: dict[str, ArmResult], source: ArmResult | None,
                records: list[dict[str, Any]], total_seconds: float) -> dict[str, Any]:
        config, task = p.config, p.task
        primary = results[config.strategy.arm]
        baseline = results[config.baseline.arm] if config.baseline else None
        metric = task.primary_metric
        arms_json = {}
        for name, r in results.items():
            entry = {"strategy": r.strategy, "metrics": r.test.metrics,
                     "val_metrics": r.val.metrics if r.val else None, "seconds": round(r.seconds, 3),
                     "epochs": r.epochs}
            if baseline is not None and metric in r.test.metrics and metric in baseline.test.metrics:
                entry["gain_vs_baseline"] = r.test.metrics[metric] - baseline.test.metrics[metric]
            arms_json[name] = entry
        summary = {
            "task": config.task, "pipeline": config.name, "strategy": primary.strategy,
            "metrics": primary.test.metrics, "baseline": baseline.test.metrics if baseline else None,
            "timings": {"total_seconds": round(total_seconds, 3),
                        **{f"{n}_seconds": round(r.seconds, 3) for n, r in results.items()},
                        **({"source_seconds": round(source.seconds, 3)} if source else {})},
            "cache": {n: r.cache for n, r in results.items() if r.cache} or None,
            "primary_metric": metric, "primary_arm": config.strategy.arm,
            "baseline_arm": config.baseline.arm if config.baseline else None,
            "arms": arms_json,
            "source": ({"metrics": source.test.metrics, "seconds": round(source.seconds, 3),
                        "epochs": source.epochs} if source else None),
            "device": str(p.device), "tlengine_version": __version__,
        }
        plots = plot_curves(records, run_dir / "plots")
        if len(results) > 1:
            plots.append(plot_arm_comparison({n: r.test.metrics for n, r in results.items()}, metric,
                                             run_dir / "plots" / f"test_{metric}_by_arm.png"))
        plots += task.write_reports(run_dir, {n: r.test for n, r in results.items()}, p.data.info)
        summary["plots"] = [str(Path(x).relative_to(run_dir)) for x in plots]
        shutil.copyfile(run_dir / "arms" / primary.name / "model.safetensors", run_dir / ".checkpoint.tmp")
        (run_dir / ".checkpoint.tmp").replace(run_dir / "checkpoint.safetensors")
        shutil.copyfile(run_dir / "arms" / primary.name / "model.json", run_dir / "checkpoint.json")
        write_json(run_dir / "metrics.json", summary)
        write_json(run_dir / "status.json", {"state": "complete"})
        return summary


def _uses_fused_kernels(task: Task, arm: Arm) -> bool:
    """Whether ``arm`` trains from the feature cache with the fused ops (when they build)."""
    strategy = arm.strategy
    cache = strategy.config.cache
    return (strategy.frozen_backbone and cache.enabled and cache.kernels != "torch"
            and task.supports_feature_cache)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _result_to_json(r: ArmResult) -> dict[str, Any]:
    return {"name": r.name, "strategy": r.strategy, "seconds": r.seconds, "epochs": r.epochs,
            "test": {"metrics": r.test.metrics, "details": r.test.details},
            "val": ({"metrics": r.val.metrics, "details": r.val.details} if r.val else None),
            "history": r.history, "cache": r.cache}


def _result_from_json(d: dict[str, Any]) -> ArmResult:
    val = Evaluation(d["val"]["metrics"], d["val"]["details"]) if d.get("val") else None
    return ArmResult(d["name"], d["strategy"], Evaluation(d["test"]["metrics"], d["test"]["details"]), val,
                     d["seconds"], d["epochs"], d["history"], d.get("cache"))
