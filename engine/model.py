"""The model every strategy works on: a set of named parts.

A *pretrained part* (an image backbone, a text encoder, a speech decoder) is split into
ordered blocks, input side first; strategies freeze, thaw and re-weight it block by
block. A *new part* (a head, a neck, an adapter, a domain discriminator) has no blocks
and is trained as one piece. Every parameter of the model belongs to exactly one part
(and, inside a pretrained part, to exactly one block): :func:`param_groups` names the
optimizer group of each, and :func:`check_param_groups` names any orphan.

Parts are attributes of the model (``model.backbone``, ``model.head``), so state-dict
keys read ``<part>.<...>``. A part may also be *attached* inside another part's module
tree (an adapter inserted into an encoder layer, LHUC scales): it is then registered
with ``attached=True`` and claims its parameters from the enclosing part.

The common case, ``head(backbone(x))``, is what :class:`TransferModel` does by default;
a task whose model has more parts (a detector, an encoder-decoder) subclasses it and
overrides :meth:`TransferModel.forward_features` / :meth:`TransferModel.forward_head`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import TLEngineError


@dataclass
class Backbone:
    """A feature extractor with its head removed, as a backbone factory returns it.

    module: maps the task's input batch (images: float [N,3,H,W]) to features [N,D]
        (or [N,C,H,W] / [N,T,D] for tasks whose head pools itself).
    feature_dim: D, the size of the features the new head receives.
    blocks: (name, submodule) pairs covering the backbone's parameters, input side first.
    preprocessing: what the inputs must look like, e.g. ``{"input_size": 224,
        "mean": [...], "std": [...], "interpolation": "bilinear"}``.
    arch: identity of the architecture (for weight checks and cache keys).
    """

    module: nn.Module
    feature_dim: int
    blocks: list[tuple[str, nn.Module]]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    arch: str = ""


@dataclass
class Part:
    """One named part of a :class:`TransferModel`.

    blocks: for a pretrained part, (block name, module) pairs input side first; empty
        for a new part (trained whole).
    owner: ``"task"`` for parts the task builds, ``"strategy"`` for parts a strategy adds
        (their parameters can be saved alone, see :meth:`TransferModel.owned_state_dict`).
    attached: the module lives inside another part's tree (not a direct child).
    """

    name: str
    module: nn.Module
    blocks: list[tuple[str, nn.Module]] = field(default_factory=list)
    owner: str = "task"
    attached: bool = False

    @property
    def pretrained(self) -> bool:
        """Whether this is a pretrained part (has blocks), whatever its init in this arm."""
        return bool(self.blocks)


class TransferModel(nn.Module):
    """A model as named parts; by default ``head(backbone(x))``.

    ``TransferModel(backbone, head)`` builds the two-part model image classification
    uses. Other tasks call ``TransferModel()`` and :meth:`add_part` for each part.

    ``frozen_parts`` (set by strategies) lists parts that run without autograd in
    :meth:`run_part`; ``execution`` (set by :func:`tlengine.execution.configure_execution`)
    says how parts run: precision, channels-last, compiled.
    """

    def __init__(self, backbone: Backbone | None = None, head: nn.Module | None = None):
        super().__init__()
        self._parts: dict[str, Part] = {}
        self.preprocessing: dict[str, Any] = {}
        self.arch = ""
        self.feature_dim = 0
        self.frozen_parts: set[str] = set()
        self.execution: Any = None  # tlengine.execution.Execution, or None: plain calls
        if backbone is not None:
            self.add_part("backbone", backbone.module, blocks=backbone.blocks)
            self.preprocessing = dict(backbone.preprocessing)
            self.arch = backbone.arch
            self.feature_dim = backbone.feature_dim
        if head is not None:
            self.add_part("head", head)

    # ------------------------------------------------------------------ parts
    def add_part(
        self,
        name: str,
        module: nn.Module,
        *,
        blocks: list[tuple[str, nn.Module]] | None = None,
        owner: str = "task",
        attached: bool = False,
    ) -> nn.Module:
        """Register ``module`` as part ``name``; returns it.

        ``attached=True``: the module already sits inside another part's tree (e.g. an
        adapter inserted into an encoder layer); it is not made a child again, and its
        parameters are claimed from the enclosing part's blocks.
        """
        if name in self._parts:
            raise TLEngineError(f"model part '{name}' is added twice")
        if not attached:
            self.add_module(name, module)
        self._parts[name] = Part(name, module, list(blocks or []), owner, attached)
        return module

    @property
    def parts(self) -> dict[str, Part]:
        """Every part by name, in the order they were added."""
        return dict(self._parts)

    def part(self, name: str) -> Part:
        return self._parts[name]

    @property
    def pretrained_parts(self) -> list[Part]:
        return [p for p in self._parts.values() if p.pretrained]

    @property
    def blocks(self) -> list[tuple[str, nn.Module]]:
        """The blocks of every pretrained part, as ``(name, module)``; with one pretrained
        part the names are the part's own block names (``backbone`` keeps its old API)."""
        pre = self.pretrained_parts
        if len(pre) == 1:
            return list(pre[0].blocks)
        return [(f"{p.name}.{b}", m) for p in pre for b, m in p.blocks]

    @property
    def block_names(self) -> list[str]:
        return [name for name, _ in self.blocks]

    # ------------------------------------------------------------------ forward
    def run_part(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call part ``name``; a frozen part runs without building an autograd graph (and,
        under an ``execution`` plan, in inference mode, reduced precision, compiled)."""
        module = self._parts[name].module
        if self.execution is not None:
            return self.execution.run(name, module, name in self.frozen_parts, args, kwargs)
        if name in self.frozen_parts:
            with torch.no_grad():
                return module(*args, **kwargs)
        return module(*args, **kwargs)

    def forward_features(self, inputs: Any) -> Any:
        """What the frozen part computes: the feature cache stores this per sample.
        Default: ``backbone(inputs)``."""
        return self.run_part("backbone", inputs)

    def forward_head(self, features: Any, *args: Any, **kwargs: Any) -> Any:
        """Everything after :meth:`forward_features`. Default: ``head(features)``."""
        return self.run_part("head", features, *args, **kwargs)

    def forward(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        return self.forward_head(self.forward_features(inputs), *args, **kwargs)

    def hidden_layers(self) -> list[HiddenLayer]:
        """The layers, input side first, whose outputs strategies such as ``lhuc`` and
        ``adapter`` may change. Default: none; a task's model lists its encoder layers."""
        return []

    # ------------------------------------------------------------------ ownership
    def owned_parameters(self, owner: str = "strategy") -> list[tuple[str, nn.Parameter]]:
        """(qualified name, parameter) of every part whose owner is ``owner``."""
        ids = {id(p) for part in self._parts.values() if part.owner == owner for p in part.module.parameters()}
        return [(n, p) for n, p in self.named_parameters() if id(p) in ids]

    def owned_state_dict(self, owner: str = "strategy") -> dict[str, torch.Tensor]:
        """The state-dict entries (parameters and buffers) of the parts ``owner`` added:
        what an adapter file holds. Loads with ``load_state_dict(..., strict=False)`` on
        top of the unchanged base."""
        ids = set()
        for part in self._parts.values():
            if part.owner == owner:
                ids |= {id(t) for t in part.module.parameters()} | {id(t) for t in part.module.buffers()}
        live = self.state_dict(keep_vars=True)  # keep_vars: to match tensors by identity
        return {k: v.detach() for k, v in live.items() if id(v) in ids}


@dataclass
class HiddenLayer:
    """A layer whose output a strategy may re-scale or adapt (LHUC, bottleneck adapters).

    name: ``<part>.<layer>``, used for the strategy's parameter names.
    module: called once per forward; its output is a tensor [..., width] (or a tuple
        whose first item is one: transformers' layers), hidden units on the last axis.
    width: the number of hidden units D.
    """

    part: str
    name: str
    module: nn.Module
    width: int


# ---------------------------------------------------------------------- optimizer groups
def _claimed_by_new_parts(model: TransferModel) -> set[int]:
    return {id(p) for part in model.parts.values() if not part.pretrained for p in part.module.parameters()}


def part_param_groups(model: TransferModel) -> list[tuple[str, str, str | None, list[nn.Parameter]]]:
    """Every parameter of ``model`` in exactly one named group.

    Returns ``(group name, part name, block name or None, params)`` in a fixed order:
    new parts first (``<part>``), then each pretrained part's blocks
    (``<part>.<block>``). A new part attached inside a pretrained part claims its
    parameters first, so a block never holds an adapter's parameters. Groups without
    parameters are left out. A parameter shared by two blocks goes to the first.
    """
    groups: list[tuple[str, str, str | None, list[nn.Parameter]]] = []
    seen: set[int] = set()
    for part in model.parts.values():
        if part.pretrained:
            continue
        params = [p for p in part.module.parameters() if id(p) not in seen]
        seen |= {id(p) for p in params}
        if params:
            groups.append((part.name, part.name, None, params))
    for part in model.parts.values():
        for block, module in part.blocks:
            params = [p for p in module.parameters() if id(p) not in seen]
            seen |= {id(p) for p in params}
            if params:
                groups.append((f"{part.name}.{block}", part.name, block, params))
    return groups


def check_param_groups(model: nn.Module, groups: list[dict[str, Any]]) -> None:
    """Raise if a parameter of ``model`` is in no group or in two (names them)."""
    where: dict[int, list[str]] = {}
    for g in groups:
        for p in g["params"]:
            where.setdefault(id(p), []).append(g["name"])
    orphans = [n for n, p in model.named_parameters() if id(p) not in where]
    twice = [f"{n} ({', '.join(where[id(p)])})" for n, p in model.named_parameters() if len(where.get(id(p), [])) > 1]
    if orphans or twice:
        parts = []
        if orphans:
            shown = ", ".join(orphans[:5]) + (f", ... ({len(orphans)} in all)" if len(orphans) > 5 else "")
            parts.append(f"parameters in no optimizer group: {shown} (add them to a part or a part's blocks)")
        if twice:
            parts.append(f"parameters in two optimizer groups: {', '.join(twice[:5])}")
        raise TLEngineError("the model's parts do not cover its parameters exactly once: " + "; ".join(parts))


def load_parts(model: TransferModel, state: Any, parts: Any, *, source: str) -> None:
    """Load each part in ``parts`` from ``state`` (a full model state dict whose keys read
    ``<part>.<...>``), strictly: a part whose keys do not match raises, naming it."""
    for name in parts:
        prefix = name + "."
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        module = model.part(name).module
        if not sub:
            raise TLEngineError(f"{source} has no '{name}' part to start this model's '{name}' from")
        try:
            missing, unexpected = module.load_state_dict(sub, strict=False)
        except RuntimeError as exc:  # shape mismatches
            first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
            raise TLEngineError(
                f"part '{name}' of {source} does not fit this model's '{name}': {first.strip()}"
            ) from None
        if missing or unexpected:
            raise TLEngineError(
                f"part '{name}' of {source} does not fit this model's '{name}' ({len(missing)} missing, "
                f"{len(unexpected)} unexpected keys, e.g. {(list(missing) + list(unexpected))[0]})"
            )
