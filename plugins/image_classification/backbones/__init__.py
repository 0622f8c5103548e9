"""Backbone factories for the image-classification plugin.

Every factory turns a name into a :class:`tlengine.model.Backbone`: a feature extractor
that maps a float image batch ``[N,3,H,W]`` to features ``[N,D]``, its stages
(``blocks``) and the input normalisation it expects (``preprocessing``).

Three families of names are understood by :func:`build_backbone`:

* torchvision classification models (``resnet18``, ``vgg16``, ``vit_b_16``, ...; see
  :data:`TORCHVISION_BACKBONES`);
* ``timm/<name>`` for any name in ``timm.list_models()`` (a pretrained tag such as
  ``timm/resnet50.a1_in1k`` only selects timm's preprocessing defaults);
* ``tiny-cnn``, a four-stage CNN that trains in seconds on a CPU (tests, demos).

How a backbone is made, whatever the family:

1. build the *full* original classification model with random weights;
2. load ``weights`` into that full model, strictly (so a file for another architecture
   fails loudly instead of half-loading);
3. remove the classification head so the module returns pooled features;
4. split the remaining parameters into ``blocks`` (input side first) for gradual
   unfreezing and per-block learning rates.

A tlengine checkpoint (keys ``backbone.*`` / ``head.*``, e.g. a previous run directory)
is the exception to step 2: it already describes the head-less backbone, so its
``backbone.*`` tensors are loaded after step 3.

Blocks come from :mod:`tlengine.blocks` (modules of the backbone's own tree, or a
:class:`~tlengine.blocks.BlockGroup` view where a stage is several modules or loose
parameters), so the backbone's ``state_dict`` keys stay exactly those of the original
model.

:func:`check_model_args` checks ``model.args`` and ``model.weights`` against a backbone
before anything is built, so ``tlengine validate`` catches what ``run`` would only find
mid-run.

Modules of this package, one concept each:

* ``families`` - which family a name belongs to (:func:`~.families.resolve_arch`);
* ``torchvision`` / ``timm`` / ``tiny_cnn`` - each family's names, builder,
  preprocessing and blocks;
* ``weight_sources`` - what a ``model.weights`` value names, the torch hub cache,
  tlengine checkpoints;
* ``checks`` - :func:`check_model_args`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import torch
from tlengine.blocks import (
    BlockGroup,
    Groups,
    Member,
    check_partition,
    generic_groups,
    make_blocks,
)
from tlengine.errors import ConfigError
from tlengine.model import Backbone
from tlengine.registry import Registry
from tlengine.weights import NamedWeights, load_state_dict_file, load_strict
from torch import nn

from .checks import check_model_args
from .families import Arch, resolve_arch
from .timm import (
    TIMM_ALIASES,
    TIMM_BACKBONES,
    TIMM_PREFIX,
    build_timm,
    timm_groups,
    timm_model_name,
)
from .tiny_cnn import TINY_CNN, TinyCNN, tiny_cnn_groups, tiny_cnn_preprocessing
from .torchvision import (
    TORCHVISION_BACKBONES,
    build_torchvision,
    fit_torchvision_keys,
    strip_last_linear,
    vit_groups,
)
from .weight_sources import (
    classify_weights,
    is_transfer_checkpoint,
    torchvision_state_dict,
)

__all__ = [
    "TORCHVISION_BACKBONES",
    "TIMM_BACKBONES",
    "TIMM_ALIASES",
    "TINY_CNN",
    "Arch",
    "BlockGroup",
    "Groups",
    "Member",
    "TinyCNN",
    "build_backbone",
    "check_model_args",
    "register_backbones",
    "resolve_arch",
]


def _check_input_size(arch: str, pp: dict[str, Any], input_size: int | None) -> None:
    if input_size is None:
        return
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0:
        raise ConfigError([("model.input_size", f"must be a positive integer, got {input_size!r}")])
    if pp.get("fixed_input_size") and input_size != pp["input_size"]:
        raise ConfigError(
            [
                (
                    "model.input_size",
                    f"{arch} only accepts {pp['input_size']}x{pp['input_size']} inputs, got {input_size}",
                )
            ]
        )
    if input_size < pp.get("min_input_size", 1):
        raise ConfigError(
            [("model.input_size", f"{arch} needs inputs of at least {pp['min_input_size']} pixels, got {input_size}")]
        )


def build_backbone(
    name: str,
    *,
    weights: str | None,
    weights_registry: Registry[NamedWeights] | None,
    base_dir: Path,
    input_size: int | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build the backbone ``name`` (torchvision name, ``timm/<name>`` or ``tiny-cnn``).

    The returned ``Backbone.module`` maps float images ``[N,3,H,W]`` to features
    ``[N,feature_dim]``.

    weights: None (random init), a name in ``weights_registry``, a torchvision enum name
        (``IMAGENET1K_V1``, ``DEFAULT``; torchvision backbones only), or a path (relative
        to ``base_dir``) to a ``.safetensors``/``.pt``/``.pth`` state dict or a tlengine
        run directory.
    input_size: overrides the default input size in ``preprocessing``; ConfigError when
        the architecture needs another size.
    kwargs: passed to the model constructor (torchvision ``get_model``,
        ``timm.create_model`` or :class:`TinyCNN`).

    Raises UnknownNameError for names no family knows, WeightsError for weights that
    cannot be found or do not fit, ConfigError for an impossible ``input_size``.
    """
    resolved = resolve_arch(name)
    arch = resolved.arch
    is_torchvision = resolved.family == "torchvision"
    kwargs = dict(kwargs)

    kind, detail = classify_weights(weights, arch, is_torchvision, weights_registry, Path(base_dir))

    # 1. the full original model, random init, plus its default preprocessing
    if arch == TINY_CNN:
        model: nn.Module = TinyCNN(**kwargs)
        pp: dict[str, Any] = tiny_cnn_preprocessing()
    elif is_torchvision:
        model, pp = build_torchvision(arch, kind, detail, kwargs)
    else:
        model, pp = build_timm(resolved.timm_name, kwargs)
    if kind == "named" and detail.preprocessing:
        pp.update(detail.preprocessing)
    _check_input_size(arch, pp, input_size)
    if input_size is not None:
        pp["input_size"] = input_size

    # 2. weights into the full model (a tlengine checkpoint waits for the stripped one)
    backbone_state: dict[str, torch.Tensor] | None = None
    source = ""
    if kind == "named":
        source = f"'{weights}'"
        state = load_state_dict_file(detail.path())
        if detail.key_map is not None:
            state = detail.key_map(state, model.state_dict())
            load_strict(model, state, what=arch, source=source)
        elif is_transfer_checkpoint(state):
            backbone_state = state
        else:
            load_strict(model, state, what=arch, source=source)
    elif kind in ("torchvision", "file"):
        if kind == "torchvision":
            source = f"{arch} {detail.name}"
            state = torchvision_state_dict(arch, detail)
        else:
            source = str(detail)
            state = load_state_dict_file(detail)
        if is_transfer_checkpoint(state):
            backbone_state = state
        else:
            if is_torchvision:
                state = fit_torchvision_keys(state, model, arch)
            load_strict(model, state, what=arch, source=source)

    # 3. strip the head: the module now returns pooled features [N, D]
    if arch == TINY_CNN:
        feature_dim = model.feature_dim
    elif is_torchvision:
        feature_dim = strip_last_linear(model, arch)
    else:
        model.reset_classifier(0)
        # head_hidden_size covers models with a pre-logits layer (MobileNetV3's conv_head).
        feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)

    if backbone_state is not None:
        sub = {k[len("backbone.") :]: v for k, v in backbone_state.items() if k.startswith("backbone.")}
        load_strict(model, sub, what=f"{arch} backbone", source=source)

    # 4. blocks, input side first
    if arch == TINY_CNN:
        groups = tiny_cnn_groups(model)
    elif is_torchvision:
        groups = vit_groups(model) if arch.startswith("vit_") else generic_groups(model)
    else:
        groups = timm_groups(model)
    blocks = make_blocks(groups)
    problems = check_partition(model, blocks)
    if problems and not is_torchvision and arch != TINY_CNN:
        blocks = make_blocks(generic_groups(model))  # timm grouping that does not fit: plain stages
        problems = check_partition(model, blocks)
    if problems:
        raise RuntimeError(f"bug: the blocks of {arch} do not partition its parameters: {'; '.join(problems[:3])}")

    return Backbone(module=model, feature_dim=feature_dim, blocks=blocks, preprocessing=pp, arch=arch)


def _timm_resolver(name: str) -> Callable[..., Backbone] | None:
    """Registry fallback: a factory for any ``timm/<name>`` that timm knows, else None."""
    if timm_model_name(name) is None:
        return None
    return functools.partial(build_backbone, name)


def register_backbones(registry: Registry[Any]) -> None:
    """Add every backbone factory of this plugin to ``registry``.

    Each factory is called as ``factory(weights=..., weights_registry=..., base_dir=...,
    input_size=None, **kwargs)`` and returns a :class:`~tlengine.model.Backbone`.
    """
    for name in TORCHVISION_BACKBONES:
        registry.add(
            name, functools.partial(build_backbone, name), description=f"torchvision {name}", source="torchvision"
        )
    registry.add(
        TINY_CNN,
        functools.partial(build_backbone, TINY_CNN),
        description="4-stage 16-32-64-128 CNN (conv, max-pool, bn, relu; D=128), trains in seconds on a CPU; kwargs: width",
        source="tlengine",
    )
    for name in TIMM_BACKBONES:
        registry.add(
            name, functools.partial(build_backbone, name), description=f"timm {name[len(TIMM_PREFIX) :]}", source="timm"
        )
    for alias, target in TIMM_ALIASES.items():
        registry.add(alias, functools.partial(build_backbone, alias), description=f"alias of {target}", source="timm")
    registry.add_fallback(_timm_resolver, "timm/<any timm.list_models() name>")
