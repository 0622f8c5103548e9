"""Checkpoints: atomic writes, training-state round trip with named groups."""

from __future__ import annotations

import torch
from torch import nn

from tlengine.config import StrategyConfig, TrainConfig
from tlengine.strategies import FineTune
from tlengine.training import checkpoint
from tlengine.training.optim import build_optimizer
from tlengine.training.seeding import rng_state, set_rng_state

from test_strategies import make_model


def step(model, opt):
    loss = model(torch.randn(4, 3, 8, 8)).pow(2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_training_state_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = make_model()
    s = FineTune(StrategyConfig(name="fine-tune", gradual_unfreezing={"start_epoch": 1}))
    opt = build_optimizer(s.param_groups(model, 0.01), TrainConfig())
    s.apply(model, 1)
    step(model, opt)
    s.apply(model, 2)  # a block thaws: its group gets optimizer state from now on
    step(model, opt)
    path = tmp_path / "state.safetensors"
    checkpoint.save_training_state(path, model=model, optimizer=opt, schedule_state={"step": 2}, epoch=2,
                                   rng=rng_state(), extra={"history": [{"epoch": 1}]})
    expected_next = torch.rand(3)

    model2 = make_model()
    opt2 = build_optimizer(s.param_groups(model2, 0.01), TrainConfig())
    meta = checkpoint.load_training_state(path, model=model2, optimizer=opt2)
    set_rng_state(meta["rng_tensors"], meta["rng"])
    assert torch.equal(torch.rand(3), expected_next)
    assert meta["epoch"] == 2 and meta["schedule"] == {"step": 2} and meta["history"] == [{"epoch": 1}]
    assert [g["name"] for g in opt2.param_groups] == [g["name"] for g in opt.param_groups]
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"])


def test_truncated_checkpoint_is_refused(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "m.safetensors"
    checkpoint.save_model(path, model, {"task": "x"})
    assert (tmp_path / "m.json").is_file()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    import pytest

    from tlengine.errors import RunError

    with pytest.raises(RunError, match="unreadable or truncated"):
        checkpoint.load_tensors(path)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    checkpoint.save_model(tmp_path / "m.safetensors", nn.Linear(2, 2), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
