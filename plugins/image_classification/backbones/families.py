"""Which family a backbone name belongs to: torchvision, timm or tiny-cnn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tlengine.errors import UnknownNameError

from .timm import TIMM_PREFIX, canonical, timm_model_name, timm_version
from .tiny_cnn import TINY_CNN
from .torchvision import torchvision_names

Family = Literal["torchvision", "timm", "tiny-cnn"]


@dataclass(frozen=True)
class Arch:
    """A resolved backbone name.

    family: which builder makes it.
    arch: the architecture's identity (aliases resolved, a timm pretrained tag dropped),
        what weights are matched against and what ``Backbone.arch`` holds.
    timm_name: for timm, the name passed to ``timm.create_model`` (tag kept), else None.
    """

    family: Family
    arch: str
    timm_name: str | None = None


def resolve_arch(name: str) -> Arch:
    """The family and architecture of backbone ``name``; UnknownNameError if no family knows it."""
    arch = canonical(name)
    if arch == TINY_CNN:
        return Arch("tiny-cnn", arch)
    if arch.startswith(TIMM_PREFIX):
        timm_name = timm_model_name(arch)
        if timm_name is None:
            raise UnknownNameError(
                f"unknown backbone '{name}': '{arch[len(TIMM_PREFIX) :]}' is not in "
                f"timm.list_models() (timm {timm_version()})"
            )
        # a pretrained tag is not part of the architecture
        return Arch("timm", TIMM_PREFIX + timm_name.split(".", 1)[0], timm_name)
    if arch in torchvision_names():
        return Arch("torchvision", arch)
    raise UnknownNameError(
        f"unknown backbone '{name}': not a torchvision classification model, not timm/<name> and not {TINY_CNN}"
    )
