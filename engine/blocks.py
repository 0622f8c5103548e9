"""Ordered blocks of a pretrained part: which parameters unfreeze and train together.

A strategy trains a pretrained part block by block (gradual unfreezing, per-block
learning rates), so every part hands the core a list of ``(block name, module)`` pairs,
input side first, that covers each of its parameters exactly once. Nothing here knows
a modality: the partition is read from the module tree.

* :func:`partition_blocks` - the whole job for a CNN-like module: stages from its
  module order (:func:`generic_groups`), turned into blocks (:func:`make_blocks`).
* :func:`groups_from_param_names` - for a model that already knows its own grouping as
  lists of parameter names (timm's ``group_matcher``, a layer-decay recipe).
* :func:`check_partition` - the invariant, as a list of problems (empty when it holds).

Where one stage is a single module of the tree (ResNet ``layer1``) the block *is* that
module. Where a stage is several sibling modules or includes loose parameters (the
ResNet stem ``conv1`` + ``bn1``, a ViT patch embedding + class token + position
embedding) the block is a :class:`BlockGroup`: a container that *references* those
modules and parameters but is never attached to the model, so the model's
``state_dict`` keys stay exactly those of the original.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Union

from torch import nn

__all__ = [
    "Member",
    "Groups",
    "BlockGroup",
    "make_blocks",
    "generic_groups",
    "groups_from_param_names",
    "check_partition",
    "partition_blocks",
]

#: What a block is made of: a whole submodule or one loose parameter.
Member = Union[nn.Module, nn.Parameter]
#: (block name, [(qualified name, module or loose parameter), ...]) in input-to-output order.
Groups = list[tuple[str, list[tuple[str, Member]]]]

# Top-level children whose own children are the natural stages (torchvision's
# ``features`` of VGG/MobileNet/EfficientNet/DenseNet/ConvNeXt/Swin, RegNet's
# ``trunk_output``, MNASNet's ``layers``, MaxViT's ``blocks``, timm's ``stages``).
_EXPAND = {"features", "trunk_output", "layers", "blocks", "stages"}
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


class BlockGroup(nn.Module):
    """One block made of several modules and/or loose parameters of a model.

    It is a *view*: ``parameters()``, ``modules()`` (to find BatchNorm layers) and
    ``train()``/``eval()`` reach the referenced modules and parameters, which stay owned
    by the model. The group itself is never registered inside the model, so it adds
    no ``state_dict`` keys; ``.to()``/``.half()`` on the model convert the shared
    parameters in place, so the group keeps seeing them. It cannot be called.
    """

    def __init__(self, members: list[tuple[str, Member]]):
        super().__init__()
        self.member_names = [name for name, _ in members]
        self.parts = nn.ModuleList([m for _, m in members if isinstance(m, nn.Module)])
        for name, member in members:
            if isinstance(member, nn.Parameter):
                self.register_parameter(name.replace(".", "_"), member)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a BlockGroup only groups a model's parameters; call the model instead")

    def extra_repr(self) -> str:
        return "members=" + ", ".join(self.member_names)


def _group_name(names: list[str]) -> str:
    if len(names) <= 3:
        return "+".join(names)
    return f"{names[0]}..{names[-1]}"


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def make_blocks(groups: Groups) -> list[tuple[str, nn.Module]]:
    """Turn groups into blocks.

    Returns one ``(block name, module)`` pair per group, in the same order: a group of
    one module is that module itself; any other group (several members, or a loose
    parameter) becomes a :class:`BlockGroup` referencing its members.
    """
    blocks: list[tuple[str, nn.Module]] = []
    for name, members in groups:
        if len(members) == 1 and isinstance(members[0][1], nn.Module):
            blocks.append((name, members[0][1]))
        else:
            blocks.append((name, BlockGroup(members)))
    return blocks


def generic_groups(model: nn.Module) -> Groups:
    """Stages of a CNN-like model, input side first, from its module order.

    Top-level children are stages, except that a container named ``features``,
    ``trunk_output``, ``layers``, ``blocks`` or ``stages`` (a ``Sequential`` or
    ``ModuleList``) is replaced by its children. Consecutive leaf layers (conv, bn, ...)
    are merged into one stage that ends at a pooling layer: ResNet ``conv1 bn1 relu
    maxpool`` is the stem and VGG's ``features`` splits into its five conv stages.
    Parameters owned directly by the model (not by any child) join the first block.
    Children without parameters are left out.

    Returns the groups (see :data:`Groups`); the first is named ``stem`` when it is made
    of leaf layers or loose parameters, the others after their members.
    """
    items: list[tuple[str, nn.Module]] = []
    loose: list[tuple[str, nn.Parameter]] = [(n, p) for n, p in model.named_parameters(recurse=False)]
    for cname, child in model.named_children():
        if cname in _EXPAND and isinstance(child, (nn.Sequential, nn.ModuleList)):
            items.extend((f"{cname}.{n}", c) for n, c in child.named_children())
        else:
            items.append((cname, child))

    groups: Groups = []
    run: list[tuple[str, Member]] = []

    def close_run() -> None:
        if run:
            groups.append(("stem" if not groups else _group_name([n for n, _ in run]), list(run)))
            run.clear()

    for qname, module in items:
        if _is_leaf(module):
            if _has_params(module):
                run.append((qname, module))
            if isinstance(module, _POOLS):
                close_run()
        else:
            close_run()
            if _has_params(module):
                groups.append((qname, [(qname, module)]))
    close_run()
    if loose:
        if not groups:
            groups.append(("stem", []))
        name, members = groups[0]
        groups[0] = (name, list(loose) + members)
    return groups


def groups_from_param_names(model: nn.Module, param_groups: list[list[str]]) -> Groups:
    """Turn ordered groups of parameter names into groups of the largest whole modules.

    ``param_groups`` lists qualified parameter names (as ``model.named_parameters()``
    gives them), one list per block, input side first. A module whose parameters all
    fall in one group joins that group as a whole (so ``block.modules()`` finds its
    BatchNorm layers and ``block.train()`` reaches its dropout); a parameter whose owner
    mixes groups (timm ViT's ``cls_token``) joins alone.

    Returns the groups (see :data:`Groups`) in the order of ``param_groups``, each named
    after its members; groups that end up empty are dropped. Parameters named in no
    group are in no block: check the result with :func:`check_partition`.
    """
    group_of = {pname: gi for gi, names in enumerate(param_groups) for pname in names}
    groups_under: dict[str, set[int]] = defaultdict(set)
    for pname, gi in group_of.items():
        parts = pname.split(".")
        for k in range(len(parts)):
            groups_under[".".join(parts[:k])].add(gi)
    members: list[list[tuple[str, Member]]] = [[] for _ in param_groups]
    taken: set[str] = set()
    for mname, module in model.named_modules():
        parts = mname.split(".") if mname else []
        if any(".".join(parts[:k]) in taken for k in range(len(parts))):
            continue  # an ancestor already joined a group whole
        gis = groups_under.get(mname)
        if not gis:
            continue
        if len(gis) == 1:
            members[next(iter(gis))].append((mname or "model", module))
            taken.add(mname)
        else:
            for pname, param in module.named_parameters(recurse=False):
                qual = f"{mname}.{pname}" if mname else pname
                members[group_of[qual]].append((qual, param))
    return [(_group_name([n for n, _ in ms]), ms) for ms in members if ms]


def check_partition(module: nn.Module, blocks: list[tuple[str, nn.Module]]) -> list[str]:
    """Check that ``blocks`` hold every parameter of ``module`` exactly once.

    Returns the problems as plain sentences - a parameter in two blocks, a parameter in
    no block, a block holding a parameter that ``module`` does not own - or an empty
    list when ``blocks`` partition the parameters of ``module``.
    """
    owned = {id(p): n for n, p in module.named_parameters()}
    seen: dict[int, str] = {}
    problems = []
    for bname, block in blocks:
        for p in block.parameters():
            if id(p) not in owned:
                problems.append(f"block {bname} holds a parameter that is not the module's")
            elif id(p) in seen:
                problems.append(f"{owned[id(p)]} is in blocks {seen[id(p)]} and {bname}")
            seen[id(p)] = bname
    problems += [f"{n} is in no block" for i, n in owned.items() if i not in seen]
    return problems


def partition_blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Blocks of a CNN-like module: ``make_blocks(generic_groups(module))``.

    Returns ``(block name, module)`` pairs, input side first. They cover every parameter
    of ``module`` exactly once, unless an expanded container (see :func:`generic_groups`)
    owns parameters of its own; :func:`check_partition` tells.
    """
    return make_blocks(generic_groups(module))
