"""tlengine.blocks: ordered blocks that cover a model's parameters exactly once."""

from __future__ import annotations

import torch
from tlengine.blocks import (
    BlockGroup,
    check_partition,
    generic_groups,
    groups_from_param_names,
    make_blocks,
    partition_blocks,
)
from torch import nn


class Net(nn.Module):
    """A stem of loose layers, two stages, a loose parameter and a parameter-free tail."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.stage1 = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU())
        self.features = nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1))
        self.head = nn.Flatten()


def test_partition_blocks_follows_module_order_and_covers_every_parameter():
    net = Net()
    blocks = partition_blocks(net)
    # leaf layers run together until a pooling layer: the stem, and the two 1x1 convs
    assert [n for n, _ in blocks] == ["stem", "stage1", "features.0+features.1"]
    stem = blocks[0][1]
    assert isinstance(stem, BlockGroup)
    assert {id(p) for p in stem.parameters()} == {
        id(net.scale),
        *map(id, net.conv.parameters()),
        *map(id, net.bn.parameters()),
    }
    assert blocks[1][1] is net.stage1  # a whole stage is the module itself
    assert check_partition(net, blocks) == []
    # a BlockGroup is a view: no state-dict keys, and it cannot be called
    assert not any(k.startswith("parts") for k in net.state_dict())
    try:
        stem(torch.zeros(1))
    except RuntimeError as err:
        assert "BlockGroup" in str(err)
    else:
        raise AssertionError("a BlockGroup must not be callable")


def test_check_partition_names_missing_doubled_and_foreign_parameters():
    net = Net()
    groups = generic_groups(net)
    blocks = make_blocks(groups[1:])  # drop the stem
    blocks.append(("again", net.stage1))
    blocks.append(("foreign", nn.Linear(2, 2)))
    problems = check_partition(net, blocks)
    assert any("conv.weight is in no block" == p for p in problems)
    assert any("stage1.0.weight is in blocks stage1 and again" == p for p in problems)
    assert any("block foreign holds a parameter" in p for p in problems)


def test_groups_from_param_names_takes_whole_modules_and_splits_mixed_owners():
    net = Net()
    param_groups = [
        ["scale", "conv.weight", "conv.bias", "bn.weight"],
        ["bn.bias", "stage1.0.weight", "stage1.0.bias"],
        ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias"],
    ]
    groups = groups_from_param_names(net, param_groups)
    first = dict(groups[0][1])
    assert first["conv"] is net.conv and first["bn.weight"] is net.bn.weight  # bn mixes groups
    assert dict(groups[1][1])["stage1"] is net.stage1
    assert dict(groups[2][1])["features"] is net.features
    assert check_partition(net, make_blocks(groups)) == []
