"""Checkpoints: atomic writes, training-state round trip with named groups."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from test_strategies import make_model
from tlengine.config import StrategyConfig, TrainConfig
from tlengine.errors import RunError
from tlengine.strategies import FineTune
from tlengine.training import checkpoint
from tlengine.training.optim import build_optimizer
from tlengine.training.seeding import rng_state, set_rng_state
from torch import nn


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
    checkpoint.save_training_state(
        path,
        model=model,
        optimizer=opt,
        schedule_state={"step": 2},
        epoch=2,
        rng=rng_state(),
        extra={"history": [{"epoch": 1}]},
    )
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


# ---------------------------------------------------------------------- failed and interrupted writes
def _saved(tmp_path):
    path = tmp_path / "state.safetensors"
    checkpoint.save_tensors(path, {"w": torch.ones(3)}, {"epoch": 1})
    return path, path.read_bytes()


@pytest.mark.parametrize(
    "failure",
    [
        SafetensorError('Error while serializing: I/O error: No space left on device (os error 28) at path "/x/.tmp1"'),
        SafetensorError("No space left on device"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_full_disk_is_one_sentence_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, failure):
    path, before = _saved(tmp_path)

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise failure

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(RunError) as err:
        checkpoint.save_tensors(path, {"w": torch.zeros(3)}, {"epoch": 2})
    assert str(err.value) == f"cannot write {path}: no space left on device"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]
    tensors, meta = checkpoint.load_tensors(path)
    assert meta == {"epoch": 1} and torch.equal(tensors["w"], torch.ones(3))


def test_write_interrupted_midway_keeps_previous_content(tmp_path, monkeypatch):
    """Killed half-way through writing (here: KeyboardInterrupt after half the bytes): the
    target still holds the previous checkpoint and no temporary file is left."""
    path, before = _saved(tmp_path)
    real_save = checkpoint.save_file

    def half_then_interrupt(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_file", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_tensors(path, {"w": torch.zeros(1000)}, {"epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]


def test_unwritable_folder_is_a_run_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    target = blocker / "m.safetensors"
    with pytest.raises(RunError, match=f"^cannot write {target}: not a directory$"):
        checkpoint.save_model(target, nn.Linear(2, 2), {})


@pytest.mark.parametrize("fused", [False, True])
def test_resumed_optimizer_matches_for_channels_last_parameters(tmp_path, fused):
    """Adam's moments come back in their parameter's layout (safetensors stores them
    contiguous), so a fused optimizer resumed from a checkpoint continues exactly."""
    from tlengine.training import checkpoint

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
        return net.to(memory_format=torch.channels_last)

    torch.manual_seed(1)
    batches = [torch.randn(4, 3, 8, 8) for _ in range(6)]

    def train(resume_at: int | None) -> torch.Tensor:
        net = model()
        opt = torch.optim.AdamW(net.parameters(), lr=0.01, fused=fused)
        for i, x in enumerate(batches):
            if i == resume_at:
                path = tmp_path / "state.safetensors"
                checkpoint.save_training_state(path, model=net, optimizer=opt, schedule_state={}, epoch=1, rng=({}, {}))
                net = model()
                opt = torch.optim.AdamW(net.parameters(), lr=0.01, fused=fused)
                checkpoint.load_training_state(path, model=net, optimizer=opt)
                moment = opt.state[net[0].weight]["exp_avg"]
                assert moment.stride() == net[0].weight.stride()
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    assert torch.equal(train(None), train(3))
