"""Multitask learning: one shared backbone, the stage's own head and one head per auxiliary task.

The stage's ``data`` is the main task; every auxiliary task is an extra dataset of the
stage (``extra_data: {parity: {...}}``) named in ``strategy.args.tasks``, built by the same
task with its own labels (e.g. the same images with ``label_groups``, or another
dataset). Per step the backbone runs on the main batch and on one batch of each auxiliary
dataset; the main loss is the task's own (through its head), each auxiliary loss is the
task's loss of a new linear head on pooled features (:func:`pooled_features`) against
that dataset's labels, so an auxiliary task is a classification whose classes come from
its dataset's ``info["classes"]``. After training each head is scored on its own test
split by the task's own metrics: ``<name>.accuracy`` etc. beside the main metrics.

How the losses are combined (``args.weighting``):

* ``fixed`` — ``main_weight * L_main + sum_k weight_k * L_k``.
* ``uncertainty`` — Kendall, Gal & Cipolla (CVPR 2018): a learned log-variance ``s_i``
  per task, ``sum_i exp(-s_i) * L_i + s_i`` (starting from ``s_i = -log(weight_i)``): a
  task whose loss stays high is down-weighted, the ``+ s_i`` term stops every weight from
  going to 0.
* ``gradnorm`` — Chen et al. (ICML 2018), on the shared representation (the gradient of
  each weighted loss with respect to the features it was computed from, as LibMTL's
  ``rep_grad``): learned weights ``w_i``, ``L_total = sum_i w_i * L_i`` trains the
  network with ``w`` held fixed, and ``L_grad = sum_i |G_i - mean(G) * r_i ** alpha|``
  (``G_i = w_i * ||dL_i/dfeatures_i||``, ``r_i`` the task's loss ratio ``L_i/L_i(0)``
  over the mean ratio) trains ``w`` alone; ``w`` is renormalised to sum to the starting
  weights' sum before every step. A task that trains slower than the others gets more
  weight.

The learned weights live in the strategy's part ``task_weights`` (saved with the model and
in the arm's own file, resumed with it); GradNorm's first losses ``L_i(0)`` are a buffer
there too, so a resumed run weighs as one that never stopped.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.utils._pytree import tree_flatten

from ..errors import TLEngineError
from ..model import TransferModel
from .base import StepContext
from .domain_adaptation import live_model, task_losses
from .domain_losses import pooled_features
from .fine_tune import FineTune

if TYPE_CHECKING:
    from ..task import TaskData

#: the key of the main task's loss among the named losses, and its weight's name
MAIN = "main"
#: the strategy part that holds the learned task weights
WEIGHTS_PART = "task_weights"
_RESERVED = {MAIN, "gradnorm", WEIGHTS_PART}


class AuxiliaryTask(BaseModel):
    """One auxiliary task of ``multitask``: ``strategy.args.tasks.<extra dataset name>``."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, gt=0.0, description="its loss weight (fixed), or the starting weight (learned)")
    hidden: int = Field(0, ge=0, description="width of a hidden ReLU layer in its head (0: a linear head)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the pooled features before its head")


class MultitaskArgs(BaseModel):
    """``strategy.args`` of ``multitask``."""

    model_config = ConfigDict(extra="forbid")

    tasks: dict[str, AuxiliaryTask] = Field(
        ..., min_length=1, description="auxiliary tasks: names of the stage's extra_data datasets, each with its head"
    )
    main_weight: float = Field(1.0, gt=0.0, description="the main task's loss weight (the start, when learned)")
    weighting: Literal["fixed", "uncertainty", "gradnorm"] = Field(
        "fixed", description="fixed weights, learned uncertainty weighting (Kendall et al.), or GradNorm (Chen et al.)"
    )
    alpha: float = Field(1.5, ge=0.0, description="gradnorm: how strongly slower tasks are pulled up (paper: 0-3)")

    @field_validator("tasks")
    @classmethod
    def _names(cls, v: dict[str, AuxiliaryTask]) -> dict[str, AuxiliaryTask]:
        bad = sorted(n for n in v if n in _RESERVED or not n or "." in n)
        if bad:
            raise ValueError(
                f"task names {bad} are reserved or invalid ({', '.join(sorted(_RESERVED))} and dotted names)"
            )
        return v


class TaskWeights(nn.Module):
    """The learned weighting's state: ``values`` [T] (uncertainty: log-variances ``s_i``;
    gradnorm: the weights ``w_i``), and GradNorm's first losses ``initial`` [T] (0 until
    the first step)."""

    def __init__(self, start: list[float], mode: str):
        super().__init__()
        w = torch.tensor(start, dtype=torch.float32)
        self.values = nn.Parameter(-w.log() if mode == "uncertainty" else w.clone())
        self.register_buffer("initial", torch.zeros(len(start)))


def auxiliary_head(dim: int, classes: int, hidden: int, dropout: float) -> nn.Sequential:
    """pooled features [N,dim] -> logits [N,classes]."""
    if hidden:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, classes))


class PooledHead(nn.Module):
    """An auxiliary head on the backbone's features, pooled first: what ``task.training_loss``
    calls for an auxiliary batch (features -> logits [N,K])."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features: Any) -> torch.Tensor:
        return self.head(pooled_features(features))


class AuxiliaryView(nn.Module):
    """The whole model with an auxiliary head instead of its own: what the task scores on
    that task's test split (``forward(inputs)`` -> logits [N,K])."""

    def __init__(self, model: TransferModel, head: nn.Module):
        super().__init__()
        self.model, self.head = model, PooledHead(head)

    def forward_features(self, inputs: Any) -> Any:
        return self.model.forward_features(inputs)

    def forward_head(self, features: Any) -> torch.Tensor:
        return self.head(features)

    def forward(self, inputs: Any) -> torch.Tensor:
        return self.forward_head(self.forward_features(inputs))


def uncertainty_weighted(losses: dict[str, torch.Tensor], log_vars: torch.Tensor) -> dict[str, torch.Tensor]:
    """Kendall et al.'s weighting: each ``L_i`` -> ``exp(-s_i) * L_i + s_i`` (``log_vars``
    [T] in the order of ``losses``)."""
    return {name: torch.exp(-s) * loss + s for (name, loss), s in zip(losses.items(), log_vars)}


def gradnorm_loss(
    grad_norms: torch.Tensor, weights: torch.Tensor, losses: torch.Tensor, initial: torch.Tensor, alpha: float
) -> torch.Tensor:
    """GradNorm's loss on the task weights alone.

    grad_norms: ``||dL_i/dfeatures_i||`` [T], detached; weights: ``w_i`` [T] (the only
    thing the result differentiates to); losses, initial: ``L_i`` now and at the first step
    [T]. ``G_i = w_i * grad_norms_i``; the target ``mean(G) * r_i ** alpha`` (``r_i`` =
    ``(L_i / L_i(0))`` over its mean) is a constant; the result is ``sum_i |G_i - target_i|``.
    """
    g = weights * grad_norms.detach()
    ratio = (losses.detach() / initial.clamp_min(1e-12)).float()
    r = ratio / ratio.mean().clamp_min(1e-12)
    target = (g.mean() * r**alpha).detach()
    return (g - target).abs().sum()


class Multitask(FineTune):
    """Fine-tuning on the main task plus auxiliary heads, each on its own extra dataset's labels."""

    name = "multitask"
    Args = MultitaskArgs

    @classmethod
    def needs_extra_data(cls, args: BaseModel) -> tuple[str, ...]:
        return tuple(args.tasks)  # type: ignore[attr-defined]

    def __init__(self, config: Any):
        super().__init__(config)
        #: each task's fixed weight, or where its learned weight starts: the main task first
        self.start_weights = {MAIN: self.args.main_weight, **{t: s.weight for t, s in self.args.tasks.items()}}
        self.order = list(self.start_weights)

    @staticmethod
    def head_name(task: str) -> str:
        """The part holding auxiliary task ``task``'s head."""
        return f"{task}_head"

    def prepare(self, model: TransferModel, data: "TaskData | None") -> None:
        dim = self.feature_dim(model, "its heads")
        extra = data.extra if data is not None else {}
        for task, spec in self.args.tasks.items():
            if task not in extra:
                raise TLEngineError(
                    f"strategy '{self.name}' needs the extra dataset '{task}' to size its head, and has none by that name"
                )
            classes = extra[task].info.get("classes")
            if not classes or len(classes) < 2:
                raise TLEngineError(
                    f"strategy '{self.name}': the auxiliary task '{task}' classifies, and its dataset names "
                    f"{len(classes or [])} classes (info['classes']); it needs at least 2"
                )
            model.add_part(
                self.head_name(task), auxiliary_head(dim, len(classes), spec.hidden, spec.dropout), owner="strategy"
            )
        if self.args.weighting != "fixed":
            start = list(self.start_weights.values())
            model.add_part(WEIGHTS_PART, TaskWeights(start, self.args.weighting), owner="strategy")

    # ------------------------------------------------------------------ the step
    def training_step(self, step: StepContext) -> dict[str, torch.Tensor]:
        model = live_model(step, self.name)
        features = {MAIN: model.forward_features(step.inputs)}
        main = task_losses(step, model, features[MAIN])
        raw = {MAIN: sum(main.values())}
        for task in self.args.tasks:
            inputs, targets = step.extra_batch(task)
            features[task] = model.forward_features(inputs)
            head = PooledHead(model.part(self.head_name(task)).module)
            loss = step.task.training_loss(head, features[task], targets)
            raw[task] = sum(loss.values()) if isinstance(loss, dict) else loss
        if self.args.weighting == "uncertainty":
            return uncertainty_weighted(raw, model.part(WEIGHTS_PART).module.values)
        if self.args.weighting == "gradnorm":
            return self._gradnorm(model.part(WEIGHTS_PART).module, raw, features)
        return {name: self.start_weights[name] * loss for name, loss in raw.items()}

    def _gradnorm(
        self, state: TaskWeights, raw: dict[str, torch.Tensor], features: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        w = state.values
        with torch.no_grad():  # keep the weights positive, summing to the starting total
            total = sum(self.start_weights.values())
            w.clamp_(min=1e-3 * total / len(w))
            w.mul_(total / w.sum())
        losses = torch.stack([raw[name].float() for name in self.order])
        weighted = {name: w[i].detach() * raw[name] for i, name in enumerate(self.order)}
        if not torch.is_grad_enabled() or not losses.requires_grad:
            return weighted
        if not bool(state.initial.gt(0).all()):
            state.initial.copy_(losses.detach())
        norms = []
        for name in self.order:
            shared = [t for t in tree_flatten(features[name])[0] if torch.is_tensor(t) and t.requires_grad]
            if not shared:  # the backbone is frozen this epoch (gradual unfreezing): nothing to balance
                return weighted
            grads = torch.autograd.grad(raw[name], shared, retain_graph=True, allow_unused=True)
            norms.append(math.sqrt(sum(float(g.float().pow(2).sum()) for g in grads if g is not None)))
        norms_t = torch.tensor(norms, device=w.device)
        return {**weighted, "gradnorm": gradnorm_loss(norms_t, w, losses, state.initial, self.args.alpha)}

    # ------------------------------------------------------------------ reporting
    def task_weights(self, model: TransferModel) -> dict[str, float]:
        """Each task's current loss weight (``exp(-s_i)`` for uncertainty weighting)."""
        if self.args.weighting == "fixed":
            return dict(self.start_weights)
        values = model.part(WEIGHTS_PART).module.values.detach().float()
        weights = torch.exp(-values) if self.args.weighting == "uncertainty" else values
        return {name: float(v) for name, v in zip(self.order, weights)}

    def extra_evaluations(self, model: TransferModel, data: "TaskData") -> dict[str, tuple[nn.Module, "TaskData"]]:
        return {
            task: (AuxiliaryView(model, model.part(self.head_name(task)).module), data.extra[task])
            for task in self.args.tasks
        }

    def describe(self, model: TransferModel, epoch: int) -> str:
        weights = ", ".join(f"{k} {v:.3g}" for k, v in self.task_weights(model).items())
        return f"{super().describe(model, epoch)}, multitask ({self.args.weighting} weights: {weights})"


__all__ = [
    "AuxiliaryTask",
    "AuxiliaryView",
    "Multitask",
    "MultitaskArgs",
    "PooledHead",
    "TaskWeights",
    "auxiliary_head",
    "gradnorm_loss",
    "uncertainty_weighted",
]
