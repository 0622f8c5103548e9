"""Trains one arm (one strategy on one model) epoch by epoch. Read it top to bottom.

Every epoch starts from a seed derived from (pipeline seed, arm, epoch), so shuffling,
augmentation and dropout of epoch ``e`` do not depend on what ran before it: a run
resumed from the checkpoint of epoch ``e-1`` computes exactly what the uninterrupted
run computed (on CPU).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import TrainConfig
from ..model import TransferModel
from ..strategies import Strategy
from ..task import Evaluation, Task, TaskData
from . import checkpoint
from .feature_cache import CachedFeatures
from .optim import LRSchedule, build_optimizer
from .progress import progress_bar
from .seeding import derive_seed, rng_state, seed_everything, set_rng_state


@dataclass
class Arm:
    """One arm of a run: a strategy applied to a model on a dataset."""

    name: str
    strategy: Strategy
    model: TransferModel
    data: TaskData
    train: TrainConfig  # with the arm's own epochs / lr already applied
    seed: int


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


def evaluate(task: Task, model: TransferModel, dataset: Any, info: dict[str, Any], *, batch_size: int,
             device: torch.device, num_workers: int = 0) -> Evaluation:
    model.eval()
    loader = task.loader(dataset, batch_size=batch_size, shuffle=False, seed=0, num_workers=num_workers)
    with torch.no_grad():
        return task.evaluate(model, loader, device, info)


def train_arm(task: Task, arm: Arm, *, device: torch.device, state_path: Path,
              on_epoch: Callable[[dict[str, Any]], None], resume: bool = False,
              num_workers: int = 0, label: str = "") -> ArmResult:
    """Train ``arm`` for ``arm.train.epochs`` epochs and evaluate it on the test split.

    After every epoch the full training state is written to ``state_path`` (atomically)
    and ``on_epoch(record)`` receives that epoch's metrics. With ``resume=True`` and an
    existing ``state_path``, training continues after the saved epoch.
    """
    cfg, model, strategy = arm.train, arm.model.to(device), arm.strategy
    groups = strategy.param_groups(model, cfg.lr)
    optimizer = build_optimizer(groups, cfg)
    steps_per_epoch = math.ceil(len(arm.data.train) / cfg.batch_size)
    schedule = LRSchedule(optimizer, kind=cfg.scheduler, total_steps=steps_per_epoch * cfg.epochs,
                          warmup_steps=round(cfg.warmup_epochs * steps_per_epoch))
    autocast, scaler = autocast_for(device, cfg.amp)

    cached = None
    if strategy.frozen_backbone and strategy.config.cache.enabled and task.supports_feature_cache:
        strategy.apply(model, 1)
        cached = CachedFeatures(task, model, arm.data, strategy.config.cache, device=device, seed=arm.seed,
                                batch_size=cfg.batch_size)
        cached.prepare()  # the frozen backbone runs here, once; epochs below train the head only
    net = cached.head if cached is not None else model
    val_data = cached.eval_dataset("val") if cached is not None else arm.data.val

    start_epoch, history, seconds = 1, [], 0.0
    if resume and state_path.exists():
        meta = checkpoint.load_training_state(state_path, model=model, optimizer=optimizer)
        schedule.load_state_dict(meta["schedule"])
        set_rng_state(meta["rng_tensors"], meta["rng"])
        start_epoch, history, seconds = meta["epoch"] + 1, meta.get("history", []), meta.get("seconds", 0.0)

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        epoch_seed = derive_seed(arm.seed, arm.name, epoch)
        seed_everything(epoch_seed)
        trainable = strategy.apply(model, epoch)
        strategy.train_mode(model)
        if cached is not None:
            loader = cached.train_loader(epoch, batch_size=cfg.batch_size, seed=epoch_seed)
        else:
            loader = task.loader(arm.data.train, batch_size=cfg.batch_size, shuffle=True, seed=epoch_seed,
                                 num_workers=num_workers)
        total_loss, seen = 0.0, 0
        desc = f"{label or arm.name} epoch {epoch}/{cfg.epochs}"
        for batch in progress_bar(loader, desc=desc, total=len(loader)):
            inputs, targets = task.move_to(batch, device)
            with autocast():
                loss = task.training_loss(net, inputs, targets)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            schedule.step()
            n = _batch_size(targets)
            total_loss += float(loss.detach()) * n
            seen += n

        record: dict[str, Any] = {"arm": arm.name, "epoch": epoch, "train_loss": total_loss / max(seen, 1),
                                  "lr": optimizer.param_groups[0]["lr"],
                                  "trainable_blocks": len(trainable)}
        if len(val_data):
            val = evaluate(task, net, val_data, arm.data.info, batch_size=cfg.batch_size, device=device,
                           num_workers=num_workers)
            record.update({f"val_{k}": v for k, v in val.metrics.items()})
        epoch_seconds = time.perf_counter() - t0
        seconds += epoch_seconds
        record["seconds"] = round(epoch_seconds, 3)
        history.append(record)
        checkpoint.save_training_state(
            state_path, model=model, optimizer=optimizer, schedule_state=schedule.state_dict(),
            epoch=epoch, rng=rng_state(), extra={"history": history, "seconds": seconds, "arm": arm.name})
        on_epoch(record)

    strategy.apply(model, cfg.epochs)
    test_data = cached.eval_dataset("test") if cached is not None else arm.data.test
    val_eval = (evaluate(task, net, val_data, arm.data.info, batch_size=cfg.batch_size, device=device,
                         num_workers=num_workers) if len(val_data) else None)
    test_eval = evaluate(task, net, test_data, arm.data.info, batch_size=cfg.batch_size, device=device,
                         num_workers=num_workers)
    cache_stats = None
    if cached is not None:
        cache_stats = {**cached.stats(), "head_training_seconds": round(seconds, 3)}
        cached.close()
    return ArmResult(arm.name, strategy.name, test_eval, val_eval, seconds + (cached.extraction_seconds if cached else 0.0),
                     cfg.epochs, history, cache_stats)


def _batch_size(targets: Any) -> int:
    if isinstance(targets, torch.Tensor):
        return int(targets.shape[0]) if targets.dim() else 1
    return len(targets)
