"""Strategies: which parameters train, which lr each named group gets, BatchNorm modes."""

from __future__ import annotations

import pytest
import torch
from tlengine.config import StrategyConfig, TrainConfig
from tlengine.model import Backbone, TransferModel
from tlengine.strategies import FeatureExtraction, FineTune, Scratch
from tlengine.training.optim import LRSchedule, build_optimizer
from torch import nn


def make_model() -> TransferModel:
    blocks = [nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()) for _ in range(3)]
    blocks[1][0] = nn.Conv2d(4, 4, 3, padding=1)
    blocks[2][0] = nn.Conv2d(4, 4, 3, padding=1)
    body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    backbone = Backbone(body, 4, [(f"b{i}", b) for i, b in enumerate(blocks)], {"input_size": 8}, "test")
    return TransferModel(backbone, nn.Linear(4, 2))


def trainable(model: TransferModel) -> list[str]:
    return [n for n, (_, b) in zip(model.block_names, model.blocks) if all(p.requires_grad for p in b.parameters())]


def test_feature_extraction_freezes_backbone_and_keeps_bn_stats():
    model = make_model()
    s = FeatureExtraction(StrategyConfig(name="feature-extraction"))
    s.apply(model, 1)
    s.train_mode(model)
    assert trainable(model) == [] and all(p.requires_grad for p in model.head.parameters())
    assert model.frozen_parts == {"backbone"}
    bn = model.blocks[0][1][1]
    before = bn.running_mean.clone()
    out = model(torch.randn(4, 3, 8, 8) * 5 + 3)
    assert not bn.training and torch.equal(bn.running_mean, before)
    assert out.requires_grad  # the head still gets gradients
    out.sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())


def test_a_frozen_part_holding_a_trained_attached_part_still_builds_a_graph():
    """Feature extraction freezes every pretrained part, but a part with a new part attached
    inside it (a decoder's cross-attention, an adapter) must run with autograd, or the
    attached part gets no gradient."""
    model = make_model()
    inner = nn.Conv2d(4, 4, 1)
    block = model.blocks[1][1]
    block.insert(1, inner)  # an adapter inside block b1: its parameters are the attached part's
    model.add_part("adapter", inner, attached=True)
    s = FeatureExtraction(StrategyConfig(name="feature-extraction"))
    s.apply(model, 1)
    s.train_mode(model)
    assert model.frozen_parts == set()  # would be {"backbone"} without the adapter
    assert all(p.requires_grad for p in inner.parameters())
    assert not any(p.requires_grad for n, p in model.backbone.named_parameters() if not n.startswith("1.1."))
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert inner.weight.grad is not None and inner.weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.backbone.named_parameters() if not n.startswith("1.1."))


def test_fine_tune_top_k_and_discriminative_lr():
    model = make_model()
    s = FineTune(StrategyConfig(name="fine-tune", unfreeze=2, backbone_lr_mult=0.1))
    groups = s.param_groups(model, lr=0.01)
    assert [g["name"] for g in groups] == ["head", "backbone.b0", "backbone.b1", "backbone.b2"]
    assert groups[0]["lr"] == pytest.approx(0.01)
    assert all(g["lr"] == pytest.approx(0.001) for g in groups[1:])
    s.apply(model, 1)
    s.train_mode(model)
    assert trainable(model) == ["b1", "b2"]
    assert not model.blocks[0][1].training  # frozen block's BN keeps its statistics
    assert model.blocks[2][1].training


def test_layer_decay_per_block_and_per_part():
    model = make_model()
    s = FineTune(StrategyConfig(name="fine-tune", backbone_lr_mult=0.1, layer_decay=0.5))
    lrs = [g["lr"] for g in s.param_groups(model, lr=1.0)]
    assert lrs == pytest.approx([1.0, 0.025, 0.05, 0.1])  # head, then b0 (input side) .. b2 (top)
    per_part = FineTune(
        StrategyConfig(name="fine-tune", backbone_lr_mult=0.1, parts={"backbone": {"layer_decay": 0.1, "lr_mult": 1.0}})
    )
    assert [g["lr"] for g in per_part.param_groups(model, lr=1.0)] == pytest.approx([1.0, 0.01, 0.1, 1.0])
    with pytest.raises(ValueError, match="layer_decay"):
        StrategyConfig(name="fine-tune", layer_decay=1.5)


def test_update_frozen_bn_option():
    model = make_model()
    s = FineTune(StrategyConfig(name="fine-tune", unfreeze=1, update_frozen_bn=True))
    s.apply(model, 1)
    s.train_mode(model)
    assert model.blocks[0][1][1].training


def test_gradual_unfreezing_schedule():
    model = make_model()
    s = FineTune(StrategyConfig(name="fine-tune", gradual_unfreezing={"start_epoch": 1, "every_epochs": 2}))
    plan = {}
    for epoch in range(1, 9):
        s.apply(model, epoch)
        plan[epoch] = trainable(model)
    assert plan[1] == []
    assert plan[2] == ["b2"] and plan[3] == ["b2"]
    assert plan[4] == ["b1", "b2"]
    assert plan[6] == ["b0", "b1", "b2"] and plan[8] == ["b0", "b1", "b2"]


def test_scratch_trains_everything_at_full_lr():
    model = make_model()
    s = Scratch(StrategyConfig(name="scratch"))
    assert not s.uses_pretrained
    groups = s.param_groups(model, lr=0.02)
    assert all(g["lr"] == pytest.approx(0.02) for g in groups)
    s.apply(model, 1)
    assert trainable(model) == ["b0", "b1", "b2"]


def test_schedule_warmup_then_cosine_and_state_roundtrip():
    model = make_model()
    s = FineTune(StrategyConfig(name="fine-tune", backbone_lr_mult=0.5))
    opt = build_optimizer(s.param_groups(model, 1.0), TrainConfig(lr=1.0))
    sched = LRSchedule(opt, kind="cosine", total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] and lrs[-1] < lrs[3]
    assert opt.param_groups[1]["lr"] == pytest.approx(0.5 * opt.param_groups[0]["lr"])
    other = LRSchedule(opt, kind="cosine", total_steps=10, warmup_steps=2)
    other.load_state_dict(sched.state_dict())
    assert other.step_count == 10
