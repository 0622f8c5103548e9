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
import warnings
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
        open(path, "rb").close()
    except OSError as exc:
        raise WeightsError(f"weights file {path} cannot be read ({exc.strerror or exc})") from None
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    obj = _load_torch(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return obj


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError):
        raise WeightsError(f"weights file {path} is corrupt or truncated (not a readable .safetensors file)") from None


def _load_torch(path: Path) -> object:
    """``torch.load(weights_only=True)`` with torch's own multi-line advice replaced by one
    sentence: a file holding pickled objects or code is refused, a damaged one named."""
    import pickle

    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4 ... please file an issue": not the user's concern
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _mentions_global(exc) or _is_pickle(path)
    except Exception:  # a damaged zip: RuntimeError, or OSError(EINVAL) from a seek; EOFError if empty
        refused = False
    if refused:
        raise WeightsError(
            f"{path} is not a plain tensor state dict (it holds pickled code, which tlengine "
            "refuses to run); re-save it with torch.save(model.state_dict()) or as .safetensors"
        )
    raise WeightsError(f"weights file {path} is corrupt or truncated (not a readable PyTorch or safetensors file)")


def _mentions_global(exc: BaseException) -> bool:
    """True if torch's weights-only unpickler stopped at a Python global (a class or
    function the file wants to call), as opposed to bytes it could not parse."""
    for _ in range(8):  # the error and what it was raised from
        if exc is None:
            break
        if "GLOBAL" in str(exc) or "Unsupported global" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _is_pickle(path: Path) -> bool:
    """True if ``path`` (or the ``data.pkl`` of a torch zip archive) is a well-formed pickle
    stream. Only parses opcodes (``pickletools.genops``): nothing in it is executed."""
    import io
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return False
                stream: io.BufferedIOBase = io.BytesIO(archive.read(name))
        else:
            stream = open(path, "rb")
        with stream:
            ops = [op.name for op, _, _ in pickletools.genops(stream)]
        return len(ops) > 2 and ops[0] == "PROTO"  # torch.save and pickle.dump (protocol >= 2) start so
    except Exception:
        return False


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], *, what: str, source: str) -> None:
    """Load ``state`` into ``module`` requiring every key and shape to match.

    Raises WeightsError naming ``what`` (the architecture) and ``source`` (the file or
    weights name) with the first few missing, unexpected and mis-shaped keys.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
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
