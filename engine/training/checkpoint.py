"""Checkpoints in safetensors: final models, and full training state for ``--resume``.

* **Model checkpoint** ``<name>.safetensors`` + ``<name>.json``: the TransferModel's
  state dict (``backbone.*``, ``head.*``) and JSON metadata (task, backbone, classes,
  preprocessing, strategy...) that ``tlengine predict`` needs to rebuild the model.
* **Training state** ``state.safetensors``: model + optimizer tensors + RNG states as
  tensors; optimizer param groups (with their names), scheduler, epoch and the rest as
  JSON in the safetensors header. One file, written atomically, so it is either the
  previous epoch's state or this one's.

Nothing here unpickles: loading is safetensors + JSON only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..atomic import atomic_path, write_error, write_json
from ..errors import RunError

FORMAT_VERSION = 1


def _tensors_for_save(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights), so store copies.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write tensors + JSON metadata (in the safetensors header) atomically."""
    tensors = _tensors_for_save(tensors)
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"tlengine": json.dumps(meta)})
        except SafetensorError as exc:  # safetensors reports I/O errors (a full disk) as its own type
            raise write_error(path, _io_reason(exc)) from None


def _io_reason(exc: Exception) -> str:
    """'No space left on device' from 'Error while serializing: I/O error: No space left on
    device (os error 28) at path ...'."""
    text = str(exc)
    code = re.search(r"\(os error (\d+)\)", text)
    if code:
        return os.strerror(int(code.group(1)))
    text = re.sub(r"^Error while serializing:\s*", "", text.splitlines()[0] if text else "")
    return text or type(exc).__name__


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read what :func:`save_tensors` wrote; RunError if missing or unreadable."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {}).get("tlengine", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise RunError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise RunError(f"checkpoint {path} is unreadable or truncated ({type(exc).__name__})") from None
    return tensors, meta


def save_model(path: Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """``path`` (.safetensors) with the model's state dict, and ``path.with_suffix('.json')``."""
    meta = {"format_version": FORMAT_VERSION, **meta}
    save_tensors(path, model.state_dict(), meta)
    write_json(path.with_suffix(".json"), meta)


# ------------------------------------------------------------------ training state
def save_training_state(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule_state: dict[str, Any],
    epoch: int,
    rng: tuple[dict, dict],
    extra: dict[str, Any] | None = None,
) -> None:
    """Everything needed to continue training after ``epoch`` (counted from 1)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    opt_json: dict[str, Any] = {"param_groups": opt["param_groups"], "state": {}}
    for pid, pstate in opt["state"].items():
        opt_json["state"][str(pid)] = {}
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = val
            else:
                opt_json["state"][str(pid)][key] = val
    rng_tensors, rng_json = rng
    tensors.update(rng_tensors)
    meta = {
        "format_version": FORMAT_VERSION,
        "epoch": epoch,
        "optimizer": opt_json,
        "schedule": schedule_state,
        "rng": rng_json,
        **(extra or {}),
    }
    save_tensors(path, tensors, meta)


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's strides again.

    safetensors stores tensors contiguous, so the moments of a channels-last conv weight
    come back NCHW; fused optimizers walk state and parameter memory in step, and would
    pair the wrong elements."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    optimizer.state[param][key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def load_training_state(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer in place; returns the JSON part (epoch, schedule, rng...)
    with the RNG tensors under ``meta["rng_tensors"]``."""
    tensors, meta = load_tensors(path)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    opt_json = meta["optimizer"]
    state: dict[int, dict[str, Any]] = {}
    for pid, pstate in opt_json["state"].items():
        state[int(pid)] = dict(pstate)
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    optimizer.load_state_dict({"state": state, "param_groups": opt_json["param_groups"]})
    _match_param_layout(optimizer)
    meta["rng_tensors"] = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    return meta
