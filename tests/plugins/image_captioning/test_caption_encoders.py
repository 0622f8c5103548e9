"""Captioning grid encoders: visual tokens from a classification backbone's last conv grid.

Random init only, small inputs (64 px: a 2x2 grid for every architecture here), nothing
downloaded.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tlengine.blocks import check_partition
from tlengine.errors import ConfigError, WeightsError
from tlengine.model import Backbone, TransferModel
from tlengine_plugins.image_captioning.encoders import (
    GRID_ENCODERS,
    GridEncoder,
    build_grid_encoder,
)
from tlengine_plugins.image_classification.backbones import build_backbone
from torch import nn

SMALL = 64


def build(name: str, **kw) -> GridEncoder:
    kw.setdefault("weights", None)
    kw.setdefault("input_size", SMALL)
    kw.setdefault("base_dir", Path("."))
    return build_grid_encoder(name, weights_registry=None, **kw)


@pytest.fixture(scope="module")
def vgg16() -> GridEncoder:
    torch.manual_seed(0)
    return build("vgg16")


@pytest.fixture(scope="module")
def tv_vgg16() -> nn.Module:
    """torchvision's VGG16 classification model, random init (tests copy, never modify it)."""
    import torchvision

    torch.manual_seed(1)
    return torchvision.models.vgg16(weights=None).eval()


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("vgg19", 512),
        ("resnet50", 2048),
        ("mobilenet_v2", 1280),
        ("timm/tf_efficientnet_lite0", 1280),
        ("tf_efficientnet_lite1", 1280),  # short name
        ("timm/tf_efficientnet_lite2", 1280),
    ],
)
def test_token_shapes_and_blocks(name: str, channels: int) -> None:
    enc = build(name)
    assert isinstance(enc, Backbone)
    assert enc.grid_shape == (2, 2, channels)
    assert enc.channels == enc.feature_dim == channels and enc.num_tokens == 4
    assert enc.preprocessing["input_size"] == SMALL and enc.arch.endswith(name.split("/")[-1])
    assert enc.module.training  # the meta-device shape probe leaves the mode alone
    with torch.no_grad():
        tokens = enc.module(torch.randn(2, 3, SMALL, SMALL))
    assert tokens.shape == (2, 4, channels)
    assert check_partition(enc.module, enc.blocks) == []
    # the grid at the default 224 px is the familiar 7x7
    assert enc.module.grid_shape_for(224) == (7, 7, channels)


def test_vgg16_shapes_blocks_and_dropped_classifier(vgg16: GridEncoder) -> None:
    assert set(GRID_ENCODERS) >= {"vgg16", "vgg19", "resnet50", "mobilenet_v2"}
    assert vgg16.grid_shape == (2, 2, 512) and vgg16.module.grid_shape_for(224) == (7, 7, 512)
    with torch.no_grad():
        assert vgg16.module(torch.randn(1, 3, SMALL, SMALL)).shape == (1, 4, 512)
    # fc6/fc7 have parameters but never run for the grid: dropped from module and blocks
    assert vgg16.module.dropped == ["classifier"]
    assert [n for n, _ in vgg16.module.named_children()] == ["features"]
    assert all(not n.startswith("classifier") for n, _ in vgg16.blocks)
    assert check_partition(vgg16.module, vgg16.blocks) == []
    assert len(vgg16.blocks) == 5  # VGG's five conv stages


def test_vgg16_tokens_are_the_features_map_row_major(vgg16: GridEncoder, tv_vgg16: nn.Module) -> None:
    enc = copy.deepcopy(vgg16.module).eval()
    features = copy.deepcopy(tv_vgg16.features)
    features.load_state_dict({k[len("features.") :]: v for k, v in enc.state_dict().items()}, strict=True)
    x = torch.randn(2, 3, SMALL, SMALL)
    with torch.no_grad():
        grid = features(x)
        tokens = enc(x)
    assert grid.shape == (2, 512, 2, 2)
    h, w = 1, 0
    assert torch.equal(tokens[:, h * 2 + w, :], grid[:, :, h, w])
    assert torch.equal(tokens, grid.flatten(2).transpose(1, 2))
    assert torch.equal(enc.forward_grid(x), grid)


def test_vgg16_state_dict_is_the_classification_models(vgg16: GridEncoder, tv_vgg16: nn.Module) -> None:
    clf = tv_vgg16.state_dict()
    own = vgg16.module.state_dict()
    assert set(own) < set(clf)
    trunk = {k: v for k, v in clf.items() if not k.startswith("classifier.")}
    assert set(own) == set(trunk)
    fresh = copy.deepcopy(vgg16.module)
    fresh.load_state_dict(trunk, strict=True)
    assert all(torch.equal(v, trunk[k]) for k, v in fresh.state_dict().items())


def test_resnet50_and_timm_tokens_match_their_own_feature_maps() -> None:
    import timm

    x = torch.randn(1, 3, SMALL, SMALL)
    enc = build("resnet50").module.eval()
    import torchvision

    ref = torchvision.models.resnet50(weights=None).eval()
    missing, unexpected = ref.load_state_dict(enc.state_dict(), strict=False)
    assert not unexpected and set(missing) == {"fc.weight", "fc.bias"}
    body = nn.Sequential(*[getattr(ref, n) for n in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")])
    with torch.no_grad():
        assert torch.allclose(enc(x), ref.layer4(body(x)).flatten(2).transpose(1, 2))

    enc = build("timm/tf_efficientnet_lite0").module.eval()
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    missing, unexpected = ref.load_state_dict(enc.state_dict(), strict=False)
    assert not unexpected and set(missing) == {"classifier.weight", "classifier.bias"}
    with torch.no_grad():
        assert torch.allclose(enc(x), ref.forward_features(x).flatten(2).transpose(1, 2))


def test_an_engine_trained_backbone_loads_and_its_pre_logits_layer_is_dropped(tmp_path: Path) -> None:
    # MobileNetV3's classifier.0 (a Linear after the pooling) is in the image-classification
    # checkpoint but never runs for the grid, like VGG's fc6/fc7.
    torch.manual_seed(1)
    bb = build_backbone("mobilenet_v3_small", weights=None, weights_registry=None, base_dir=tmp_path)
    model = TransferModel(bb, nn.Linear(bb.feature_dim, 3))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert any(k.startswith("backbone.classifier.0.") for k in state)
    save_file(state, tmp_path / "model.safetensors")

    enc = build("mobilenet_v3_small", weights="model.safetensors", input_size=None, base_dir=tmp_path)
    assert enc.module.dropped == ["classifier"]
    assert enc.grid_shape == (7, 7, 576)
    own = enc.module.state_dict()
    assert {f"backbone.{k}" for k in own} < set(state)
    assert all(torch.equal(v, state[f"backbone.{k}"]) for k, v in own.items())
    assert check_partition(enc.module, enc.blocks) == []
    assert len(enc.blocks) == len(bb.blocks) - 1  # the classifier block is gone


def test_weights_from_a_file_of_the_classification_model(tmp_path: Path) -> None:
    import torchvision

    state = torchvision.models.mobilenet_v2(weights=None).state_dict()
    torch.save(state, tmp_path / "mnv2.pth")
    enc = build("mobilenet_v2", weights=str(tmp_path / "mnv2.pth"))
    assert torch.equal(enc.module.features[0][0].weight, state["features.0.0.weight"])


def test_imagenet1k_v1_offline_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLENGINE_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsError, match="vgg16 IMAGENET1K_V1 are not available offline") as err:
        build("vgg16", weights="IMAGENET1K_V1")
    msg = str(err.value)
    assert "model.weights" in msg and "\n" not in msg and ". " not in msg


def test_unknown_grid_layout_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="densenet121 has no known conv-grid layout"):
        build("densenet121")
