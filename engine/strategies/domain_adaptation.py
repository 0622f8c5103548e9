"""Unsupervised domain adaptation: labelled source data, unlabelled target data.

The stage's ``data`` is the labelled *source* domain; its extra dataset ``target``
(``extra_data: {target: {...}}``) is the *target* domain, whose labels are never read.
Each strategy is fine-tuning (:class:`FineTune`: ``unfreeze``, ``backbone_lr_mult``,
``layer_decay``, gradual unfreezing and ``parts`` all apply) plus a loss that pulls the
two domains' features together; every one declares ``target`` so that all the arms of a
domain-adaptation stage see the same data:

* ``source-only`` — plain fine-tuning on the source: the baseline every DA pipeline reports.
* ``dann`` — domain-adversarial training (Ganin & Lempitsky, 2015): a domain discriminator
  (a new part, ``domain_discriminator``) learns to tell source (1) from target (0) features
  through a gradient reversal layer, so the backbone learns features it cannot tell apart.
  The reversal weight follows :func:`dann_coefficient` over training progress.
* ``coral`` — Deep CORAL (Sun & Saenko, 2016): ``weight * coral_loss`` aligns the feature
  covariances.
* ``mmd`` — DAN-style multi-kernel MMD (Long et al., 2015): ``weight * multi_kernel_mmd``.

Per step the backbone runs once on the source batch and once on a target batch; the
task's own loss is computed from the source features through the head alone (as in the
feature-cache path), so tasks keep their loss. Features are pooled to [N,D] with
:func:`pooled_features` (padded sequences under their mask) before alignment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from ..errors import TLEngineError
from ..model import TransferModel
from .base import StepContext
from .domain_losses import coral_loss, dann_coefficient, grad_reverse, multi_kernel_mmd, pooled_features
from .fine_tune import FineTune

if TYPE_CHECKING:
    from ..task import TaskData

#: the name of the stage's extra dataset that holds the (unlabelled) target domain
TARGET = "target"


class HeadOnly(nn.Module):
    """Calling it runs ``model.forward_head`` on features: what ``task.training_loss`` gets
    as its model so the source loss reuses features already computed (as the feature-cache
    path trains the head)."""

    def __init__(self, model: TransferModel):
        super().__init__()
        self.model = model

    def forward(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        return self.model.forward_head(features, *args, **kwargs)


class DomainAdaptation(FineTune):
    """Fine-tuning on the source plus an alignment loss on source and target features.

    Subclasses implement :meth:`alignment` (named extra losses from the pooled source and
    target features); :meth:`training_step` computes the task's loss and both domains'
    features once each.
    """

    extra_data: ClassVar[tuple[str, ...]] = (TARGET,)

    def training_step(self, step: StepContext) -> dict[str, torch.Tensor]:
        model = live_model(step, self.name)
        source = model.forward_features(step.inputs)
        losses = task_losses(step, model, source)
        target_inputs, _ = step.extra_batch(TARGET)  # the target's labels are never read
        target = model.forward_features(target_inputs)
        extra = self.alignment(pooled_features(source), pooled_features(target), step)
        clash = sorted(set(extra) & set(losses))
        if clash:
            raise TLEngineError(f"strategy '{self.name}': the task already returns losses named {', '.join(clash)}")
        return {**losses, **extra}

    def alignment(self, source: torch.Tensor, target: torch.Tensor, step: StepContext) -> dict[str, torch.Tensor]:
        """Named losses that align pooled source [N,D] and target [M,D] features."""
        raise NotImplementedError


def live_model(step: StepContext, strategy: str) -> TransferModel:
    """The whole model, checking the step runs it live (not a cached head)."""
    if step.model is not step.full_model:
        raise TLEngineError(
            f"strategy '{strategy}' needs live backbone features of both domains; this arm trains a head "
            "from cached features (a frozen_backbone strategy), which domain adaptation cannot use"
        )
    return step.full_model


def task_losses(step: StepContext, model: TransferModel, features: Any) -> dict[str, torch.Tensor]:
    """The task's own named loss(es) of the source batch, from ``features`` already computed
    (one loss is logged as ``source``, beside the domain term)."""
    losses = step.task.training_loss(HeadOnly(model), features, step.targets)
    return dict(losses) if isinstance(losses, dict) else {"source": losses}


# ---------------------------------------------------------------------- source only
class SourceOnly(FineTune):
    """Fine-tuning on the labelled source alone: the domain-adaptation baseline.

    It declares the target so every arm of a domain-adaptation stage has the same data,
    and never reads it."""

    name = "source-only"
    extra_data: ClassVar[tuple[str, ...]] = (TARGET,)

    def describe(self, model: TransferModel, epoch: int) -> str:
        return f"{super().describe(model, epoch)}, source only (target unused)"


# ---------------------------------------------------------------------- DANN
class DANNArgs(BaseModel):
    """``strategy.args`` of ``dann``."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(
        1.0, ge=0.0, description="largest weight of the reversed gradient the discriminator sends to the backbone"
    )
    gamma: float = Field(
        10.0, gt=0.0, description="steepness of the reversal weight's ramp 2/(1+exp(-gamma*progress))-1"
    )
    hidden: int = Field(256, ge=1, description="width of the domain discriminator's two hidden layers")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="dropout after each hidden layer of the discriminator")


def domain_discriminator(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    """features [N,dim] -> domain logit [N,1] (source: 1, target: 0)."""
    return nn.Sequential(
        nn.Linear(dim, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, 1),
    )


class DANN(DomainAdaptation):
    """Domain-adversarial training: a discriminator behind a gradient reversal layer.

    The discriminator minimises the domain loss; the reversed gradient makes the backbone
    maximise it, weighted by ``dann_coefficient(progress)`` (0 at the start, ~``weight`` at
    the end). ``coefficient`` holds the last step's weight.
    """

    name = "dann"
    Args = DANNArgs
    part_name: ClassVar[str] = "domain_discriminator"

    def __init__(self, config: Any):
        super().__init__(config)
        #: the reversal weight of the last training step
        self.coefficient = 0.0

    def prepare(self, model: TransferModel, data: "TaskData | None") -> None:
        dim = self.feature_dim(model, "its domain discriminator")
        model.add_part(self.part_name, domain_discriminator(dim, self.args.hidden, self.args.dropout), owner="strategy")

    def alignment(self, source: torch.Tensor, target: torch.Tensor, step: StepContext) -> dict[str, torch.Tensor]:
        discriminator = step.full_model.part(self.part_name).module
        width = discriminator[0].in_features
        if source.shape[1] != width:
            raise TLEngineError(
                f"strategy '{self.name}': pooled features are {source.shape[1]} wide, and the model's "
                f"feature_dim (the discriminator's input) is {width}"
            )
        self.coefficient = dann_coefficient(step.progress, gamma=self.args.gamma, max_weight=self.args.weight)
        return {"domain": domain_adversarial_loss(discriminator, source, target, self.coefficient)}

    def describe(self, model: TransferModel, epoch: int) -> str:
        return f"{super().describe(model, epoch)}, DANN (reversal weight up to {self.args.weight:g})"


def domain_adversarial_loss(
    discriminator: nn.Module, source: torch.Tensor, target: torch.Tensor, coeff: float
) -> torch.Tensor:
    """BCE-with-logits of ``discriminator`` on reversed source [N,D] (label 1) and target
    [M,D] (label 0) features, each domain's mean weighted 1/2 (unequal batches count alike)."""
    logits_s = discriminator(grad_reverse(source, coeff)).float().squeeze(-1)
    logits_t = discriminator(grad_reverse(target, coeff)).float().squeeze(-1)
    loss_s = F.binary_cross_entropy_with_logits(logits_s, torch.ones_like(logits_s))
    loss_t = F.binary_cross_entropy_with_logits(logits_t, torch.zeros_like(logits_t))
    return 0.5 * (loss_s + loss_t)


# ---------------------------------------------------------------------- CORAL
class CORALArgs(BaseModel):
    """``strategy.args`` of ``coral``."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, ge=0.0, description="weight of the CORAL loss added to the task's loss")


class CORAL(DomainAdaptation):
    """Deep CORAL: the task's loss plus ``weight * coral_loss(source, target)``."""

    name = "coral"
    Args = CORALArgs

    def alignment(self, source: torch.Tensor, target: torch.Tensor, step: StepContext) -> dict[str, torch.Tensor]:
        if source.shape[0] < 2 or target.shape[0] < 2:  # a one-row batch has no covariance: skip it
            return {"coral": (source.sum() + target.sum()) * 0.0}
        return {"coral": self.args.weight * coral_loss(source, target)}

    def describe(self, model: TransferModel, epoch: int) -> str:
        return f"{super().describe(model, epoch)}, CORAL (weight {self.args.weight:g})"


# ---------------------------------------------------------------------- MMD
class MMDArgs(BaseModel):
    """``strategy.args`` of ``mmd``."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(1.0, ge=0.0, description="weight of the MMD loss added to the task's loss")
    kernel_mults: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0],
        min_length=1,
        description="Gaussian kernel bandwidths, as multiples of the mean squared distance between features",
    )

    @field_validator("kernel_mults")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(m <= 0 for m in v):
            raise ValueError("every kernel multiplier must be > 0")
        return v


class MMD(DomainAdaptation):
    """DAN-style alignment: the task's loss plus ``weight * multi_kernel_mmd(source, target)``."""

    name = "mmd"
    Args = MMDArgs

    def alignment(self, source: torch.Tensor, target: torch.Tensor, step: StepContext) -> dict[str, torch.Tensor]:
        return {"mmd": self.args.weight * multi_kernel_mmd(source, target, kernel_mults=self.args.kernel_mults)}

    def describe(self, model: TransferModel, epoch: int) -> str:
        return f"{super().describe(model, epoch)}, multi-kernel MMD (weight {self.args.weight:g})"
