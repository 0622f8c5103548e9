"""The template third-party plugin (plugins/template), loaded without installing it."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import tlengine.builtin
import tlengine_plugins.image_classification.plugin as image_classification
import torch
import yaml
from pydantic import ValidationError
from safetensors.torch import save_file
from tlengine.config import StrategyConfig, validate_data
from tlengine.errors import ConfigError, WeightsError
from tlengine.model import TransferModel
from tlengine.plugins import PluginInfo, PluginManager
from tlengine.strategies.base import StepContext
from tlengine.validation import validate

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
    manager.register(
        template,
        PluginInfo("template", "tlengine-plugin-template", "0.1.0", "template = tlengine_template_plugin.plugin"),
    )
    return manager


def test_registers_its_components(manager: PluginManager) -> None:
    (info,) = manager.plugins
    assert info.error is None
    assert info.registered == {
        "backbones": ["template/mlp"],
        "datasets": ["template-stripes"],
        "strategies": ["template-mixup"],
        "pipelines": ["template-demo"],
    }
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
    assert [a.arm for a in config.arms()] == ["fine-tune", "template-mixup", "scratch"]
    assert config.arms()[1].args == {"alpha": 0.4, "prob": 1.0}


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
    assert (
        factory(weights=None, weights_registry=None, base_dir=tmp_path, input_size=48).preprocessing["input_size"] == 48
    )
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
    with pytest.raises(ValidationError, match="per_clas"):
        spec.args.model_validate({"per_clas": 5})  # extra="forbid"


def test_after_run_hook(manager: PluginManager, tmp_path: Path) -> None:
    manager.hook.tlengine_after_run(
        run_dir=tmp_path, summary={"pipeline": "template-demo", "arms": {"scratch": {}, "fine-tune": {}}}
    )
    record = json.loads((tmp_path / "template_plugin.json").read_text())
    assert record == {"pipeline": "template-demo", "arms": ["fine-tune", "scratch"]}


# ------------------------------------------------------------------ strategy template-mixup
@pytest.fixture
def full_manager(template) -> PluginManager:
    """The core, the image-classification plugin and the template from source (not from
    entry points, so an installed copy of the template cannot clash)."""
    manager = PluginManager()
    manager.register(tlengine.builtin, PluginInfo("core", "tlengine", "0", "core = tlengine.builtin"))
    manager.register(image_classification, PluginInfo("image_classification", "tlengine", "0", "image_classification"))
    manager.register(
        template,
        PluginInfo("template", "tlengine-plugin-template", "0.1.0", "template = tlengine_template_plugin.plugin"),
    )
    assert manager.errors == []
    return manager


def test_shipped_pipeline_validates_against_the_registries(full_manager: PluginManager) -> None:
    path = Path(full_manager.registries.pipelines.get("template-demo"))
    config = validate(yaml.safe_load(path.read_text()), full_manager.registries, path.parent)
    assert [a.name for a in config.arms()] == ["fine-tune", "template-mixup", "scratch"]


@pytest.mark.parametrize(
    "args, loc",
    [
        ({"alpah": 0.4}, "compare.0.args.alpah"),  # unknown key (extra="forbid")
        ({"alpha": 0}, "compare.0.args.alpha"),  # alpha must be > 0
        ({"alpha": -1.0}, "compare.0.args.alpha"),
        ({"prob": 1.5}, "compare.0.args.prob"),  # prob in [0, 1]
    ],
)
def test_mixup_args_are_validated(full_manager: PluginManager, args: dict, loc: str) -> None:
    path = Path(full_manager.registries.pipelines.get("template-demo"))
    data = yaml.safe_load(path.read_text())
    data["compare"] = [{"name": "template-mixup", "args": args}]
    with pytest.raises(ConfigError) as err:
        validate(data, full_manager.registries, path.parent)
    assert loc in {field for field, _ in err.value.errors}


def test_mixup_args_defaults(full_manager: PluginManager) -> None:
    cls = full_manager.registries.strategies.get("template-mixup")
    strategy = cls(StrategyConfig(name="template-mixup"))
    assert (strategy.args.alpha, strategy.args.prob) == (0.4, 1.0)
    assert strategy.backbone_lr_mult() == 0.1 and strategy.trainable_blocks(2, 1) == 2  # fine-tune's plan


def _mixup_setup(manager: PluginManager, tmp_path: Path, **args):
    """(strategy, prepared model, image-classification task, images, labels)."""
    torch.manual_seed(0)
    backbone = manager.registries.backbones.get("template/mlp")(weights=None, weights_registry=None, base_dir=tmp_path)
    model = TransferModel(backbone, torch.nn.Linear(backbone.feature_dim, 3))
    strategy = manager.registries.strategies.get("template-mixup")(StrategyConfig(name="template-mixup", args=args))
    strategy.prepare(model, None)
    task = manager.registries.tasks.get("image-classification")(manager.registries)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    strategy.apply(model, 1)
    strategy.train_mode(model)
    return strategy, model, task, x, y


def _step(strategy, model, task, x, y):
    return strategy.training_step(
        StepContext(task, model, model, x, y, epoch=1, step=0, total_steps=4, device=torch.device("cpu"))
    )


def test_prepare_adds_a_strategy_owned_temperature(full_manager: PluginManager, tmp_path: Path) -> None:
    strategy, model, *_ = _mixup_setup(full_manager, tmp_path)
    part = model.part("template_temperature")
    assert part.owner == "strategy" and not part.pretrained
    own = model.owned_state_dict()
    assert list(own) == ["template_temperature.log_temperature"]
    assert float(own["template_temperature.log_temperature"].detach()) == 0.0  # T = 1 at the start
    groups = {g["name"] for g in strategy.param_groups(model, 0.01)}
    assert "template_temperature" in groups  # trained at lr


def test_step_without_mixing_is_the_plain_task_loss(full_manager: PluginManager, tmp_path: Path) -> None:
    strategy, model, task, x, y = _mixup_setup(full_manager, tmp_path, prob=0.0)
    model.eval()  # no BatchNorm batch statistics drift between the two forward passes
    losses = _step(strategy, model, task, x, y)
    assert list(losses) == ["mixup"]
    assert torch.allclose(losses["mixup"], task.loss(model(x), y))


def test_step_mixes_inputs_and_targets(full_manager: PluginManager, tmp_path: Path) -> None:
    strategy, model, task, x, y = _mixup_setup(full_manager, tmp_path, alpha=1.0, prob=1.0)
    model.eval()
    from tlengine_template_plugin.strategies import sample_mixup

    seen = []
    model.part("backbone").module.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    torch.manual_seed(7)
    losses = _step(strategy, model, task, x, y)
    torch.manual_seed(7)
    lam, perm = sample_mixup(len(y), 1.0, 1.0)  # the same draws from the same seed
    assert perm is not None and 0.0 < lam < 1.0 and not torch.equal(perm, torch.arange(len(y)))
    mixed = lam * x + (1 - lam) * x[perm]
    assert torch.allclose(seen[0], mixed)  # the network saw the mixed images
    with torch.no_grad():
        out = model(mixed)
    expected = lam * task.loss(out, y) + (1 - lam) * task.loss(out, y[perm])
    assert list(losses) == ["mixup"] and torch.allclose(losses["mixup"], expected)
    assert not torch.allclose(losses["mixup"], task.loss(model(x), y))
    torch.manual_seed(7)
    assert torch.equal(_step(strategy, model, task, x, y)["mixup"], losses["mixup"])  # deterministic
    losses["mixup"].backward()
    temperature = model.part("template_temperature").module.log_temperature
    assert temperature.grad is not None and float(temperature.grad) != 0.0  # the temperature learns
