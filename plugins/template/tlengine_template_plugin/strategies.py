"""Strategy ``template-mixup``: fine-tuning with mixup, showing the whole strategy API.

It is written only against tlengine's public API, as a plugin outside tlengine would be:

* **what trains** - it subclasses :class:`tlengine.strategies.FineTune`, so ``unfreeze``,
  ``backbone_lr_mult``, ``gradual_unfreezing`` and ``parts`` work as for ``fine-tune``;
* **its own arguments** - :class:`MixupArgs` validates ``strategy.args`` (``alpha``,
  ``prob``); an unknown key or a bad value is a config error before anything runs;
* **a part of its own** - :meth:`TemplateMixup.prepare` adds ``template_temperature``
  (one learned scalar, ``owner="strategy"``), which the run also saves alone in
  ``own.safetensors``;
* **its own training step** - :meth:`TemplateMixup.training_step` mixes the images of a
  batch and returns the named loss ``{"mixup": ...}``, logged as ``train_loss_mixup``.

Mixup (Zhang et al., 2018): with ``lam ~ Beta(alpha, alpha)`` and a random permutation
``perm`` of the batch, the network sees ``lam * x + (1 - lam) * x[perm]`` and the loss is
``lam * loss(out, y) + (1 - lam) * loss(out, y[perm])``. Every random number comes from
torch's global CPU generator, which the training loop seeds at the start of each epoch,
so a run is reproducible and a resumed run continues exactly (and CPU and GPU runs draw
the same ``lam`` and ``perm``).

The temperature ``T`` (stored as ``log T``, so it stays positive; it starts at 1) divides
the logits inside the training step only: it lets the training loss adapt how sharp the
logits must be for the soft, mixed targets. Evaluation and ``tlengine predict`` call the
model as usual, on unscaled logits; dividing by a positive ``T`` would not change which
class wins anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field
from tlengine.errors import TLEngineError
from tlengine.strategies import FineTune
from torch import nn

if TYPE_CHECKING:
    from tlengine.model import TransferModel
    from tlengine.strategies.base import StepContext
    from tlengine.task import TaskData

STRATEGY = "template-mixup"
TEMPERATURE_PART = "template_temperature"


class MixupArgs(BaseModel):
    """``strategy.args`` of ``template-mixup`` (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(0.4, gt=0.0, description="Beta(alpha, alpha) parameter of the mixing weight lam")
    prob: float = Field(1.0, ge=0.0, le=1.0, description="chance that a batch is mixed (else trained as is)")


class Temperature(nn.Module):
    """One learned temperature ``T = exp(log_temperature)``, starting at 1: ``logits / T``."""

    def __init__(self) -> None:
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    @property
    def value(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.value.to(logits.dtype)


def sample_mixup(batch_size: int, alpha: float, prob: float) -> tuple[float, torch.Tensor | None]:
    """``(lam, perm)`` for one batch from torch's global CPU generator, or ``(1.0, None)``
    when the batch is not mixed (probability ``1 - prob``).

    Always draws in this order: one uniform number (mix or not), then, if mixing, ``lam``
    from Beta(alpha, alpha) and a permutation of ``batch_size``.
    """
    if float(torch.rand(())) >= prob:
        return 1.0, None
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    return lam, torch.randperm(batch_size)


class TemplateMixup(FineTune):
    """Fine-tune with mixup of the input images and a learned logit temperature (template plugin)."""

    name = STRATEGY
    Args = MixupArgs

    def prepare(self, model: "TransferModel", data: "TaskData | None") -> None:
        """Add the temperature part. ``data`` is None when ``predict`` rebuilds the model:
        the part must be added all the same, so the saved weights load into it."""
        model.add_part(TEMPERATURE_PART, Temperature(), owner="strategy")

    def training_step(self, step: "StepContext") -> dict[str, torch.Tensor]:
        x, y = step.inputs, step.targets
        if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
            raise TLEngineError(
                f"strategy '{self.name}' mixes image tensors; this task's inputs are {type(x).__name__}"
            )
        lam, perm = sample_mixup(x.shape[0], self.args.alpha, self.args.prob)
        temperature = step.full_model.part(TEMPERATURE_PART).module
        if perm is None:
            return {"mixup": step.task.loss(temperature(step.model(x)), y)}
        perm = perm.to(x.device)
        out = temperature(step.model(lam * x + (1.0 - lam) * x[perm]))
        loss = lam * step.task.loss(out, y) + (1.0 - lam) * step.task.loss(out, y[perm])
        return {"mixup": loss}
