"""Config loading: YAML, overrides, schema errors and registry-aware validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from tlengine.config import apply_overrides, read_yaml, validate_data
from tlengine.errors import ConfigError, TLEngineError, UnknownNameError
from tlengine.plugins import registries
from tlengine.validation import load_pipeline


def test_valid_pipeline_loads(tiny_config, write_pipeline):
    loaded = load_pipeline(str(write_pipeline(tiny_config)), [], registries())
    assert loaded.config.model.backbone == "tiny-cnn"
    assert [a.arm for a in loaded.config.arms()] == ["fine-tune", "scratch"]


def test_overrides_parse_values_and_nested_keys(tiny_config):
    data = apply_overrides(
        tiny_config,
        [
            "train.epochs=5",
            "train.lr=1e-4",
            "data.args.shapes=[star, ring]",
            "strategy.unfreeze=2",
            "model.weights=null",
        ],
    )
    config = validate_data(data)
    assert config.train.epochs == 5 and config.train.lr == pytest.approx(1e-4)
    assert config.data.args["shapes"] == ["star", "ring"]
    assert config.strategy.unfreeze == 2 and config.model.weights is None


def test_override_without_equals_is_an_error(tiny_config):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(tiny_config, ["train.epochs"])


def test_all_errors_reported_at_once(tiny_config, write_pipeline):
    tiny_config["train"]["epochs"] = "many"
    tiny_config["train"]["bogus"] = 1
    tiny_config["model"]["backbone"] = "resnet-9000"
    tiny_config["data"]["args"]["per_class"] = -1
    with pytest.raises(ConfigError) as err:
        load_pipeline(str(write_pipeline(tiny_config)), [], registries())
    locs = [loc for loc, _ in err.value.errors]
    assert "train.epochs" in locs and "train.bogus" in locs and "model.backbone" in locs
    text = str(err.value)
    assert "config error: train.bogus: unknown key" in text
    assert "unknown backbone 'resnet-9000'" in text and "known: " in text and "timm/<" in text


def test_dataset_args_validated_by_dataset(tiny_config, write_pipeline):
    tiny_config["data"]["args"]["colour"] = "red"
    with pytest.raises(ConfigError, match=r"data\.args\.colour: unknown key"):
        load_pipeline(str(write_pipeline(tiny_config)), [], registries())


def test_unknown_task_lists_known(tiny_config, write_pipeline):
    tiny_config["task"] = "image-clasification"
    with pytest.raises(ConfigError, match="did you mean 'image-classification'"):
        load_pipeline(str(write_pipeline(tiny_config)), [], registries())


def test_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: [unclosed\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        read_yaml(bad)


def test_missing_file_and_unknown_shipped_name():
    with pytest.raises(TLEngineError, match="does not exist"):
        load_pipeline("nowhere/p.yaml", [], registries())
    with pytest.raises(UnknownNameError, match="unknown pipeline 'quikstart'.*quickstart"):
        load_pipeline("quikstart", [], registries())


def test_duplicate_arm_names_rejected(tiny_config, write_pipeline):
    tiny_config["compare"] = [{"name": "fine-tune"}]
    with pytest.raises(ConfigError, match="used twice"):
        load_pipeline(str(write_pipeline(tiny_config)), [], registries())


def test_missing_data_path_reported(tiny_config, write_pipeline):
    tiny_config["data"] = {"dataset": "image-folder", "args": {"path": "no-such-dir"}}
    with pytest.raises(ConfigError, match=r"data\.args\.path: .*no-such-dir does not exist"):
        load_pipeline(str(write_pipeline(tiny_config)), [], registries())


def test_data_path_cannot_escape_root(tiny_config, write_pipeline, tmp_path):
    (tmp_path / "data").mkdir()
    tiny_config["data"] = {"dataset": "image-folder", "root": "data", "args": {"path": "../.."}}
    with pytest.raises(ConfigError, match="outside the data root"):
        load_pipeline(str(write_pipeline(tiny_config)), [], registries())


def test_shipped_pipelines_validate():
    names = registries().pipelines.names()
    assert {"quickstart", "sequential-shapes"} <= set(names)
    for name in names:
        entry = registries().pipelines.find(name)
        loaded = load_pipeline(name, [], registries())
        assert loaded.config.name, name
        assert Path(loaded.source) == Path(entry.obj) and Path(loaded.source).suffix == ".yaml", name
        # The file it came from is the pipeline's own: the same name inside.
        assert read_yaml(Path(loaded.source))["name"] == loaded.config.name, name
    for name in ("quickstart", "sequential-shapes"):
        loaded = load_pipeline(name, [], registries())
        assert loaded.config.name == name and Path(loaded.source).name == f"{name}.yaml"
        assert Path(loaded.source).is_file()


def test_shipped_pipeline_paths_are_relative_to_it_and_typed_ones_to_the_cwd(tmp_path, monkeypatch):
    loaded = load_pipeline("spam-detection", [], registries())
    assert loaded.base_dir == Path(loaded.source).resolve().parent  # its example data sits beside it
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "sms.tsv").write_text("ham\thello there\nspam\twin a prize now\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    loaded = load_pipeline("spam-detection", ["data.root=mine", "data.args.path=sms.tsv"], registries())
    assert Path(loaded.config.data.root) == tmp_path / "mine"
    with pytest.raises(ConfigError, match="does not exist"):
        load_pipeline("spam-detection", ["data.root=elsewhere"], registries())
