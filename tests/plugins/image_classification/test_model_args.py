"""check_model_args: model.args keys and model.weights values checked before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest
from tlengine.registry import Registries
from tlengine_plugins.image_classification.backbones import build_backbone, check_model_args, register_backbones
from tlengine_plugins.image_classification.weights import register_weights


@pytest.fixture(scope="module")
def registries() -> Registries:
    reg = Registries()
    register_backbones(reg.backbones)
    register_weights(reg.weights)
    reg.backbones.add("other/net", lambda **kw: None, description="another plugin's backbone")
    return reg


def fields(problems: list[tuple[str, str]]) -> list[str]:
    return [field for field, _ in problems]


@pytest.mark.parametrize(
    "name, args",
    [
        ("tiny-cnn", {"width": 0.5, "in_chans": 3}),
        ("resnet18", {"zero_init_residual": True, "num_classes": 10}),
        ("efficientnet_b0", {"dropout": 0.1}),  # popped by the builder, not a class default
        ("vit_b_16", {"image_size": 64}),
        ("inception_v3", {"aux_logits": False}),
        ("timm/resnet18", {"drop_rate": 0.1, "drop_path_rate": 0.05}),
        ("timm/vit_tiny_patch16_224", {"img_size": 64}),
        ("timm/xception", {"drop_rate": 0.2}),  # an alias
    ],
)
def test_valid_args_pass(registries, name, args):
    assert check_model_args(name, args, None, registries, Path(".")) == []


def test_valid_args_really_build(registries):
    """What the check accepts, the factory accepts (cheap models only)."""
    for name, args in [
        ("tiny-cnn", {"width": 0.5}),
        ("resnet18", {"zero_init_residual": True}),
        ("timm/resnet18", {"drop_rate": 0.1}),
    ]:
        assert check_model_args(name, args, None, registries, Path(".")) == []
        build_backbone(name, weights=None, weights_registry=registries.weights, base_dir=Path("."), **args)


@pytest.mark.parametrize(
    "name, key, owner, accepted",
    [
        ("tiny-cnn", "widht", "TinyCNN", "in_chans, width"),
        ("resnet18", "num_clases", "torchvision ResNet", "zero_init_residual"),
        ("convnext_tiny", "layerscale", "torchvision ConvNeXt", "layer_scale"),  # ConvNeXt swallows **kwargs
        ("timm/tf_efficientnet_lite0", "dropout", "timm EfficientNet", "drop_rate"),
    ],
)
def test_unknown_arg_is_named_with_the_accepted_ones(registries, name, key, owner, accepted):
    problems = check_model_args(name, {key: 1}, None, registries, Path("."))
    assert fields(problems) == [f"model.args.{key}"]
    reason = problems[0][1]
    assert f"unknown argument '{key}'" in reason and owner in reason and accepted in reason


def test_unknown_tiny_cnn_arg_is_what_the_constructor_rejects(registries):
    with pytest.raises(TypeError, match="widht"):  # what a run hit mid-way before the check
        build_backbone("tiny-cnn", weights=None, weights_registry=None, base_dir=Path("."), widht=2)
    assert fields(check_model_args("tiny-cnn", {"widht": 2}, None, registries, Path("."))) == ["model.args.widht"]


def test_args_with_their_own_field_are_pointed_there(registries):
    problems = dict(
        check_model_args(
            "timm/resnet18", {"weights": "x", "input_size": 64, "pretrained": True}, None, registries, Path(".")
        )
    )
    assert "model.weights" in problems["model.args.weights"]
    assert "model.input_size" in problems["model.args.input_size"]
    assert "model.weights" in problems["model.args.pretrained"]


def test_other_plugins_and_unknown_backbones_are_not_checked_here(registries):
    assert check_model_args("other/net", {"anything": 1}, "nope", registries, Path(".")) == []
    assert check_model_args("resnet9000", {"anything": 1}, "nope", registries, Path(".")) == []
    assert check_model_args("timm/not_a_model_xyz", {"x": 1}, None, registries, Path(".")) == []


# ---------------------------------------------------------------------------------- weights
def test_known_weights_pass(registries, tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"")
    (tmp_path / "run").mkdir()
    ok = [
        ("resnet18", "IMAGENET1K_V1"),
        ("resnet18", "DEFAULT"),
        ("tiny-cnn", "w.safetensors"),
        ("tiny-cnn", "run"),
        ("tiny-cnn", str(tmp_path / "w.safetensors")),
        ("timm/tf_efficientnet_lite0", "efficientnet-lite0-imagenet"),
    ]
    for name, weights in ok:
        assert check_model_args(name, {}, weights, registries, tmp_path) == [], (name, weights)


def test_unknown_weights_list_the_known_names(registries, tmp_path):
    problems = check_model_args("resnet18", {}, "IMAGENET1K_V9", registries, tmp_path)
    assert fields(problems) == ["model.weights"]
    assert "IMAGENET1K_V9" in problems[0][1] and "DEFAULT, IMAGENET1K_V1" in problems[0][1]

    problems = check_model_args("timm/tf_efficientnet_lite0", {}, "efficientnet-lite0", registries, tmp_path)
    assert fields(problems) == ["model.weights"]
    assert "known weights for timm/tf_efficientnet_lite0: efficientnet-lite0-imagenet" in problems[0][1]

    problems = check_model_args("tiny-cnn", {}, "missing/model.safetensors", registries, tmp_path)
    assert fields(problems) == ["model.weights"]
    assert str(tmp_path / "missing" / "model.safetensors") in problems[0][1]
    assert "no weights are registered for tiny-cnn" in problems[0][1]


def test_torchvision_enum_names_do_not_apply_to_other_families(registries, tmp_path):
    problems = check_model_args("timm/resnet18", {}, "IMAGENET1K_V1", registries, tmp_path)
    assert fields(problems) == ["model.weights"]


def test_named_weights_for_another_backbone(registries, tmp_path):
    problems = check_model_args("mobilenet_v2", {}, "efficientnet-lite0-imagenet", registries, tmp_path)
    assert fields(problems) == ["model.weights"]
    reason = problems[0][1]
    assert "are for timm/tf_efficientnet_lite0, not for mobilenet_v2" in reason and "IMAGENET1K_V1" in reason


def test_args_and_weights_problems_together(registries, tmp_path):
    problems = check_model_args("tiny-cnn", {"depth": 3}, "nope.pt", registries, tmp_path)
    assert fields(problems) == ["model.args.depth", "model.weights"]
