"""torchvision classification models: names, weights enums, building, head, blocks.

torchvision is imported lazily (``import torchvision`` below is the top-level package,
not this module).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from tlengine.blocks import Groups
from tlengine.errors import WeightsError
from torch import nn

__all__ = ["TORCHVISION_BACKBONES"]

#: torchvision classification models registered one by one. Left out on purpose:
#: squeezenet* (its classifier is a convolution, there is no ``Linear`` head to strip)
#: and the giants that make no sense on the CPUs this engine targets (> 150M
#: parameters: regnet_y_128gf, vit_h_14, vit_l_16, vit_l_32, convnext_large). They
#: remain one ``build_backbone`` call away for anyone who registers them.
TORCHVISION_BACKBONES: tuple[str, ...] = (
    "alexnet",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "densenet121",
    "densenet161",
    "densenet169",
    "densenet201",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "efficientnet_b4",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "efficientnet_v2_s",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    "googlenet",
    "inception_v3",
    "maxvit_t",
    "mnasnet0_5",
    "mnasnet0_75",
    "mnasnet1_0",
    "mnasnet1_3",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "regnet_x_400mf",
    "regnet_x_800mf",
    "regnet_x_1_6gf",
    "regnet_x_3_2gf",
    "regnet_x_8gf",
    "regnet_x_16gf",
    "regnet_x_32gf",
    "regnet_y_400mf",
    "regnet_y_800mf",
    "regnet_y_1_6gf",
    "regnet_y_3_2gf",
    "regnet_y_8gf",
    "regnet_y_16gf",
    "regnet_y_32gf",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
    "swin_t",
    "swin_s",
    "swin_b",
    "swin_v2_t",
    "swin_v2_s",
    "swin_v2_b",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "vit_b_16",
    "vit_b_32",
)

# Auxiliary classifiers that torchvision's checkpoints carry but our models are built without.
_AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")
# torchvision's own fix-up for the original DenseNet checkpoints ("norm.1" -> "norm1").
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def torchvision_names() -> set[str]:
    """Every classification model name torchvision's ``get_model`` knows."""
    import torchvision.models as tvm

    return set(tvm.list_models(module=tvm))


def tv_weight_names(name: str) -> list[str]:
    """The weights enum names valid for torchvision model ``name``: ``DEFAULT`` first."""
    import torchvision.models as tvm

    return ["DEFAULT"] + [m.name for m in tvm.get_model_weights(name)]


def tv_weights_enum(name: str, enum_name: str) -> Any:
    """The torchvision weights enum member ``enum_name`` of model ``name``.

    Raises WeightsError listing the valid names when there is no such member.
    """
    import torchvision.models as tvm

    enum_cls = tvm.get_model_weights(name)
    try:
        return enum_cls[enum_name]
    except KeyError:
        valid = ", ".join(tv_weight_names(name))
        raise WeightsError(f"unknown torchvision weights '{enum_name}' for {name}; valid: {valid}") from None


def fit_torchvision_keys(state: dict[str, torch.Tensor], model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """torchvision's own checkpoint fix-ups, so its checkpoints load strictly into our models.

    Drops auxiliary-classifier tensors (inception_v3/googlenet are built without aux heads)
    and renames the original DenseNet keys the way ``torchvision.models.densenet`` does.
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_AUX_PREFIXES)}
    if name.startswith("densenet"):
        state = {(_DENSENET_OLD_KEY.sub(r"\1\2", k)): v for k, v in state.items()}
    return state


def strip_last_linear(model: nn.Module, name: str) -> int:
    """Replace the last ``nn.Linear`` (module order) with ``nn.Identity``; returns its in_features.

    Taking the *last* Linear keeps everything before the classifier, e.g. VGG's fc6/fc7.
    """
    last = None
    for qname, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (qname, module)
    if last is None:
        raise RuntimeError(f"{name} has no nn.Linear classifier to remove")
    qname, linear = last
    parent_name, _, child = qname.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, nn.Identity())
    return linear.in_features


def _tv_preprocessing(enum: Any) -> dict[str, Any]:
    t = enum.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    return {
        "input_size": crop,
        "mean": [float(m) for m in t.mean],
        "std": [float(s) for s in t.std],
        "interpolation": t.interpolation.value,
        "crop_pct": round(crop / resize, 4),
        "min_input_size": int(enum.meta.get("min_size", (1, 1))[0]),
        "fixed_input_size": False,
    }


def build_torchvision(
    name: str, weights_kind: str, enum: Any, kwargs: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    """The full torchvision model ``name`` (random init) and its preprocessing.

    ``weights_kind``/``enum`` say which weights will be loaded (see
    ``weight_sources.classify_weights``): torchvision weights pick their own
    preprocessing and, for some models, constructor defaults. ``kwargs`` is updated in
    place with those defaults.
    """
    import torchvision.models as tvm

    pp = _tv_preprocessing(enum if weights_kind == "torchvision" else tvm.get_model_weights(name).DEFAULT)
    if name in ("inception_v3", "googlenet"):
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", False)
        if weights_kind == "torchvision":
            # Their ImageNet weights expect inputs rescaled to [-1, 1]; torchvision does that
            # inside the model (transform_input) so the usual ImageNet mean/std stay valid.
            kwargs.setdefault("transform_input", True)
    if name.startswith("vit_"):
        if weights_kind == "torchvision":
            kwargs.setdefault("image_size", int(enum.meta["min_size"][0]))
        size = int(kwargs.get("image_size", 224))
        pp.update(input_size=size, min_input_size=size, fixed_input_size=True)
    elif name.startswith("maxvit"):
        pp.update(fixed_input_size=True)
    model = tvm.get_model(name, weights=None, **kwargs)
    return model, pp


def vit_groups(model: nn.Module) -> Groups:
    """torchvision ViT: patch embedding + class token + position embedding, each encoder layer, final norm."""
    enc = model.encoder
    groups: Groups = [
        (
            "stem",
            [
                ("conv_proj", model.conv_proj),
                ("class_token", model.class_token),
                ("encoder.pos_embedding", enc.pos_embedding),
            ],
        ),
    ]
    groups += [(f"encoder.layers.{n}", [(f"encoder.layers.{n}", layer)]) for n, layer in enc.layers.named_children()]
    groups.append(("encoder.ln", [("encoder.ln", enc.ln)]))
    if next(model.heads.parameters(), None) is not None:  # only with representation_size: a pre-logits Linear stays
        groups.append(("heads", [("heads", model.heads)]))
    return groups
