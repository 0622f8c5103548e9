"""Checks of ``model.args`` and ``model.weights`` that need no model built.

The task runs :func:`check_model_args` before any run directory exists, so that
``tlengine validate`` and the start of ``tlengine run`` report a misspelt backbone
argument or an unknown weights name as a config error - instead of a ``TypeError``
from the model constructor in the middle of a run, or "file does not exist" without
saying which names would have worked.

Arguments are checked against signatures, not by building the model:

* ``tiny-cnn``: :class:`TinyCNN`'s parameters;
* torchvision: the builder's named parameters plus those of the model class it returns
  (its return annotation, e.g. ``resnet18 -> ResNet``). The builders take ``**kwargs``
  and hand them to the class; ConvNeXt and MobileNetV3 also take ``**kwargs`` but ignore
  them, so a key no named parameter matches is reported there too (it would do nothing);
* timm: ``timm.create_model``'s named parameters plus those of the model class the
  entry point returns. Where timm's class takes ``**kwargs`` (it usually forwards them
  to its blocks) or the entry point has no return annotation, every key is accepted.

Not caught: a real parameter that the builder already passes itself (ResNet's
``block``), which still fails in the constructor.
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Any

from tlengine.errors import UnknownNameError

from .families import Arch, resolve_arch
from .timm import canonical
from .tiny_cnn import TinyCNN
from .torchvision import tv_weight_names
from .weight_sources import resolve_path

__all__ = ["check_model_args"]

# Keyword arguments the backbone factory sets itself, and where the user sets them instead.
_RESERVED = {
    "weights": "set it as model.weights, not in model.args",
    "input_size": "set it as model.input_size, not in model.args",
    "weights_registry": "it is set by the engine, not in model.args",
    "base_dir": "it is set by the engine, not in model.args",
}
_RESERVED_BY_FAMILY = {
    "timm": {
        "pretrained": "set pretrained weights with model.weights, not in model.args",
        "model_name": "it is the backbone name (model.backbone), not in model.args",
    },
    "torchvision": {},
    "tiny-cnn": {},
}


def check_model_args(
    backbone_name: str, args: dict[str, Any], weights: str | None, registries: Any, base_dir: Path
) -> list[tuple[str, str]]:
    """Problems with ``model.args`` and ``model.weights`` for backbone ``backbone_name``.

    registries: the engine's :class:`tlengine.registry.Registries` (its ``backbones``
        and ``weights`` registries are read).
    base_dir: the folder relative ``model.weights`` paths are taken from (the
        pipeline file's folder).

    Returns ``(dotted.field, reason)`` pairs, empty when everything fits:

    * ``model.args.<key>`` for a key the backbone's constructor does not take, or one
      that has its own field (``weights``, ``input_size``); the reason lists the
      accepted keys;
    * ``model.weights`` for a value that is neither a registered weights name for this
      backbone, a torchvision weights name valid for it, nor an existing file or
      directory relative to ``base_dir``; the reason lists the known weight names.

    A backbone this plugin does not provide (unknown, or another plugin's) gives no
    problems here: the pipeline check reports unknown names, other plugins check theirs.
    """
    resolved = _own_backbone(backbone_name, registries)
    if resolved is None:
        return []
    problems = [(f"model.args.{key}", reason) for key, reason in _arg_problems(resolved, args or {})]
    reason = _weights_problem(resolved, weights, getattr(registries, "weights", None), Path(base_dir))
    if reason is not None:
        problems.append(("model.weights", reason))
    return problems


def _own_backbone(name: str, registries: Any) -> Arch | None:
    """The resolved name if the registry's factory for it is this plugin's, else None."""
    from . import build_backbone  # the package imports this module: import at call time

    backbones = getattr(registries, "backbones", None)
    entry = backbones.find(name) if backbones is not None else None
    if entry is None or getattr(entry.obj, "func", None) is not build_backbone:
        return None
    try:
        return resolve_arch(name)
    except UnknownNameError:
        return None


# ------------------------------------------------------------------------------ args
def _named_params(fn: Any) -> tuple[list[str], bool]:
    """(named parameters except ``self``, whether it also takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return [], True
    names = [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _returned_class(fn: Any) -> type | None:
    """The class a builder function is annotated to return, if it says."""
    try:
        ret = typing.get_type_hints(fn).get("return")
    except Exception:  # unresolvable annotations: we simply do not know
        return None
    return ret if isinstance(ret, type) else None


@functools.lru_cache(maxsize=256)
def _accepted_args(family: str, arch: str, timm_name: str | None) -> tuple[str, frozenset[str] | None]:
    """(what the keys go to, accepted keys); None when any key may be accepted."""
    if family == "tiny-cnn":
        names, _ = _named_params(TinyCNN.__init__)
        return "TinyCNN", frozenset(names)
    if family == "torchvision":
        import torchvision.models as tvm

        builder = tvm.get_model_builder(arch)
        names, _ = _named_params(builder)
        cls = _returned_class(builder)
        if cls is None:
            return f"torchvision.models.{arch}", None
        cls_names, _ = _named_params(cls.__init__)  # a class's **kwargs are ignored in torchvision
        return f"torchvision {cls.__name__}", frozenset(names + cls_names)
    import timm
    from timm.models import model_entrypoint

    names, _ = _named_params(timm.create_model)
    cls = _returned_class(model_entrypoint(timm_name.split(".", 1)[0]))
    if cls is None:
        return f"timm {timm_name}", None
    cls_names, var_kw = _named_params(cls.__init__)
    if var_kw:
        return f"timm {cls.__name__}", None
    return f"timm {cls.__name__}", frozenset(names + cls_names)


def _arg_problems(resolved: Arch, args: dict[str, Any]) -> list[tuple[str, str]]:
    reserved = {**_RESERVED, **_RESERVED_BY_FAMILY[resolved.family]}
    owner, accepted = _accepted_args(resolved.family, resolved.arch, resolved.timm_name)
    if accepted is not None:
        accepted = accepted - set(reserved)
    problems = []
    for key in args:
        if key in reserved:
            problems.append((key, f"'{key}' is not a backbone argument: {reserved[key]}"))
        elif accepted is not None and key not in accepted:
            problems.append(
                (
                    key,
                    f"unknown argument '{key}' for backbone {resolved.arch} ({owner}); "
                    f"accepted: {', '.join(sorted(accepted)) or 'none'}",
                )
            )
    return problems


# ------------------------------------------------------------------------------ weights
def _known_weight_names(resolved: Arch, weights_registry: Any) -> list[str]:
    """Registered weights for this architecture, then torchvision's enum names for it."""
    names = []
    if weights_registry is not None:
        names = [e.name for e in weights_registry.entries() if canonical(getattr(e.obj, "arch", "")) == resolved.arch]
    if resolved.family == "torchvision":
        names += tv_weight_names(resolved.arch)
    return names


def _weights_problem(resolved: Arch, weights: str | None, weights_registry: Any, base_dir: Path) -> str | None:
    if weights is None:
        return None
    known = _known_weight_names(resolved, weights_registry)
    listing = (
        f"known weights for {resolved.arch}: {', '.join(known)}"
        if known
        else f"no weights are registered for {resolved.arch}; pass a local .safetensors/.pt file or null"
    )
    if weights_registry is not None and weights in weights_registry:
        arch = getattr(weights_registry.get(weights), "arch", "")
        if canonical(arch) != resolved.arch:
            return f"weights '{weights}' are for {arch}, not for {resolved.arch}; {listing}"
        return None
    if weights in known:  # a torchvision enum name valid for this backbone
        return None
    path = resolve_path(weights, base_dir)
    if path.exists():
        return None
    return (
        f"'{weights}' is not a registered weights name, a torchvision weights name for "
        f"{resolved.arch} or an existing file or directory ({path} does not exist); {listing}"
        if resolved.family == "torchvision"
        else f"'{weights}' is not a registered weights name for {resolved.arch} or an existing file or "
        f"directory ({path} does not exist); {listing}"
    )
