"""Pretrained weights: named, local, or none — and never a silent download in tests.

``model.weights`` in a pipeline may be

* ``null`` — random init;
* a name in the weights registry (``tlengine doctor`` lists them and whether each is
  present offline), e.g. ``efficientnet-lite0-imagenet``;
* a torchvision enum name such as ``IMAGENET1K_V1`` (resolved by the backbone factory);
* a path to a ``.safetensors`` file (preferred), a ``.pt``/``.pth`` state dict (read with
  ``weights_only=True``), or a tlengine run directory (its final checkpoint).

Loading goes through :func:`load_state_dict_file`, which never unpickles arbitrary code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .errors import WeightsError


@dataclass
class NamedWeights:
    """A registered set of pretrained weights for one backbone.

    arch: the backbone name these weights load into (e.g. ``timm/tf_efficientnet_lite0``).
    locate: returns the local file if it is available offline, else None.
    url: where ``download`` would fetch it from (kept for users with a network).
    key_map: turns the file's state dict into the arch's full-model state dict.
    preprocessing: overrides the backbone's default input normalisation.
    install_hint: what to do when ``locate`` returns None (e.g. a pip command).
    """

    name: str
    arch: str
    locate: Callable[[], Path | None]
    description: str = ""
    url: str | None = None
    key_map: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    preprocessing: dict = field(default_factory=dict)
    license: str = ""
    install_hint: str = ""

    def path(self) -> Path:
        """The local file, or WeightsError saying how to get it."""
        found = self.locate()
        if found is not None and Path(found).is_file():
            return Path(found)
        hint = self.install_hint or (f"download {self.url} and pass its path as model.weights" if self.url else "")
        raise WeightsError(f"weights '{self.name}' are not available offline" + (f"; {hint}" if hint else ""))


def network_disabled() -> bool:
    """True when the user (or CI) asked for offline mode."""
    return any(os.environ.get(v, "") not in ("", "0") for v in ("TLENGINE_OFFLINE", "HF_HUB_OFFLINE"))


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``.pt``/``.pth``/``.bin`` file, safely.

    A tlengine run directory is accepted too: its ``checkpoint.safetensors`` is read.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"weights file {path} could not be read ({type(exc).__name__}: {exc})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return obj


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], *, what: str, source: str) -> None:
    """Load ``state`` into ``module`` requiring every key and shape to match.

    Raises WeightsError naming ``what`` (the architecture) and ``source`` (the file or
    weights name) with the first few missing, unexpected and mis-shaped keys.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        raise WeightsError(f"weights {source} do not fit {what}: " + ", ".join(parts))
    module.load_state_dict(state, strict=True)
