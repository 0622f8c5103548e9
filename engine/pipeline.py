"""Runs a validated pipeline: prepare every stage, then train each arm under each seed.

The path of a run, top to bottom:

1. :meth:`Runner.prepare` — plan the stages (:mod:`tlengine.plan`), and for each build
   its task, preprocessing, data (and extra datasets) and one model of its primary arm,
   so that everything a user can get wrong fails *before* a run directory exists;
2. :meth:`Runner.run` — create the run directory (:mod:`tlengine.rundir`), then
   :meth:`Runner._execute`: stage by stage, seed by seed, arm by arm,
   :func:`tlengine.training.loop.train_arm`; an arm of a stage with ``init_from`` starts
   its pretrained parts from the earlier stage's primary arm under the same seed;
3. :func:`tlengine.summary.build_summary` — metrics over seeds, gains, plots, the
   task's reports, ``metrics.json``.

``--resume`` re-plans from the run directory's ``config.yaml`` and skips every arm that
has a ``result.json``; an arm with a ``state.safetensors`` continues after its last epoch.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data import Dataset

from . import distributed, kernels
from .config import StrategyConfig, dump_yaml, read_yaml
from .errors import DataError, RunError, TLEngineError
from .model import TransferModel
from .plan import StagePlan, plan_stages
from .plugins import PluginManager
from .rundir import RunDirectory
from .strategies import Strategy
from .summary import build_summary
from .task import Task, TaskData
from .training import checkpoint
from .training.feature_cache import trains_from_cache
from .training.loop import Arm, ArmResult, train_arm
from .training.seeding import derive_seed, seed_everything
from .validation import LoadedPipeline, data_root, validate


def resolve_device(name: str) -> torch.device:
    """The device of ``device:`` (auto, cpu, cuda, cuda:N); under torchrun "auto" and "cuda"
    mean this rank's GPU (``LOCAL_RANK``)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TLEngineError(f"device '{name}' was asked for but no CUDA device is available; use device=auto or cpu")
    if device.type == "cuda" and device.index is None and distributed.world().distributed:
        device = torch.device("cuda", distributed.world().local_rank % torch.cuda.device_count())
    return device


@dataclass
class PreparedStage:
    """One stage with its task and data built."""

    plan: StagePlan
    task: Task
    data: TaskData
    preprocessing: dict[str, Any]
    extra: dict[str, Dataset] = field(default_factory=dict)
    #: the ``evaluate_on`` extra datasets, whole: every arm is also tested on their test split
    evaluate_on: dict[str, TaskData] = field(default_factory=dict)


@dataclass
class Prepared:
    """Everything built from the config before any training starts."""

    config: Any
    stages: list[PreparedStage]
    device: torch.device
    base_dir: Path

    @property
    def seeds(self) -> list[int]:
        return self.config.seed_list

    def arms(self) -> Iterator[tuple[PreparedStage, int, StrategyConfig]]:
        """(stage, seed, arm) in the order a run trains them: stage by stage, seed by seed."""
        for st in self.stages:
            for seed in self.seeds:
                for arm_cfg in st.plan.arms:
                    yield st, seed, arm_cfg


class Runner:
    """Prepares and runs one pipeline; ``echo`` receives human-readable progress lines."""

    def __init__(self, manager: PluginManager, echo: Callable[[str], None] = print):
        self.manager = manager
        self.registries = manager.registries
        self.echo = echo

    # ------------------------------------------------------------------ preparation
    def strategy(self, cfg: StrategyConfig) -> Strategy:
        return self.registries.strategies.get(cfg.name)(cfg)

    def build_model(self, st: PreparedStage, strategy: Strategy, seed: int, base_dir: Path) -> TransferModel:
        """The arm's model; pretrained parts load their weights (``model.weights``, or where
        ``Task.part_has_weights`` says the task keeps them) unless the arm starts them random
        or the stage starts them from an earlier stage (loaded later)."""
        seed_everything(derive_seed(seed, strategy.config.arm, "init"))
        init = {
            part: st.plan.init_from is None
            and st.task.part_has_weights(st.plan.model, part)
            and strategy.part_uses_pretrained(part)
            for part in st.task.pretrained_parts
        }
        return st.task.build_model(st.plan.model, st.data.info, init=init, base_dir=base_dir)

    def prepare(self, loaded: LoadedPipeline, *, output: Path | None = None, check_output: bool = True) -> Prepared:
        config, base_dir = loaded.config, loaded.base_dir
        device = resolve_device(config.device)
        if check_output and distributed.world().is_main:
            RunDirectory.check_creatable(config.output_dir, output)
        # Under torchrun rank 0 builds first: data it generates on the way is there for the others.
        with distributed.main_first():
            return self._prepare_stages(config, base_dir, device)

    def _prepare_stages(self, config: Any, base_dir: Path, device: torch.device) -> Prepared:
        prepared: dict[str, PreparedStage] = {}
        stages = []
        for plan in plan_stages(config):
            task: Task = self.registries.tasks.get(plan.task)(self.registries, plan.train)
            if plan.init_from and prepared[plan.init_from].plan.task == plan.task:
                preprocessing = prepared[plan.init_from].preprocessing
            else:
                init = {
                    part: plan.init_from is None and task.part_has_weights(plan.model, part)
                    for part in task.pretrained_parts
                }
                preprocessing = task.preprocessing(plan.model, init=init, base_dir=base_dir)
            data = task.build_data(
                plan.data,
                preprocessing=preprocessing,
                base_dir=data_root(plan.data, base_dir),
                seed=plan.data.split_seed,
            )
            for warning in data.warnings:
                self.echo(f"warning: stage '{plan.name}': {warning}")
            extra_built = {
                name: task.build_data(
                    dc, preprocessing=preprocessing, base_dir=data_root(dc, base_dir), seed=dc.split_seed
                )
                for name, dc in plan.extra_data.items()
            }
            data.extra = extra_built  # what a strategy's prepare may read (multitask heads)
            for name in plan.evaluate_on:
                _check_same_labels(data, extra_built[name], plan.where(f"extra_data.{name}"))
            extra = {name: built.train for name, built in extra_built.items()}
            evaluate_on = {name: extra_built[name] for name in plan.evaluate_on}
            st = PreparedStage(plan, task, data, preprocessing, extra, evaluate_on)
            # Build one model now, and let every arm's strategy shape a copy of it, so weights
            # that do not fit, parts a strategy cannot add and parameters outside every
            # optimizer group fail before the run directory exists.
            model = self.build_model(st, self.strategy(plan.arms[0]), config.seed_list[0], base_dir)
            for arm_cfg in plan.arms:
                strategy = self.strategy(arm_cfg)
                trial = copy.deepcopy(model)
                strategy.prepare(trial, data)
                strategy.param_groups(trial, plan.arm_train(arm_cfg).lr)
            prepared[plan.name] = st
            stages.append(st)
        return Prepared(config, stages, device, base_dir)

    # ------------------------------------------------------------------ the run
    def run(self, loaded: LoadedPipeline, *, output: Path | None = None) -> Path:
        prepared = self.prepare(loaded, output=output)
        world = distributed.world()
        path = None
        if world.is_main:  # rank 0 alone writes the run directory; the others learn where it is
            run = RunDirectory.create(loaded.config.name, loaded.config.output_dir, output)
            run.write_start(
                dump_yaml(loaded.config),
                {
                    "pipeline_file": loaded.source,
                    "base_dir": str(loaded.base_dir),
                    "device": str(prepared.device),
                    "torch": torch.__version__,
                    "processes": world.size,
                },
            )
            self.echo(f"run directory: {run.path}" + (f" ({world.size} processes)" if world.distributed else ""))
            path = run.path
        run = RunDirectory(distributed.broadcast_object(path))
        return self._execute(prepared, run, resume=False)

    def resume(self, run_dir: Path) -> Path:
        run = RunDirectory.open(run_dir)
        meta = run.run_info() or {}
        base_dir = Path(meta.get("base_dir", "."))
        try:
            config = validate(read_yaml(run.path / "config.yaml"), self.registries, base_dir)
            prepared = self.prepare(LoadedPipeline(config, base_dir, meta.get("pipeline_file", "")), check_output=False)
        except TLEngineError as exc:
            raise RunError(
                f"cannot resume {run.path}: its config.yaml no longer loads: {str(exc).splitlines()[0]}"
            ) from None
        self.echo(f"resuming run directory: {run.path}")
        return self._execute(prepared, run, resume=True)

    def _execute(self, p: Prepared, run: RunDirectory, *, resume: bool) -> Path:
        if not distributed.world().is_main:
            return self._execute_as_helper(p, run, resume=resume)
        hook = self.manager.hook
        try:
            run.set_status("running")
            hook.tlengine_before_run(run_dir=run.path, config=p.config.model_dump(mode="json"))
            started = time.perf_counter()
            records = self._restore_records(run, p) if resume else []
            self._build_kernels(p)

            def on_epoch(record: dict[str, Any]) -> None:
                records.append(record)
                run.append_record(record)
                shown = " ".join(
                    f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in record.items()
                    if k not in ("arm", "stage", "seed")
                )
                self.echo(f"[{self._label(p, record['stage'], record['arm'], record['seed'])}] {shown}")
                hook.tlengine_on_epoch_end(
                    run_dir=run.path, arm=record["arm"], epoch=record["epoch"], metrics=dict(record)
                )

            results: dict[str, dict[str, dict[int, ArmResult]]] = {
                st.plan.name: {a.arm: {} for a in st.plan.arms} for st in p.stages
            }
            for st, seed, arm_cfg in p.arms():
                results[st.plan.name][arm_cfg.arm][seed] = self._run_arm(p, st, arm_cfg, seed, run, on_epoch, resume)
            final = p.stages[-1]
            summary = build_summary(
                config=p.config,
                stages=[s.plan for s in p.stages],
                tasks={s.plan.name: s.task for s in p.stages},
                results=results,
                records=records,
                run_dir=run.path,
                total_seconds=time.perf_counter() - started,
                device=str(p.device),
                info=final.data.info,
            )
            run.publish_checkpoint(f"{final.plan.name}/{final.plan.arms[0].arm}/seed{p.seeds[0]}")
            run.write_summary(summary)
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            run.failed(reason)
            raise
        hook.tlengine_after_run(run_dir=run.path, summary=summary)
        return run.path

    def _execute_as_helper(self, p: Prepared, run: RunDirectory, *, resume: bool) -> Path:
        """A rank other than 0 under torchrun: train every arm in step with rank 0 (its share of
        each batch and of each extraction) and write nothing."""
        self._build_kernels(p)
        for st, seed, arm_cfg in p.arms():
            self._run_arm(p, st, arm_cfg, seed, run, lambda record: None, resume)
        return run.path

    def _build_kernels(self, p: Prepared) -> None:
        if any(_uses_fused_kernels(st.task, self.strategy(a)) for st in p.stages for a in st.plan.arms):
            # A first-use build of the kernels (about a minute) happens here, in the open,
            # and not inside the first cached arm's time; under torchrun rank 0 builds it.
            with distributed.main_first():
                kernels.extension_available()

    def _label(self, p: Prepared, stage: str, arm: str, seed: int) -> str:
        parts = ([stage] if len(p.stages) > 1 else []) + [arm] + ([f"seed {seed}"] if len(p.seeds) > 1 else [])
        return " / ".join(parts)

    def _restore_records(self, run: RunDirectory, p: Prepared) -> list[dict[str, Any]]:
        """On resume, keep metrics.jsonl lines only up to each arm's saved state."""
        records: list[dict[str, Any]] = []
        for st, seed, arm_cfg in p.arms():
            key = f"{st.plan.name}/{arm_cfg.arm}/seed{seed}"
            done = run.read_result(key)
            if done is not None:
                records += done.history
            elif (run.arm_dir(key) / "state.safetensors").exists():
                _, meta = checkpoint.load_tensors(run.arm_dir(key) / "state.safetensors")
                records += meta.get("history", [])
        run.rewrite_records(records)
        return records

    def _run_arm(
        self,
        p: Prepared,
        st: PreparedStage,
        arm_cfg: StrategyConfig,
        seed: int,
        run: RunDirectory,
        on_epoch: Callable[[dict[str, Any]], None],
        resume: bool,
    ) -> ArmResult:
        plan = st.plan
        key = f"{plan.name}/{arm_cfg.arm}/seed{seed}"
        label = self._label(p, plan.name, arm_cfg.arm, seed)
        arm_dir = run.arm_dir(key)
        main = distributed.world().is_main
        if main:
            arm_dir.mkdir(parents=True, exist_ok=True)
        done = run.read_result(key) if resume else None
        if done is not None:
            self.echo(f"[{label}] already finished; skipping")
            return done
        strategy = self.strategy(arm_cfg)
        model = self.build_model(st, strategy, seed, p.base_dir)
        inherited = [part for part in st.task.pretrained_parts if strategy.part_uses_pretrained(part)]
        if plan.init_from and inherited:
            init_stage = next(s for s in p.stages if s.plan.name == plan.init_from)
            src = run.arm_dir(f"{plan.init_from}/{init_stage.plan.arms[0].arm}/seed{seed}") / "model.safetensors"
            state, _ = checkpoint.load_tensors(src)
            st.task.init_from_state(model, state, inherited, source=f"stage '{plan.init_from}' ({src})")
        # the parts that start from weights: the earlier stage's, or the task's own
        starts = {p for p in inherited if plan.init_from is not None or st.task.part_has_weights(plan.model, p)}
        pretrained = bool(starts)
        arm = Arm(
            arm_cfg.arm,
            strategy,
            model,
            st.data,
            plan.arm_train(arm_cfg),
            seed,
            plan.name,
            st.extra,
            plan.extraction,
            evaluate_on={name: built.test for name, built in st.evaluate_on.items()},
        )
        init_said = "pretrained" if pretrained else "random init"
        if pretrained and len(starts) < len(st.task.pretrained_parts):
            init_said = ", ".join(  # e.g. "encoder pretrained, decoder random init"
                f"{part} {'pretrained' if part in starts else 'random init'}" for part in st.task.pretrained_parts
            )
        model_said = (
            "fitted in one call"  # a classical baseline: no pretrained part runs, no epochs
            if strategy.fits_directly
            else f"{plan.model.backbone} ({init_said}"
            f"{' from stage ' + plan.init_from if pretrained and plan.init_from else ''})"
        )
        epochs_said = "" if strategy.fits_directly else f", {arm.train.epochs} epochs"
        self.echo(
            f"[{label}] {strategy.name}: {model_said}, "
            f"{len(st.data.train)} train / {len(st.data.val)} val / {len(st.data.test)} test samples{epochs_said}"
        )
        result = train_arm(
            st.task,
            arm,
            device=p.device,
            state_path=arm_dir / "state.safetensors",
            on_epoch=on_epoch,
            resume=resume,
            num_workers=plan.data.num_workers,
            label=label,
            echo=self.echo,
        )
        if not main:  # rank 0 saves; the barrier lets a later stage's init_from read what it saved
            distributed.barrier()
            return result
        meta = self._model_meta(p, st, arm, pretrained)
        checkpoint.save_model(arm_dir / "model.safetensors", model, meta)
        own = model.owned_state_dict("strategy")
        if own:
            checkpoint.save_tensors(arm_dir / "own.safetensors", own, {**meta, "holds": "strategy parameters only"})
        delta = strategy.changed_state(model) if pretrained and not strategy.fits_directly else {}
        if delta and len(delta) < len(model.state_dict()) and delta.keys() != own.keys():
            checkpoint.save_tensors(
                arm_dir / "delta.safetensors", delta, {**meta, "holds": "what the arm changed on its pretrained start"}
            )
        run.write_result(key, result)
        (arm_dir / "state.safetensors").unlink(missing_ok=True)  # the final model replaces it
        (arm_dir / "best.safetensors").unlink(missing_ok=True)
        distributed.barrier()
        metric = st.task.primary_metric
        self.echo(
            f"[{label}] test {metric} = {result.test.metrics.get(metric, float('nan')):.4f} "
            f"(best epoch {result.best_epoch}, {result.seconds:.1f} s)"
        )
        return result

    def _model_meta(self, p: Prepared, st: PreparedStage, arm: Arm, pretrained: bool) -> dict[str, Any]:
        plan = st.plan
        return {
            "task": plan.task,
            "pipeline": p.config.name,
            "stage": plan.name,
            "arm": arm.name,
            "seed": arm.seed,
            "strategy": arm.strategy.name,
            "strategy_config": arm.strategy.config.model_dump(mode="json"),
            "backbone": plan.model.backbone,
            "arch": arm.model.arch,
            "pretrained": pretrained,
            "weights": plan.model.weights,
            "init_from": plan.init_from,
            "model": plan.model.model_dump(mode="json"),
            "info": arm.data.info,
            # predict hands these to the strategy's prepare (e.g. multitask heads' classes)
            "extra_info": {name: extra.info for name, extra in arm.data.extra.items()},
            "preprocessing": arm.model.preprocessing,
            "extraction": plan.extraction.model_dump(mode="json"),
            "parts": {
                name: {"pretrained": part.pretrained, "owner": part.owner, "blocks": [b for b, _ in part.blocks]}
                for name, part in arm.model.parts.items()
            },
        }


def _uses_fused_kernels(task: Task, strategy: Strategy) -> bool:
    """Whether an arm trains from the feature cache with the fused ops (when they build)."""
    return trains_from_cache(task, strategy) and strategy.config.cache.kernels != "torch"


def _check_same_labels(data: TaskData, other: TaskData, loc: str) -> None:
    """An ``evaluate_on`` dataset must name the same classes in the same order as the
    stage's data: its test labels are scored by a model whose outputs follow the stage's."""
    mine, theirs = data.info.get("classes"), other.info.get("classes")
    if mine is not None and theirs is not None and list(mine) != list(theirs):
        raise DataError(
            f"{loc}: its classes {list(theirs)[:10]} differ from the stage data's {list(mine)[:10]}; "
            "a dataset the arms are evaluated on needs the same classes in the same order"
        )
