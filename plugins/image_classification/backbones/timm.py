"""The ``timm/<name>`` family: names, building, preprocessing and blocks.

Any name in ``timm.list_models()`` works as ``timm/<name>``; a pretrained tag such as
``timm/resnet50.a1_in1k`` only selects timm's preprocessing defaults. timm is imported
lazily (``import timm`` below is the top-level package, not this module).
"""

from __future__ import annotations

import functools
from typing import Any

from tlengine.blocks import Groups, generic_groups, groups_from_param_names
from torch import nn

__all__ = ["TIMM_BACKBONES", "TIMM_ALIASES", "TIMM_PREFIX"]

#: timm models registered by name so ``tlengine list backbones`` shows them; every other
#: ``timm/<name>`` works through the registry's fallback resolver.
TIMM_BACKBONES: tuple[str, ...] = (
    "timm/tf_efficientnet_lite0",
    "timm/tf_efficientnet_lite1",
    "timm/tf_efficientnet_lite2",
    "timm/legacy_xception",
)

#: Friendly names for timm models whose timm name is not the obvious one. The backbone's
#: ``arch`` is the target name, so weights registered for either spelling match.
TIMM_ALIASES: dict[str, str] = {
    # timm renamed the original (Chollet, 2017) Xception to legacy_xception; xception41/65/71
    # are the later "aligned" variants.
    "timm/xception": "timm/legacy_xception",
}

TIMM_PREFIX = "timm/"


def canonical(name: str) -> str:
    """The backbone name an alias stands for (``name`` itself when it is no alias)."""
    return TIMM_ALIASES.get(name, name)


@functools.lru_cache(maxsize=1)
def timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def timm_model_name(name: str) -> str | None:
    """``timm/resnet50.a1_in1k`` -> ``resnet50.a1_in1k`` if timm knows ``resnet50``, else None."""
    if not name.startswith(TIMM_PREFIX):
        return None
    rest = name[len(TIMM_PREFIX) :]
    return rest if rest.split(".", 1)[0] in timm_names() else None


def timm_version() -> str:
    import timm

    return timm.__version__


def build_timm(model_name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The full timm model ``model_name`` (random init) and its default preprocessing."""
    import timm
    from timm.data import resolve_data_config

    model = timm.create_model(model_name, pretrained=False, **kwargs)
    cfg = resolve_data_config({}, model=model)
    pcfg = getattr(model, "pretrained_cfg", {}) or {}
    interpolation = cfg.get("interpolation") or "bicubic"
    size = int(cfg["input_size"][-1])
    if isinstance(kwargs.get("img_size"), int):
        size = kwargs["img_size"]
    min_size = pcfg.get("min_input_size")
    pp = {
        "input_size": size,
        "mean": [float(m) for m in cfg["mean"]],
        "std": [float(s) for s in cfg["std"]],
        "interpolation": interpolation if interpolation in ("bilinear", "bicubic") else "bicubic",
        "crop_pct": float(cfg.get("crop_pct", 0.875)),
        "min_input_size": int(min_size[-1]) if min_size else 1,
        "fixed_input_size": bool(pcfg.get("fixed_input_size", False)),
    }
    return model, pp


def timm_groups(model: nn.Module) -> Groups:
    """Blocks from timm's own coarse layer grouping (the one its layer-decay uses)."""
    from timm.models import group_parameters

    try:
        matcher = model.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError):
        return generic_groups(model)
    by_id = group_parameters(model, matcher)
    return groups_from_param_names(model, [by_id[k] for k in sorted(by_id)])
