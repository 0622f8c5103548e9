"""The Strategy base class: what trains, at what rate, and (optionally) how a step runs.

A strategy never knows the modality. It sees a :class:`tlengine.model.TransferModel` as
named parts — pretrained parts split into blocks, new parts trained whole — and decides:

* before training: :meth:`Strategy.prepare` may add parts (adapters, LHUC scales, a
  domain discriminator) with ``model.add_part(..., owner="strategy")``;
* once: :meth:`Strategy.param_groups` puts every parameter in one named optimizer group
  (``<new part>`` at ``lr``, ``<part>.<block>`` at ``lr * lr_mult``);
* each epoch: :meth:`Strategy.apply` sets ``requires_grad`` (freezing, gradual
  unfreezing) and :meth:`Strategy.train_mode` puts frozen blocks in eval mode;
* each batch: :meth:`Strategy.training_step` returns the named losses of one batch. The
  default asks the task; a strategy overrides it for extra losses, batches from an extra
  dataset (``step.extra_batch("unlabelled")``) or per-step schedules.

Its own arguments come from ``strategy.args`` in the pipeline and are validated by the
pydantic model in :attr:`Strategy.Args` (unknown keys are config errors).

A strategy written against the first API — a subclass overriding
:meth:`trainable_blocks` and :meth:`backbone_lr_mult` — keeps working unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from ..config import PartPlan, StrategyConfig
from ..errors import TLEngineError
from ..model import TransferModel, check_param_groups, part_param_groups

if TYPE_CHECKING:
    from ..task import Task, TaskData


class NoArgs(BaseModel):
    """The arguments of a strategy that takes none: ``strategy.args`` must be empty."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StepContext:
    """What :meth:`Strategy.training_step` gets for one batch.

    model: the network to call on ``inputs`` (the whole model, or its head alone when the
        arm trains from the feature cache); ``full_model`` is always the whole model.
    inputs, targets: the batch, already on ``device``.
    epoch: counts from 1; ``step`` counts optimizer steps from 0 over the whole arm, out
        of ``total_steps`` (for schedules such as DANN's reversal weight).
    """

    task: "Task"
    model: nn.Module
    full_model: TransferModel
    inputs: Any
    targets: Any
    epoch: int
    step: int
    total_steps: int
    device: torch.device
    _extra: Callable[[str], tuple[Any, Any]] | None = field(default=None, repr=False)

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return min(1.0, self.step / max(1, self.total_steps))

    def extra_batch(self, name: str) -> tuple[Any, Any]:
        """The next ``(inputs, targets)`` batch of the stage's extra dataset ``name``
        (cycled; on ``device``). The strategy must list ``name`` in ``extra_data``."""
        if self._extra is None:
            raise KeyError(f"no extra dataset '{name}' in this stage")
        return self._extra(name)


class Strategy:
    """Decides what trains. Subclasses override :meth:`trainable_blocks` (and flags), and
    optionally :meth:`prepare`, :meth:`training_step` and :attr:`Args`."""

    name: ClassVar[str] = ""
    #: whether the arm's pretrained parts start from pretrained weights (False: scratch)
    uses_pretrained: ClassVar[bool] = True
    #: whether every pretrained part is frozen for the whole run (the feature-cache seam)
    frozen_backbone: ClassVar[bool] = False
    #: the pydantic model that validates ``strategy.args``
    Args: ClassVar[type[BaseModel]] = NoArgs
    #: names of the stage's ``extra_data`` datasets this strategy needs
    extra_data: ClassVar[tuple[str, ...]] = ()
    #: the arm is fitted by one call of :meth:`fit` (a classical baseline such as TF-IDF +
    #: logistic regression), not by gradient steps: no optimizer, no epochs
    fits_directly: ClassVar[bool] = False
    #: under torchrun, whether a step may leave trainable parameters without a gradient
    #: (DistributedDataParallel's ``find_unused_parameters``: a graph walk per step, so
    #: only the strategies whose steps skip parameters set it)
    ddp_find_unused_parameters: ClassVar[bool] = False

    def __init__(self, config: StrategyConfig):
        self.config = config
        self.args = self.Args.model_validate(config.args)
        self._frozen: dict[str, set[int]] = {}
        #: blocks (part -> indices) that trained in any epoch so far: what ``changed_state`` saves
        self._trained: dict[str, set[int]] = {}

    # ------------------------------------------------------------------ the plan
    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        """How many blocks of a pretrained part, counted from the top, train in ``epoch``
        (from 1)."""
        raise NotImplementedError

    def backbone_lr_mult(self) -> float:
        """Learning-rate multiplier of pretrained parts (new parts train at ``lr``)."""
        return 1.0

    def part_plan(self, part: str) -> PartPlan | None:
        """The pipeline's ``strategy.parts.<part>`` overrides, if any."""
        return self.config.parts.get(part)

    def part_uses_pretrained(self, part: str) -> bool:
        """Whether pretrained part ``part`` starts from pretrained weights in this arm."""
        plan = self.part_plan(part)
        if plan is not None and plan.init is not None:
            return plan.init == "pretrained"
        return self.uses_pretrained

    def part_trainable_blocks(self, part: str, num_blocks: int, epoch: int) -> int:
        plan = self.part_plan(part)
        if plan is None or (plan.unfreeze is None and plan.gradual_unfreezing is None):
            return self.trainable_blocks(num_blocks, epoch)
        unfreeze = plan.unfreeze if plan.unfreeze is not None else self.config.unfreeze
        return blocks_to_train(unfreeze, plan.gradual_unfreezing or self.config.gradual_unfreezing, num_blocks, epoch)

    def part_lr_mult(self, part: str) -> float:
        plan = self.part_plan(part)
        return plan.lr_mult if plan is not None and plan.lr_mult is not None else self.backbone_lr_mult()

    def block_lr_mult(self, part: str, index: int, num_blocks: int) -> float:
        """Multiplier of block ``index`` (0 = input side) of ``part``; override for
        layer-wise decay. Default: the part's multiplier for every block."""
        return self.part_lr_mult(part)

    @classmethod
    def needs_extra_data(cls, args: BaseModel) -> tuple[str, ...]:
        """Names of the stage's ``extra_data`` datasets this strategy reads, given its
        validated ``args`` (checked before a run starts). Default: :attr:`extra_data`; a
        strategy whose datasets are named in its args (``multitask``) overrides it."""
        return tuple(cls.extra_data)

    # ------------------------------------------------------------------ hooks
    def prepare(self, model: TransferModel, data: "TaskData") -> None:
        """Called once per arm, after the model is built and before the optimizer: add
        parts here with ``model.add_part(name, module, owner="strategy")``. ``data`` holds
        the stage's splits and, in ``data.extra``, its extra datasets; when ``predict``
        rebuilds a model it has only their ``info`` (empty splits), or is None for a run
        saved without extra datasets."""

    def fit(self, task: "Task", model: TransferModel, data: "TaskData", *, seed: int) -> None:
        """Fit the arm in one go (only for ``fits_directly`` strategies); called once, after
        :meth:`prepare`, with the model on its device. The loop then evaluates ``model``."""
        raise NotImplementedError(f"strategy '{self.name}' trains by gradient steps, not by fit()")

    def training_step(self, step: StepContext) -> dict[str, torch.Tensor]:
        """Named losses of one batch; the loop back-propagates their sum and logs each.
        Default: the task's loss (``task.training_loss``)."""
        losses = step.task.training_loss(step.model, step.inputs, step.targets)
        return losses if isinstance(losses, dict) else {"loss": losses}

    def feature_dim(self, model: TransferModel, sized: str) -> int:
        """The width D of ``model``'s pooled features [N,D] (``TransferModel.feature_dim``), what
        a strategy sizes the part it adds by (``sized``: e.g. "its domain discriminator");
        TLEngineError when the task's model does not set it."""
        dim = int(getattr(model, "feature_dim", 0) or 0)
        if dim <= 0:
            raise TLEngineError(
                f"strategy '{self.name}' sizes {sized} by the model's feature_dim, "
                f"and this task's model does not set it (TransferModel.feature_dim = {dim})"
            )
        return dim

    def extra_evaluations(self, model: TransferModel, data: "TaskData") -> dict[str, tuple[nn.Module, "TaskData"]]:
        """Further test evaluations that this strategy's parts answer, after the arm's own:
        ``{name: (network, other data)}``. The task scores ``network`` on ``other.test``
        with ``other.info`` and the metrics join the arm's test metrics as
        ``<name>.<metric>`` (e.g. ``multitask``'s auxiliary heads, each on its own labels).
        Default: none."""
        return {}

    # ------------------------------------------------------------------ mechanics
    def param_groups(self, model: TransferModel, lr: float) -> list[dict[str, Any]]:
        """Named parameter groups, one per new part and one per pretrained block; each
        carries ``name``, ``params``, ``base_lr`` (the schedule multiplies it) and ``lr``.
        Raises if a parameter is in no group or in two."""
        groups = []
        for name, part, block, params in part_param_groups(model):
            mult = 1.0
            if block is not None:
                names = [b for b, _ in model.part(part).blocks]
                mult = self.block_lr_mult(part, names.index(block), len(names))
            groups.append({"name": name, "params": params, "base_lr": lr * mult, "lr": lr * mult})
        check_param_groups(model, groups)
        return groups

    def frozen_block_indices(self, model: TransferModel, epoch: int, part: str | None = None) -> set[int]:
        """Indices of the frozen blocks of ``part`` (default: the first pretrained part)."""
        part_obj = model.part(part) if part else model.pretrained_parts[0]
        n = len(part_obj.blocks)
        k = max(0, min(n, self.part_trainable_blocks(part_obj.name, n, epoch)))
        return set(range(n - k))

    def apply(self, model: TransferModel, epoch: int) -> list[str]:
        """Set ``requires_grad`` for ``epoch``; returns the names of trainable blocks."""
        trainable: list[str] = []
        self._frozen = {}
        fully_frozen = set()
        for part in model.parts.values():
            if not part.pretrained:
                continue
            frozen = self.frozen_block_indices(model, epoch, part.name)
            self._frozen[part.name] = frozen
            for i, (block, module) in enumerate(part.blocks):
                for p in module.parameters():
                    p.requires_grad_(i not in frozen)
                if i not in frozen:
                    self._trained.setdefault(part.name, set()).add(i)
                    trainable.append(block if len(model.pretrained_parts) == 1 else f"{part.name}.{block}")
            if len(frozen) == len(part.blocks):
                fully_frozen.add(part.name)
        # New parts always train, also when attached inside a frozen pretrained part.
        for part in model.parts.values():
            if not part.pretrained:
                for p in part.module.parameters():
                    p.requires_grad_(True)
        # A frozen part that holds a trained attached part (a decoder's new cross-attention,
        # an adapter) must still build an autograd graph: it is not run as a frozen part.
        attached_ids = {id(p) for part in model.parts.values() if part.attached for p in part.module.parameters()}
        holding = {
            name for name in fully_frozen if any(id(p) in attached_ids for p in model.part(name).module.parameters())
        }
        model.frozen_parts = fully_frozen - holding if self.frozen_backbone else set()
        execution = getattr(model, "execution", None)
        if execution is not None:  # frozen blocks of a part that trains run in reduced precision
            attached = [p.module for p in model.parts.values() if p.attached]
            for part in model.pretrained_parts:
                frozen = (
                    []
                    if part.name in model.frozen_parts
                    else [m for i, (_, m) in enumerate(part.blocks) if i in self._frozen[part.name]]
                )
                execution.freeze_blocks(part.name, frozen, keep_fp32=attached)
        return trainable

    def changed_state(self, model: TransferModel) -> dict[str, torch.Tensor]:
        """What this arm changed on top of its pretrained start: the state-dict entries of
        every new part (heads, adapters, LHUC scales) and of every pretrained block that
        trained in some epoch. Loaded over the untouched pretrained weights it gives the
        arm's model (``delta.safetensors``: a speaker's fine-tuned top layers)."""
        modules = [p.module for p in model.parts.values() if not p.pretrained]
        for part in model.pretrained_parts:
            modules += [m for i, (_, m) in enumerate(part.blocks) if i in self._trained.get(part.name, set())]
        ids = {id(t) for m in modules for t in (*m.parameters(), *m.buffers())}
        live = model.state_dict(keep_vars=True)  # keep_vars: to match tensors by identity
        return {k: v.detach() for k, v in live.items() if id(v) in ids}

    def train_mode(self, model: TransferModel) -> None:
        """``model.train()``, then frozen blocks back to eval so BatchNorm statistics and
        dropout stay as pretrained (BatchNorm may update if ``update_frozen_bn``); new
        parts attached inside a frozen block go back to train mode."""
        model.train()
        for part in model.pretrained_parts:
            frozen = self._frozen.get(part.name, set())
            for i, (_, block) in enumerate(part.blocks):
                if i in frozen:
                    block.eval()
                    if self.config.update_frozen_bn:
                        for m in block.modules():
                            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                                m.train()
        for part in model.parts.values():
            if part.attached:
                part.module.train()

    def describe(self, model: TransferModel, epoch: int) -> str:
        n = len(model.blocks)
        k = n - sum(len(self.frozen_block_indices(model, epoch, p.name)) for p in model.pretrained_parts)
        return f"{k}/{n} pretrained blocks trainable"


def blocks_to_train(unfreeze: Any, gradual: Any, num_blocks: int, epoch: int) -> int:
    """Top-k blocks (``unfreeze``: ``"all"`` or k) training in ``epoch``, thawed one at a
    time from the top when ``gradual`` (``start_epoch``, ``every_epochs``) is set."""
    k = num_blocks if unfreeze == "all" else int(unfreeze)
    if gradual is None:
        return k
    if epoch <= gradual.start_epoch:
        return 0
    return min(k, (epoch - gradual.start_epoch - 1) // gradual.every_epochs + 1)
