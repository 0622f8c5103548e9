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

Blocks are modules of the backbone's own tree where one module is a whole stage (ResNet
``layer1``). Where a stage is several sibling modules or includes loose parameters (the
ResNet stem ``conv1`` + ``bn1``, the ViT patch embedding + class token + position
embedding) the block is a :class:`BlockGroup`: a container that *references* those
modules and parameters but is never attached to the backbone, so the backbone's
``state_dict`` keys stay exactly those of the original model.
"""

from __future__ import annotations

import functools
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Union
from urllib.parse import urlparse

import torch
from torch import nn

from tlengine.errors import ConfigError, UnknownNameError, WeightsError
from tlengine.model import Backbone
from tlengine.registry import Registry
from tlengine.weights import NamedWeights, load_state_dict_file, load_strict, network_disabled

__all__ = [
    "TORCHVISION_BACKBONES",
    "TIMM_BACKBONES",
    "TIMM_ALIASES",
    "BlockGroup",
    "TinyCNN",
    "build_backbone",
    "register_backbones",
]

#: torchvision classification models registered one by one. Left out on purpose:
#: squeezenet* (its classifier is a convolution, there is no ``Linear`` head to strip)
#: and the giants that make no sense on the CPUs this engine targets (> 150M
#: parameters: regnet_y_128gf, vit_h_14, vit_l_16, vit_l_32, convnext_large). They
#: remain one ``build_backbone`` call away for anyone who registers them.
TORCHVISION_BACKBONES: tuple[str, ...] = (
    "alexnet",
    "convnext_tiny", "convnext_small", "convnext_base",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
    "googlenet",
    "inception_v3",
    "maxvit_t",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf",
    "regnet_x_8gf", "regnet_x_16gf", "regnet_x_32gf",
    "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf",
    "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "wide_resnet50_2", "wide_resnet101_2",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b",
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "vit_b_16", "vit_b_32",
)

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

TINY_CNN = "tiny-cnn"

_TIMM_PREFIX = "timm/"
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]
# A torchvision weights enum name (IMAGENET1K_V1, DEFAULT, IMAGENET1K_SWAG_E2E_V1, ...).
_ENUM_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# Auxiliary classifiers that torchvision's checkpoints carry but our models are built without.
_AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")
# torchvision's own fix-up for the original DenseNet checkpoints ("norm.1" -> "norm1").
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)

Member = Union[nn.Module, nn.Parameter]
#: (block name, [(qualified name, module or loose parameter), ...]) in input-to-output order.
Groups = list[tuple[str, list[tuple[str, Member]]]]


# --------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------


class BlockGroup(nn.Module):
    """One block made of several modules and/or loose parameters of a backbone.

    It is a *view*: ``parameters()``, ``modules()`` (to find BatchNorm layers) and
    ``train()``/``eval()`` reach the referenced modules and parameters, which stay owned
    by the backbone. The group itself is never registered inside the backbone, so it adds
    no ``state_dict`` keys; ``.to()``/``.half()`` on the backbone convert the shared
    parameters in place, so the group keeps seeing them. It cannot be called.
    """

    def __init__(self, members: list[tuple[str, Member]]):
        super().__init__()
        self.member_names = [name for name, _ in members]
        self.parts = nn.ModuleList([m for _, m in members if isinstance(m, nn.Module)])
        for name, member in members:
            if isinstance(member, nn.Parameter):
                self.register_parameter(name.replace(".", "_"), member)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a BlockGroup only groups a backbone's parameters; call the backbone instead")

    def extra_repr(self) -> str:
        return "members=" + ", ".join(self.member_names)


def _group_name(names: list[str]) -> str:
    if len(names) <= 3:
        return "+".join(names)
    return f"{names[0]}..{names[-1]}"


def _make_blocks(groups: Groups) -> list[tuple[str, nn.Module]]:
    """(block name, members) -> (block name, module); a lone module is used as it is."""
    blocks = []
    for name, members in groups:
        if len(members) == 1 and isinstance(members[0][1], nn.Module):
            blocks.append((name, members[0][1]))
        else:
            blocks.append((name, BlockGroup(members)))
    return blocks


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


# Top-level children whose own children are the natural stages (torchvision's
# ``features`` of VGG/MobileNet/EfficientNet/DenseNet/ConvNeXt/Swin, RegNet's
# ``trunk_output``, MNASNet's ``layers``, MaxViT's ``blocks``, timm's ``stages``).
_EXPAND = {"features", "trunk_output", "layers", "blocks", "stages"}
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def _generic_groups(model: nn.Module) -> Groups:
    """Stages of a CNN-like model, input side first, from its module order.

    Top-level children are stages, except that a container named in ``_EXPAND`` is
    replaced by its children. Consecutive leaf layers (conv, bn, ...) are merged into one
    stage that ends at a pooling layer: ResNet ``conv1 bn1 relu maxpool`` is the stem and
    VGG's ``features`` splits into its five conv stages. Parameters owned directly by the
    model or by an expanded container (not inside any stage) join the first block.
    """
    items: list[tuple[str, nn.Module]] = []
    loose: list[tuple[str, nn.Parameter]] = [(n, p) for n, p in model.named_parameters(recurse=False)]
    for cname, child in model.named_children():
        if cname in _EXPAND and isinstance(child, (nn.Sequential, nn.ModuleList)):
            items.extend((f"{cname}.{n}", c) for n, c in child.named_children())
        else:
            items.append((cname, child))

    groups: Groups = []
    run: list[tuple[str, Member]] = []

    def close_run() -> None:
        if run:
            groups.append(("stem" if not groups else _group_name([n for n, _ in run]), list(run)))
            run.clear()

    for qname, module in items:
        if _is_leaf(module):
            if _has_params(module):
                run.append((qname, module))
            if isinstance(module, _POOLS):
                close_run()
        else:
            close_run()
            if _has_params(module):
                groups.append((qname, [(qname, module)]))
    close_run()
    if loose:
        if not groups:
            groups.append(("stem", []))
        name, members = groups[0]
        groups[0] = (name, list(loose) + members)
    return groups


def _vit_groups(model: nn.Module) -> Groups:
    """torchvision ViT: patch embedding + class token + position embedding, each encoder layer, final norm."""
    enc = model.encoder
    groups: Groups = [
        ("stem", [("conv_proj", model.conv_proj), ("class_token", model.class_token),
                  ("encoder.pos_embedding", enc.pos_embedding)]),
    ]
    groups += [(f"encoder.layers.{n}", [(f"encoder.layers.{n}", layer)]) for n, layer in enc.layers.named_children()]
    groups.append(("encoder.ln", [("encoder.ln", enc.ln)]))
    if _has_params(model.heads):  # only with representation_size: a pre-logits Linear stays
        groups.append(("heads", [("heads", model.heads)]))
    return groups


def _groups_from_param_names(model: nn.Module, param_groups: list[list[str]]) -> Groups:
    """Turn ordered groups of parameter names into blocks of the largest whole modules.

    A module whose parameters all fall in one group joins that group as a whole (so
    ``block.modules()`` finds its BatchNorm layers and ``block.train()`` reaches its
    dropout); a parameter whose owner mixes groups (timm ViT's ``cls_token``) joins alone.
    """
    group_of = {pname: gi for gi, names in enumerate(param_groups) for pname in names}
    groups_under: dict[str, set[int]] = defaultdict(set)
    for pname, gi in group_of.items():
        parts = pname.split(".")
        for k in range(len(parts)):
            groups_under[".".join(parts[:k])].add(gi)
    members: list[list[tuple[str, Member]]] = [[] for _ in param_groups]
    taken: set[str] = set()
    for mname, module in model.named_modules():
        parts = mname.split(".") if mname else []
        if any(".".join(parts[:k]) in taken for k in range(len(parts))):
            continue  # an ancestor already joined a group whole
        gis = groups_under.get(mname)
        if not gis:
            continue
        if len(gis) == 1:
            members[next(iter(gis))].append((mname or "model", module))
            taken.add(mname)
        else:
            for pname, param in module.named_parameters(recurse=False):
                qual = f"{mname}.{pname}" if mname else pname
                members[group_of[qual]].append((qual, param))
    return [(_group_name([n for n, _ in ms]), ms) for ms in members if ms]


def _timm_groups(model: nn.Module) -> Groups:
    """Blocks from timm's own coarse layer grouping (the one its layer-decay uses)."""
    from timm.models import group_parameters

    try:
        matcher = model.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError):
        return _generic_groups(model)
    by_id = group_parameters(model, matcher)
    return _groups_from_param_names(model, [by_id[k] for k in sorted(by_id)])


def _partition_problems(module: nn.Module, blocks: list[tuple[str, nn.Module]]) -> list[str]:
    """Why ``blocks`` do not cover each parameter of ``module`` exactly once (empty if they do)."""
    owned = {id(p): n for n, p in module.named_parameters()}
    seen: dict[int, str] = {}
    problems = []
    for bname, block in blocks:
        for p in block.parameters():
            if id(p) not in owned:
                problems.append(f"block {bname} holds a parameter that is not the backbone's")
            elif id(p) in seen:
                problems.append(f"{owned[id(p)]} is in blocks {seen[id(p)]} and {bname}")
            seen[id(p)] = bname
    problems += [f"{n} is in no block" for i, n in owned.items() if i not in seen]
    return problems


# --------------------------------------------------------------------------------------
# tiny-cnn
# --------------------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """Four stages of conv3x3 -> 2x2 max-pool -> batch-norm -> relu (16, 32, 64, 128
    channels times ``width``) and global average pooling: ``[N,3,H,W] -> [N,D]`` with
    ``D = round(128 * width)``.

    Each stage convolves at its full resolution (stride 1) and downsamples with a
    max-pool, i.e. keeps the strongest response of each feature in every 2x2 cell. That
    is what lets a small network learn the *outline* of a shape whose colour, and thus
    the sign of every edge response, is random (``synthetic-shapes``). Measured on the
    6-shape source task of ``sequential-shapes`` (1000-1500 training images, full nuisances):

    * one 3x3 stride-2 conv per stage (the previous design: cheap, but the kernel barely
      overlaps itself, the output grid repeats only every 16 pixels and each output sees
      at most 31) memorised the training images while test accuracy stayed at chance;
      even on black-and-white silhouettes it only reached 64% (100% train);
    * linear downsampling - 5x5 stride-2 convs, or conv then 2x2 average-pool - did not
      even fit the training set in 12 epochs (loss stuck near ln 6);
    * conv -> bn -> relu -> max-pool learnt, conv -> max-pool -> bn -> relu (this) learnt
      faster (88-95% test accuracy after 12 epochs over 3 seeds, vs 71-81%) and costs ~25%
      less, since batch-norm and relu run on a quarter of the pixels. Normalising after
      the pool also means batch-norm centres the *pooled detections*, so the relu keeps
      only responses stronger than is typical for a 2x2 cell.

    Pooling rounds up (``ceil_mode``), so any input size of at least 1 pixel works.

    Small enough to train a source model on a CPU in seconds (tests, the no-download
    sequential-transfer demo).
    """

    def __init__(self, width: float = 1.0, in_chans: int = 3):
        super().__init__()
        if width <= 0:
            raise ConfigError([("model.args.width", f"must be > 0, got {width}")])
        chans = [max(4, int(round(c * width))) for c in (16, 32, 64, 128)]
        cin = in_chans
        for i, cout in enumerate(chans, start=1):
            self.add_module(f"stage{i}", nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=1, padding=1, bias=False),
                nn.MaxPool2d(2, ceil_mode=True),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ))
            cin = cout
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = chans[-1]
        # He init (as torchvision's ResNets). PyTorch's default conv init is ~0.6x as large
        # in stages 2-4, i.e. larger relative Adam steps there under batch-norm: with it the
        # sequential-shapes source task learnt a little slower, and in the conv-bn-relu-pool
        # variant some seeds sat at chance for 10+ epochs (none did with He init).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.pool(x).flatten(1)


# --------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------


def _canonical(name: str) -> str:
    return TIMM_ALIASES.get(name, name)


@functools.lru_cache(maxsize=1)
def _timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


def _timm_model_name(name: str) -> str | None:
    """``timm/resnet50.a1_in1k`` -> ``resnet50.a1_in1k`` if timm knows ``resnet50``, else None."""
    if not name.startswith(_TIMM_PREFIX):
        return None
    rest = name[len(_TIMM_PREFIX):]
    return rest if rest.split(".", 1)[0] in _timm_names() else None


def _torchvision_names() -> set[str]:
    import torchvision.models as tvm

    return set(tvm.list_models(module=tvm))


def _tv_weights_enum(name: str, enum_name: str) -> Any:
    import torchvision.models as tvm

    enum_cls = tvm.get_model_weights(name)
    try:
        return enum_cls[enum_name]
    except KeyError:
        valid = ", ".join(["DEFAULT"] + [m.name for m in enum_cls])
        raise WeightsError(f"unknown torchvision weights '{enum_name}' for {name}; valid: {valid}") from None


def _resolve_path(weights: str, base_dir: Path) -> Path:
    path = Path(weights).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def _classify_weights(weights: str | None, arch: str, is_torchvision: bool,
                      weights_registry: Registry[NamedWeights] | None, base_dir: Path) -> tuple[str, Any]:
    """Which kind of ``model.weights`` this is: ("none"|"named"|"torchvision"|"file", detail)."""
    if weights is None:
        return "none", None
    if weights_registry is not None and weights in weights_registry:
        nw: NamedWeights = weights_registry.get(weights)
        if _canonical(nw.arch) != arch:
            raise WeightsError(f"weights '{weights}' are for {nw.arch}, not for {arch}")
        return "named", nw
    path = _resolve_path(weights, base_dir)
    if _ENUM_RE.match(weights) and not path.exists():
        if is_torchvision:
            return "torchvision", _tv_weights_enum(arch, weights)
        raise WeightsError(
            f"weights '{weights}' for {arch} are neither a registered weights name nor a file "
            f"({path} does not exist); torchvision names like IMAGENET1K_V1 only apply to torchvision backbones"
        )
    return "file", path


def _torchvision_state_dict(name: str, enum: Any) -> dict[str, torch.Tensor]:
    """The state dict of torchvision weights ``enum``: from the torch hub cache, else downloaded.

    Raises WeightsError when it is not cached and the network is off or unreachable.
    """
    url = enum.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"cached torchvision weights {cached} could not be read "
                               f"({type(exc).__name__}: {exc}); delete the file and retry") from None
    offline_hint = (f"download {url} where there is a network and pass the local file path as "
                    f"model.weights (or copy it to {cached})")
    if network_disabled():
        raise WeightsError(f"torchvision weights {name} {enum.name} are not available offline "
                           f"(not in {cached.parent}); {offline_hint}")
    try:
        return enum.get_state_dict(progress=True, weights_only=True)
    except Exception as exc:  # any network / disk / format problem is the user's to fix
        raise WeightsError(f"torchvision weights {name} {enum.name} are not available offline and could "
                           f"not be downloaded ({type(exc).__name__}: {exc}); {offline_hint}") from None


def _fit_torchvision_keys(state: dict[str, torch.Tensor], model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """torchvision's own checkpoint fix-ups, so its checkpoints load strictly into our models.

    Drops auxiliary-classifier tensors (inception_v3/googlenet are built without aux heads)
    and renames the original DenseNet keys the way ``torchvision.models.densenet`` does.
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(_AUX_PREFIXES)}
    if name.startswith("densenet"):
        state = {(_DENSENET_OLD_KEY.sub(r"\1\2", k)): v for k, v in state.items()}
    return state


def _is_transfer_checkpoint(state: dict[str, torch.Tensor]) -> bool:
    """True for a tlengine TransferModel state dict (``backbone.*`` and ``head.*`` keys only)."""
    return bool(state) and all(k.startswith(("backbone.", "head.")) for k in state) and any(
        k.startswith("backbone.") for k in state)


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


def _strip_last_linear(model: nn.Module, name: str) -> int:
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


def _build_torchvision(name: str, weights_kind: str, enum: Any,
                       kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
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


def _build_timm(model_name: str, kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
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


def _check_input_size(arch: str, pp: dict[str, Any], input_size: int | None) -> None:
    if input_size is None:
        return
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size <= 0:
        raise ConfigError([("model.input_size", f"must be a positive integer, got {input_size!r}")])
    if pp.get("fixed_input_size") and input_size != pp["input_size"]:
        raise ConfigError([("model.input_size", f"{arch} only accepts {pp['input_size']}x{pp['input_size']} "
                                                f"inputs, got {input_size}")])
    if input_size < pp.get("min_input_size", 1):
        raise ConfigError([("model.input_size", f"{arch} needs inputs of at least "
                                                f"{pp['min_input_size']} pixels, got {input_size}")])


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
    arch = _canonical(name)
    kwargs = dict(kwargs)
    timm_name = _timm_model_name(arch)
    is_torchvision = False
    if arch == TINY_CNN:
        pass
    elif arch.startswith(_TIMM_PREFIX):
        if timm_name is None:
            raise UnknownNameError(f"unknown backbone '{name}': '{arch[len(_TIMM_PREFIX):]}' is not in "
                                   f"timm.list_models() (timm {_timm_version()})")
        arch = _TIMM_PREFIX + timm_name.split(".", 1)[0]  # a pretrained tag is not part of the architecture
    elif arch in _torchvision_names():
        is_torchvision = True
    else:
        raise UnknownNameError(f"unknown backbone '{name}': not a torchvision classification model, "
                               f"not timm/<name> and not {TINY_CNN}")

    kind, detail = _classify_weights(weights, arch, is_torchvision, weights_registry, Path(base_dir))

    # 1. the full original model, random init, plus its default preprocessing
    if arch == TINY_CNN:
        model: nn.Module = TinyCNN(**kwargs)
        pp: dict[str, Any] = {"input_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3,
                              "interpolation": "bilinear", "crop_pct": 1.0,
                              "min_input_size": 1, "fixed_input_size": False}
    elif is_torchvision:
        model, pp = _build_torchvision(arch, kind, detail, kwargs)
    else:
        model, pp = _build_timm(timm_name, kwargs)
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
        elif _is_transfer_checkpoint(state):
            backbone_state = state
        else:
            load_strict(model, state, what=arch, source=source)
    elif kind in ("torchvision", "file"):
        if kind == "torchvision":
            source = f"{arch} {detail.name}"
            state = _torchvision_state_dict(arch, detail)
        else:
            source = str(detail)
            state = load_state_dict_file(detail)
        if _is_transfer_checkpoint(state):
            backbone_state = state
        else:
            if is_torchvision:
                state = _fit_torchvision_keys(state, model, arch)
            load_strict(model, state, what=arch, source=source)

    # 3. strip the head: the module now returns pooled features [N, D]
    if arch == TINY_CNN:
        feature_dim = model.feature_dim
    elif is_torchvision:
        feature_dim = _strip_last_linear(model, arch)
    else:
        model.reset_classifier(0)
        # head_hidden_size covers models with a pre-logits layer (MobileNetV3's conv_head).
        feature_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)

    if backbone_state is not None:
        sub = {k[len("backbone."):]: v for k, v in backbone_state.items() if k.startswith("backbone.")}
        load_strict(model, sub, what=f"{arch} backbone", source=source)

    # 4. blocks, input side first
    if arch == TINY_CNN:
        groups = [(f"stage{i}", [(f"stage{i}", getattr(model, f"stage{i}"))]) for i in range(1, 5)]
    elif is_torchvision:
        groups = _vit_groups(model) if arch.startswith("vit_") else _generic_groups(model)
    else:
        groups = _timm_groups(model)
    blocks = _make_blocks(groups)
    problems = _partition_problems(model, blocks)
    if problems and not is_torchvision and arch != TINY_CNN:
        blocks = _make_blocks(_generic_groups(model))  # timm grouping that does not fit: plain stages
        problems = _partition_problems(model, blocks)
    if problems:
        raise RuntimeError(f"bug: the blocks of {arch} do not partition its parameters: {'; '.join(problems[:3])}")

    return Backbone(module=model, feature_dim=feature_dim, blocks=blocks, preprocessing=pp, arch=arch)


def _timm_version() -> str:
    import timm

    return timm.__version__


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------


def _timm_resolver(name: str) -> Callable[..., Backbone] | None:
    """Registry fallback: a factory for any ``timm/<name>`` that timm knows, else None."""
    if _timm_model_name(name) is None:
        return None
    return functools.partial(build_backbone, name)


def register_backbones(registry: Registry[Any]) -> None:
    """Add every backbone factory of this plugin to ``registry``.

    Each factory is called as ``factory(weights=..., weights_registry=..., base_dir=...,
    input_size=None, **kwargs)`` and returns a :class:`~tlengine.model.Backbone`.
    """
    for name in TORCHVISION_BACKBONES:
        registry.add(name, functools.partial(build_backbone, name), description=f"torchvision {name}",
                     source="torchvision")
    registry.add(TINY_CNN, functools.partial(build_backbone, TINY_CNN),
                 description="4-stage 16-32-64-128 CNN (conv, max-pool, bn, relu; D=128), trains in seconds on a CPU; kwargs: width",
                 source="tlengine")
    for name in TIMM_BACKBONES:
        registry.add(name, functools.partial(build_backbone, name), description=f"timm {name[len(_TIMM_PREFIX):]}",
                     source="timm")
    for alias, target in TIMM_ALIASES.items():
        registry.add(alias, functools.partial(build_backbone, alias), description=f"alias of {target}",
                     source="timm")
    registry.add_fallback(_timm_resolver, "timm/<any timm.list_models() name>")
