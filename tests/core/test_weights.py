"""Loading weight files: plain state dicts load; pickled code, random bytes and truncated
files are refused with one sentence naming the file."""

from __future__ import annotations

import os
import pickle
import random
import shlex
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tlengine.errors import WeightsError
from tlengine.weights import load_state_dict_file


class RunsCommand:
    """Unpickling this runs a shell command (the classic pickle payload)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def assert_one_sentence(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert "weights_only" not in msg and "Traceback" not in msg, msg
    return msg


def test_plain_state_dict_loads(tmp_path: Path) -> None:
    state = torch.nn.Linear(3, 2).state_dict()
    torch.save(state, tmp_path / "m.pt")
    save_file(dict(state), str(tmp_path / "m.safetensors"))
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "wrapped.pth")
    for name in ("m.pt", "m.safetensors", "wrapped.pth"):
        got = load_state_dict_file(tmp_path / name)
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickled_code_is_refused_without_running_it(
    tmp_path: Path, writer: str, recwarn: pytest.WarningsRecorder
) -> None:
    marker = tmp_path / "payload-ran"
    payload = {"weight": torch.zeros(2), "evil": RunsCommand(f"touch {shlex.quote(str(marker))}")}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh, protocol=4)
    with pytest.raises(WeightsError) as err:
        load_state_dict_file(path)
    assert not marker.exists(), "the pickled payload was executed"
    msg = assert_one_sentence(err, path)
    assert msg == (
        f"{path} is not a plain tensor state dict (it holds pickled code, which tlengine refuses to "
        "run); re-save it with torch.save(model.state_dict()) or as .safetensors"
    )
    assert not [w for w in recwarn if "torch" in str(w.filename)], [str(w.message) for w in recwarn]


def test_random_bytes_pt_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "random.pt"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(WeightsError) as err:
        load_state_dict_file(path)
    assert "corrupt" in assert_one_sentence(err, path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match="corrupt"):
        load_state_dict_file(tmp_path / "empty.pt")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_file_is_corrupt(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"m{suffix}"
    state = {"w": torch.randn(64, 64)}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError) as err:
        load_state_dict_file(path)
    assert "corrupt or truncated" in assert_one_sentence(err, path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.safetensors")
