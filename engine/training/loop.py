"""Trains one arm (one strategy on one model, one seed) epoch by epoch. Read it top to bottom.

Every epoch starts from a seed derived from (seed, arm, epoch), so shuffling,
augmentation and dropout of epoch ``e`` do not depend on what ran before it: a run
resumed from the checkpoint of epoch ``e-1`` computes exactly what the uninterrupted
run computed (on CPU).

The step itself belongs to the strategy (:meth:`Strategy.training_step` returns named
losses; the loop back-propagates their sum). After each epoch the validation score of
the task's primary metric decides the best epoch (in the metric's direction); the
arm's test evaluation and saved model use the best epoch's weights unless
``train.keep: last``; ``train.patience`` stops an arm that stopped improving.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from .. import distributed
from ..config import ExtractionConfig, TrainConfig
from ..errors import TLEngineError
from ..execution import configure_execution
from ..model import TransferModel
from ..reporting.domain import dataset_features, domain_gap
from ..strategies import Strategy
from ..strategies.base import StepContext
from ..task import Evaluation, Task, TaskData
from . import checkpoint
from .feature_cache import CachedFeatures, trains_from_cache
from .optim import LRSchedule, build_optimizer
from .progress import progress_bar
from .seeding import derive_seed, rng_state, seed_everything, set_rng_state


@dataclass
class Arm:
    """One arm of a stage under one seed: a strategy applied to a model on a dataset."""

    name: str
    strategy: Strategy
    model: TransferModel
    data: TaskData
    train: TrainConfig  # with the arm's own epochs / lr already applied
    seed: int
    stage: str = "main"
    extra: dict[str, Dataset] = field(default_factory=dict)  # the stage's extra datasets (train splits)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)  # how frozen parts run
    #: test splits of other datasets the arm is also evaluated on (``evaluate_on``: a domain-
    #: adaptation target); their metrics join the test metrics as ``<name>.<metric>``
    evaluate_on: dict[str, Dataset] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Unique within a run: ``<stage>/<arm>/seed<seed>`` (also its folder under ``arms/``)."""
        return f"{self.stage}/{self.name}/seed{self.seed}"


@dataclass
class ArmResult:
    name: str
    strategy: str
    test: Evaluation
    val: Evaluation | None
    seconds: float
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[str, Any] | None = None  # feature-cache statistics when the arm used one
    best_epoch: int | None = None
    stopped_early: bool = False
    execution: dict[str, Any] | None = None  # how each part ran (precision, channels-last, compiled)


def autocast_for(device: torch.device, amp: str) -> tuple[Callable[[], Any], torch.amp.GradScaler | None]:
    """(context factory, grad scaler) for mixed precision: on by default on CUDA only."""
    use = amp == "on" or (amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext, None
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return (lambda: torch.autocast("cuda", dtype=dtype)), scaler
    return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), None


def evaluate(task: Task, model: Any, loader: Any, info: dict[str, Any], *, device: torch.device) -> Evaluation:
    """The task's metrics of ``model`` over ``loader``, in eval mode and inference mode."""
    model.eval()
    with torch.inference_mode():
        return task.evaluate(model, loader, device, info)


def evaluate_shared(task: Task, model: Any, loader: Any, info: dict[str, Any], *, device: torch.device) -> Evaluation:
    """:func:`evaluate`, the same on every rank under torchrun. A task that scores in parts
    (:attr:`Task.scores_in_parts`) has each rank evaluate its share of the batches
    (:func:`tlengine.distributed.whole_batches`) and rank 0 score them all; otherwise rank 0
    evaluates alone. Either way every sample counts once, and rank 0 hands the metrics on."""
    if not distributed.world().distributed:
        return evaluate(task, model, loader, info, device=device)
    if not task.scores_in_parts:
        return distributed.on_main(lambda: evaluate(task, model, loader, info, device=device))
    mine = distributed.whole_batches(loader)
    model.eval()
    with torch.inference_mode():
        outcomes = [task.evaluation_batch(model, batch, device) for batch in mine]
    gathered = distributed.gather_objects(outcomes)
    return distributed.on_main(lambda: task.score(distributed.in_loader_order(gathered), info))


def evaluate_elsewhere(
    task: Task, arm: Arm, model: TransferModel, test: Evaluation, *, device: torch.device, num_workers: int
) -> None:
    """Test the whole ``model`` on each of ``arm.evaluate_on``'s test splits and add the metrics
    to ``test`` as ``<name>.<metric>`` (the details under ``<name>``). The whole model, not a
    cached head: these samples were never cached. Where the model's features pool to one row
    per sample, also ``<name>.a_distance`` between the test split's features and these (and a
    2-D map of both in the details; :mod:`tlengine.reporting.domain`)."""
    source = None
    for name, dataset in arm.evaluate_on.items():
        loader = task.loader(dataset, batch_size=arm.train.batch_size, shuffle=False, seed=0, num_workers=num_workers)
        other = evaluate(task, model, loader, arm.data.info, device=device)
        test.metrics.update({f"{name}.{k}": v for k, v in other.metrics.items()})
        test.details[name] = other.details
        # How far apart the two test sets' features are (proxy A-distance, a 2-D map).
        features = partial(dataset_features, task, model, batch_size=arm.train.batch_size, device=device)
        source = features(arm.data.test) if source is None else source
        target = features(dataset) if source is not None else None
        if source is not None and target is not None and min(len(source), len(target)) >= 4:
            distance, feature_map = domain_gap(source, target, seed=arm.seed)
            test.metrics[f"{name}.a_distance"] = distance
            test.details[name]["feature_map"] = feature_map


def evaluate_strategy_parts(
    task: Task, arm: Arm, model: TransferModel, test: Evaluation, *, device: torch.device, num_workers: int
) -> None:
    """Score what the strategy's own parts answer (:meth:`Strategy.extra_evaluations`, e.g.
    a multitask head on its dataset's test split) and add the metrics to ``test`` as
    ``<name>.<metric>`` (the details under ``<name>``)."""
    for name, (network, other) in arm.strategy.extra_evaluations(model, arm.data).items():
        if f"{name}.{task.primary_metric}" in test.metrics:
            raise TLEngineError(
                f"'{name}' is both an evaluate_on dataset and one that strategy '{arm.strategy.name}' scores"
            )
        loader = task.loader(
            other.test, batch_size=arm.train.batch_size, shuffle=False, seed=0, num_workers=num_workers
        )
        result = evaluate(task, network, loader, other.info, device=device)
        test.metrics.update({f"{name}.{k}": v for k, v in result.metrics.items()})
        test.details[name] = result.details


def is_better(task: Task, metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value > best if task.higher_is_better(metric) else value < best


def _cycle(task: Task, dataset: Dataset, *, batch_size: int, seed: int, device: torch.device) -> Iterator[Any]:
    """Endless batches of ``dataset`` (reshuffled each pass by a seed derived from ``seed``;
    under torchrun, this rank's part of each)."""
    for n in itertools.count():
        loader = task.loader(dataset, batch_size=batch_size, shuffle=True, seed=derive_seed(seed, n))
        for batch in distributed.shard_loader(loader) if distributed.world().distributed else loader:
            yield task.move_to(batch, device)


class TrainingStep(nn.Module):
    """The strategy's training step as a module's forward, so that under torchrun
    DistributedDataParallel wraps the whole step (whatever parts the strategy calls) and
    averages the gradients of everything it trained across the ranks in backward."""

    def __init__(self, model: TransferModel, strategy: Strategy):
        super().__init__()
        self.model = model  # registers the parameters DDP synchronises
        self.strategy = strategy

    def forward(self, step: StepContext) -> dict[str, torch.Tensor]:
        return self.strategy.training_step(step)


def _distributed_step(model: TransferModel, strategy: Strategy, current: Any) -> Any:
    """A DDP-wrapped :class:`TrainingStep` over the parameters that train now (rebuilt when
    gradual unfreezing changes them: DDP fixes its set when it is made); None when nothing
    trains. ``current`` is the wrapper of the epoch before, reused when it still fits."""
    trainable = tuple(n for n, p in model.named_parameters() if p.requires_grad)
    if current is not None and current.trainable == trainable:
        return current
    if not trainable:
        return None
    wrapped = DistributedDataParallel(
        TrainingStep(model, strategy), find_unused_parameters=strategy.ddp_find_unused_parameters
    )
    wrapped.trainable = trainable
    return wrapped


def train_arm(
    task: Task,
    arm: Arm,
    *,
    device: torch.device,
    state_path: Path,
    on_epoch: Callable[[dict[str, Any]], None],
    resume: bool = False,
    num_workers: int = 0,
    label: str = "",
    echo: Callable[[str], None] = print,
) -> ArmResult:
    """Train ``arm`` for up to ``arm.train.epochs`` epochs and evaluate it on the test split.

    After every epoch the full training state is written to ``state_path`` (atomically),
    the best epoch's weights to ``best.safetensors`` beside it, and ``on_epoch(record)``
    receives that epoch's metrics. With ``resume=True`` and an existing ``state_path``,
    training continues after the saved epoch.
    """
    cfg, model, strategy = arm.train, arm.model, arm.strategy
    world = distributed.world()
    best_path = state_path.with_name("best.safetensors")
    seed_everything(derive_seed(arm.seed, arm.name, "prepare"))
    strategy.prepare(model, arm.data)
    model.to(device)
    if world.distributed and cfg.sync_batchnorm:
        if device.type != "cuda":
            raise TLEngineError("train.sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm does not run on CPU)")
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if strategy.fits_directly:
        return _fit_arm(task, arm, device=device, on_epoch=on_epoch, num_workers=num_workers)
    execution = configure_execution(
        model, arm.extraction, device=device, task_allows_reduced=task.allows_reduced_precision, echo=echo
    )
    groups = strategy.param_groups(model, cfg.lr)
    optimizer = build_optimizer(groups, cfg)
    steps_per_epoch = math.ceil(len(arm.data.train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    schedule = LRSchedule(
        optimizer, kind=cfg.scheduler, total_steps=total_steps, warmup_steps=round(cfg.warmup_epochs * steps_per_epoch)
    )
    autocast, scaler = autocast_for(device, cfg.amp)

    cached = None
    if trains_from_cache(task, strategy):
        strategy.apply(model, 1)
        cached = CachedFeatures(
            task,
            model,
            arm.data,
            strategy.config.cache,
            device=device,
            seed=arm.seed,
            batch_size=cfg.batch_size,
            num_workers=num_workers,
        )
        cached.prepare()  # the frozen part runs here, once; epochs below train the rest only
    elif strategy.frozen_backbone:  # the frozen part runs on every batch: tell compile: auto how many
        per_epoch = len(arm.data.train) + len(arm.data.val)
        elsewhere = sum(len(ds) for ds in arm.evaluate_on.values())
        execution.expect(per_epoch * cfg.epochs + len(arm.data.val) + len(arm.data.test) + elsewhere)
    net = cached.head if cached is not None else model

    def eval_loader(split: str) -> Any:
        if cached is not None:
            return cached.eval_loader(split, batch_size=cfg.batch_size)
        return task.loader(
            getattr(arm.data, split), batch_size=cfg.batch_size, shuffle=False, seed=0, num_workers=num_workers
        )

    has_val = (cached.split_size("val") if cached is not None else len(arm.data.val)) > 0

    metric = task.primary_metric
    start_epoch, history, seconds = 1, [], 0.0
    best: dict[str, Any] = {"value": None, "epoch": None, "since": 0, "stopped": False}
    if resume and state_path.exists():
        meta = checkpoint.load_training_state(state_path, model=model, optimizer=optimizer)
        schedule.load_state_dict(meta["schedule"])
        set_rng_state(meta["rng_tensors"], meta["rng"])
        start_epoch, history, seconds = meta["epoch"] + 1, meta.get("history", []), meta.get("seconds", 0.0)
        best = meta.get("best", best)

    last_epoch = start_epoch - 1
    stepper = None  # under torchrun: the DDP-wrapped step
    for epoch in range(start_epoch, cfg.epochs + 1):
        if best["stopped"]:
            break
        t0 = time.perf_counter()
        # Extra datasets restart each epoch from a seed of their own, so a run resumed at an
        # epoch boundary draws the same unlabelled batches as one that never stopped.
        extra = {
            name: _cycle(
                task, ds, batch_size=cfg.batch_size, seed=derive_seed(arm.seed, arm.name, name, epoch), device=device
            )
            for name, ds in arm.extra.items()
        }
        epoch_seed = derive_seed(arm.seed, arm.name, epoch)
        seed_everything(epoch_seed)
        trainable = strategy.apply(model, epoch)
        strategy.train_mode(model)
        if world.distributed:
            stepper = _distributed_step(model, strategy, stepper)
        if cached is not None:
            loader = cached.train_loader(epoch, batch_size=cfg.batch_size, seed=epoch_seed)
        else:
            loader = task.loader(
                arm.data.train, batch_size=cfg.batch_size, shuffle=True, seed=epoch_seed, num_workers=num_workers
            )
        if world.distributed:  # this rank's part of every batch; its loss weighted by that part's size
            loader = distributed.shard_loader(loader)
        sums: dict[str, float] = {}
        seen = 0
        desc = f"{label or arm.key} epoch {epoch}/{cfg.epochs}"
        for i, batch in enumerate(progress_bar(loader, desc=desc, total=len(loader))):
            inputs, targets = task.move_to(batch, device)
            step = StepContext(
                task,
                net,
                model,
                inputs,
                targets,
                epoch,
                (epoch - 1) * steps_per_epoch + i,
                total_steps,
                device,
                _extra=lambda name: next(extra[name]),
            )
            with autocast():
                losses = stepper(step) if stepper is not None else strategy.training_step(step)
            loss = sum(losses.values())
            if loss.requires_grad:  # False when this epoch's plan trains nothing
                optimizer.zero_grad(set_to_none=True)
                # DDP averages the ranks' gradients: weighting each by its share of the batch
                # makes that average the whole batch's gradient
                scaled = loss * loader.weight(i) if world.distributed else loss
                if scaler is not None:
                    scaler.scale(scaled).backward()
                    scaler.unscale_(optimizer)
                else:
                    scaled.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
            schedule.step()
            n = loader.counts[i][0] if world.distributed else _batch_size(targets)
            seen += n
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n
            if len(losses) > 1 or "loss" not in losses:
                for k, v in losses.items():
                    sums[f"loss_{k}"] = sums.get(f"loss_{k}", 0.0) + float(v.detach()) * n

        if world.distributed:  # the whole batch's mean losses, not this rank's
            names = sorted(sums)
            seen, *totals = distributed.all_reduce_sum([seen, *(sums[k] for k in names)])
            sums = dict(zip(names, totals))
        record: dict[str, Any] = {
            "stage": arm.stage,
            "arm": arm.name,
            "seed": arm.seed,
            "epoch": epoch,
            **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "trainable_blocks": len(trainable),
        }
        if has_val:
            val = evaluate_shared(task, net, eval_loader("val"), arm.data.info, device=device)
            record.update({f"val_{k}": v for k, v in val.metrics.items()})
            value = val.metrics.get(metric)
            if value is not None and is_better(task, metric, value, best["value"]):
                best.update(value=value, epoch=epoch, since=0)
                if world.is_main:
                    checkpoint.save_tensors(best_path, model.state_dict(), {"epoch": epoch, metric: value})
            else:
                best["since"] += 1
            if cfg.patience and best["since"] >= cfg.patience and epoch < cfg.epochs:
                best["stopped"] = True
                record["stopped_early"] = True
        epoch_seconds = time.perf_counter() - t0
        seconds += epoch_seconds
        record["seconds"] = round(epoch_seconds, 3)
        history.append(record)
        if not world.is_main:  # rank 0 writes the state every rank resumes from
            last_epoch = epoch
            continue
        checkpoint.save_training_state(
            state_path,
            model=model,
            optimizer=optimizer,
            schedule_state=schedule.state_dict(),
            epoch=epoch,
            rng=rng_state(),
            extra={"history": history, "seconds": seconds, "arm": arm.name, "best": best},
        )
        on_epoch(record)
        last_epoch = epoch

    last_epoch = history[-1]["epoch"] if history else last_epoch
    stepper = None
    strategy.apply(model, last_epoch)
    if cfg.keep == "best" and best["epoch"] is not None and best["epoch"] != last_epoch:
        distributed.barrier()  # under torchrun: rank 0 has written the best weights every rank loads
        tensors, _ = checkpoint.load_tensors(best_path)
        model.load_state_dict(tensors)
    val_eval = evaluate_shared(task, net, eval_loader("val"), arm.data.info, device=device) if has_val else None
    test_eval = evaluate_shared(task, net, eval_loader("test"), arm.data.info, device=device)

    def evaluate_more() -> Evaluation:  # other datasets and the strategy's heads: rank 0 alone
        evaluate_elsewhere(task, arm, model, test_eval, device=device, num_workers=num_workers)
        evaluate_strategy_parts(task, arm, model, test_eval, device=device, num_workers=num_workers)
        return test_eval

    test_eval = distributed.on_main(evaluate_more)
    cache_stats = None
    if cached is not None:
        cache_stats = {**cached.stats(), "head_training_seconds": round(seconds, 3)}
        cached.close()
    execution.release()
    model.execution = None  # the plan holds compiled code and block wrappers: the saved model is the plain one
    total = seconds + (cached.extraction_seconds if cached else 0.0)
    return ArmResult(
        arm.name,
        strategy.name,
        test_eval,
        val_eval,
        total,
        last_epoch,
        history,
        cache_stats,
        best_epoch=best["epoch"] if cfg.keep == "best" else last_epoch,
        stopped_early=bool(best["stopped"]),
        execution=execution.stats(),
    )


def _fit_arm(
    task: Task, arm: Arm, *, device: torch.device, on_epoch: Callable[[dict[str, Any]], None], num_workers: int
) -> ArmResult:
    """An arm whose strategy fits in one call (``Strategy.fits_directly``): fit, then
    evaluate like any arm; its history is one record (``epoch`` 1)."""
    t0 = time.perf_counter()
    seed_everything(derive_seed(arm.seed, arm.name, 1))
    arm.strategy.fit(task, arm.model, arm.data, seed=arm.seed)
    seconds = time.perf_counter() - t0

    def loader(split: str) -> Any:
        return task.loader(
            getattr(arm.data, split), batch_size=arm.train.batch_size, shuffle=False, seed=0, num_workers=num_workers
        )

    val_eval = evaluate(task, arm.model, loader("val"), arm.data.info, device=device) if len(arm.data.val) else None
    test_eval = evaluate(task, arm.model, loader("test"), arm.data.info, device=device)
    evaluate_elsewhere(task, arm, arm.model, test_eval, device=device, num_workers=num_workers)
    record: dict[str, Any] = {"stage": arm.stage, "arm": arm.name, "seed": arm.seed, "epoch": 1}
    if val_eval is not None:
        record.update({f"val_{k}": v for k, v in val_eval.metrics.items()})
    record["seconds"] = round(seconds, 3)
    on_epoch(record)
    if arm.model.execution is not None:
        arm.model.execution.release()
        arm.model.execution = None
    return ArmResult(arm.name, arm.strategy.name, test_eval, val_eval, seconds, 1, [record], best_epoch=1)


def _batch_size(targets: Any) -> int:
    if isinstance(targets, torch.Tensor):
        return int(targets.shape[0]) if targets.dim() else 1
    return len(targets)
