"""The template third-party plugin (plugins/template), loaded without installing it."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from tlengine.config import validate_data
from tlengine.errors import ConfigError, WeightsError
from tlengine.plugins import PluginInfo, PluginManager

TEMPLATE_DIR = Path(__file__).resolve().parents[3] / "plugins" / "template"


@pytest.fixture
def template(monkeypatch: pytest.MonkeyPatch):
    """The template plugin module, imported from its source folder."""
    monkeypatch.syspath_prepend(str(TEMPLATE_DIR))
    for name in [m for m in sys.modules if m.startswith("tlengine_template_plugin")]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module("tlengine_template_plugin.plugin")


@pytest.fixture
def manager(template) -> PluginManager:
    manager = PluginManager()
    manager.register(template, PluginInfo("template", "tlengine-plugin-template", "0.1.0",
                                          "template = tlengine_template_plugin.plugin"))
    return manager


def test_registers_its_components(manager: PluginManager) -> None:
    (info,) = manager.plugins
    assert info.error is None
    assert info.registered == {"backbones": ["template/mlp"], "datasets": ["template-stripes"],
                               "pipelines": ["template-demo"]}
    entry = manager.registries.backbones.entry("template/mlp")
    assert entry.plugin == "template"


def test_template_is_not_part_of_tlengine_plugins() -> None:
    assert not (TEMPLATE_DIR / "__init__.py").exists()


def test_pipeline_yaml_validates(manager: PluginManager) -> None:
    path = manager.registries.pipelines.get("template-demo")
    config = validate_data(yaml.safe_load(Path(path).read_text()))
    assert config.name == "template-demo"
    assert config.model.backbone in manager.registries.backbones
    assert config.data.dataset in manager.registries.datasets
    assert [a.arm for a in config.arms()] == ["fine-tune", "scratch"]


def test_backbone_shapes_and_blocks(manager: PluginManager, tmp_path: Path) -> None:
    factory = manager.registries.backbones.get("template/mlp")
    backbone = factory(weights=None, weights_registry=manager.registries.weights, base_dir=tmp_path)
    assert backbone.arch == "template/mlp" and backbone.feature_dim == 64
    assert backbone.preprocessing["input_size"] == 32 and backbone.preprocessing["crop_pct"] == 1.0
    for shape in [(4, 3, 32, 32), (2, 3, 48, 40)]:
        assert backbone.module(torch.randn(*shape)).shape == (shape[0], 64)
    # blocks partition the parameters: every parameter in exactly one block
    block_params = [id(p) for _, block in backbone.blocks for p in block.parameters()]
    assert sorted(block_params) == sorted(id(p) for p in backbone.module.parameters())
    assert len(block_params) == len(set(block_params)) and [n for n, _ in backbone.blocks] == ["stem", "mlp"]
    assert factory(weights=None, weights_registry=None, base_dir=tmp_path, input_size=48).preprocessing["input_size"] == 48
    with pytest.raises(ConfigError, match="model.args.depth"):
        factory(weights=None, weights_registry=None, base_dir=tmp_path, depth=3)


def test_backbone_loads_weights(manager: PluginManager, tmp_path: Path) -> None:
    factory = manager.registries.backbones.get("template/mlp")
    source = factory(weights=None, weights_registry=None, base_dir=tmp_path).module
    # A tlengine checkpoint: the whole TransferModel, backbone under "backbone.", plus a head.
    state = {f"backbone.{k}": v.clone() for k, v in source.state_dict().items()}
    state["head.weight"] = torch.zeros(3, 64)
    save_file(state, str(tmp_path / "checkpoint.safetensors"))
    loaded = factory(weights=".", weights_registry=None, base_dir=tmp_path).module  # a run directory
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    with pytest.raises(WeightsError):
        factory(weights="missing.safetensors", weights_registry=None, base_dir=tmp_path)


def test_dataset_builds_deterministically(manager: PluginManager, tmp_path: Path) -> None:
    spec = manager.registries.datasets.get("template-stripes")
    assert spec.task == "image-classification"
    args = spec.args.model_validate({"per_class": 5, "size": 24})
    samples = spec.build(args, tmp_path)
    assert samples.classes == ["horizontal", "vertical", "diagonal"]
    assert len(samples.items) == 15 and {label for _, label in samples.items} == {0, 1, 2}
    image, _ = samples.items[0]
    assert image.size == (24, 24) and image.mode == "RGB"
    assert "template-stripes" in samples.source
    again = spec.build(args, tmp_path)
    assert all(a.tobytes() == b.tobytes() for (a, _), (b, _) in zip(samples.items, again.items))
    with pytest.raises(Exception):
        spec.args.model_validate({"per_clas": 5})  # extra="forbid"


def test_after_run_hook(manager: PluginManager, tmp_path: Path) -> None:
    manager.hook.tlengine_after_run(run_dir=tmp_path, summary={"pipeline": "template-demo",
                                                               "arms": {"scratch": {}, "fine-tune": {}}})
    record = json.loads((tmp_path / "template_plugin.json").read_text())
    assert record == {"pipeline": "template-demo", "arms": ["fine-tune", "scratch"]}
