"""The image task's ``data.label_groups``: train and score on groups of a dataset's classes,
on exactly the split the ungrouped dataset gets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from resume_helpers import run_in_process
from tlengine.config import DataConfig, TrainConfig
from tlengine.errors import ConfigError, DataError
from tlengine.plugins import get_plugin_manager
from tlengine.predict import load_run_model
from tlengine.task import PredictInput
from tlengine_plugins.image_classification.digits import MNIST_5K, MnistDigitsArgs
from tlengine_plugins.image_classification.task import ImageClassificationTask, group_samples

PREPROCESSING = {"input_size": 28, "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bilinear", "crop_pct": 1.0}
DIGITS = [str(d) for d in range(10)]
PARITY = {"odd": ["1", "3", "5", "7", "9"], "even": ["0", "2", "4", "6", "8"]}  # odd first: YAML order is kept


def task() -> ImageClassificationTask:
    return ImageClassificationTask(get_plugin_manager().registries, TrainConfig())


def data(label_groups=None, **extra) -> DataConfig:
    groups = {} if label_groups is None else {"label_groups": label_groups}
    return DataConfig(
        dataset="mnist-5k",
        args={"per_class": 12},
        val_fraction=0.2,
        test_fraction=0.3,
        split_seed=7,
        augment="none",
        **groups,
        **extra,
    )


def build(config: DataConfig, seed: int = 7):
    return task().build_data(config, preprocessing=PREPROCESSING, base_dir=Path("."), seed=seed)


def pixels(split) -> list[bytes]:
    return [split.dataset.items[i][0].tobytes() for i in split.indices]


def labels(split) -> list[int]:
    return [int(t) for t in task().targets(split)]


@pytest.fixture(scope="module")
def both():
    return build(data()), build(data(PARITY))


# --------------------------------------------------------------------------- the split and the labels
def test_grouped_and_ungrouped_builds_hold_the_same_images_in_every_split(both):
    plain, grouped = both
    for name in ("train", "val", "test"):
        a, b = getattr(plain, name), getattr(grouped, name)
        assert len(a) > 0 and list(a.indices) == list(b.indices), name
        assert pixels(a) == pixels(b), name


def test_grouping_keeps_the_image_objects_and_their_order(tmp_path):
    samples = MNIST_5K.build(MnistDigitsArgs(per_class=3), tmp_path)
    grouped = group_samples(samples, PARITY, "mnist-5k")
    assert len(grouped.items) == len(samples.items) == 30
    assert all(g[0] is s[0] for g, s in zip(grouped.items, samples.items))  # not copied
    assert grouped.labels == [1 - d % 2 for d in samples.labels]  # odd is group 0
    assert grouped.classes == ["odd", "even"] and samples.classes == DIGITS  # the original is untouched


def test_labels_map_to_their_group(both):
    plain, grouped = both
    classes = grouped.info["classes"]
    for name in ("train", "val", "test"):
        digits, groups = labels(getattr(plain, name)), labels(getattr(grouped, name))
        assert [classes[g] for g in groups] == ["odd" if d % 2 else "even" for d in digits], name
        # what a batch of the dataset itself carries agrees with targets() (the feature cache's labels)
        split = getattr(grouped, name)
        assert [split[i][1] for i in range(len(split))] == groups, name
    assert set(labels(grouped.test)) == {0, 1}


def test_classes_are_the_group_names_in_yaml_order_and_info_records_the_groups(both):
    plain, grouped = both
    assert plain.info["classes"] == DIGITS and "label_groups" not in plain.info
    assert grouped.info["classes"] == ["odd", "even"]
    assert grouped.info["label_groups"] == PARITY and list(grouped.info["label_groups"]) == ["odd", "even"]
    assert grouped.info["dataset_classes"] == DIGITS
    assert "grouped into odd, even" in grouped.info["source"]
    assert grouped.warnings == plain.warnings  # split warnings speak of the dataset's own classes


def test_fingerprints_follow_the_labels(both):
    """The feature cache keys a split by its samples and labels: the grouped copy gets its own
    cache, whose targets are the group indices."""
    plain, grouped = both
    t = task()
    assert t.dataset_fingerprint(plain.train) != t.dataset_fingerprint(grouped.train)
    assert t.dataset_fingerprint(grouped.train) == t.dataset_fingerprint(build(data(PARITY)).train)
    assert t.targets(grouped.train).dtype == torch.int64


def test_numbers_in_yaml_are_class_names():
    options = task().data_options(data({"low": [0, 1, 2, 3, 4], 5: [5, 6, 7, 8, 9]}))
    assert options.label_groups == {"low": ["0", "1", "2", "3", "4"], "5": ["5", "6", "7", "8", "9"]}
    assert task().data_options(data()).label_groups is None
    with pytest.raises(ValidationError, match="label_groups"):
        task().data_options(data({"a": "0123"}))


# --------------------------------------------------------------------------- errors
ERRORS = [
    ({**PARITY, "odd": ["1", "3", "5", "7", "9", "eleven"]}, r"'eleven' is not one of the dataset's classes \(known: "),
    ({"odd": ["1", "3", "5", "7"], "even": PARITY["even"]}, r"dataset class '9' is in no group"),
    ({**PARITY, "prime": ["2", "3"]}, r"class '2' is listed more than once \(in groups 'even' and 'prime'\)"),
    ({"all": DIGITS}, r"it has 1 group but needs at least 2"),
    ({}, r"it has 0 groups but needs at least 2"),
    ({**PARITY, "none": []}, r"group 'none' is empty"),
]


@pytest.mark.parametrize(("groups", "reason"), ERRORS)
def test_each_problem_is_a_data_error_naming_label_groups(groups, reason):
    with pytest.raises(DataError, match=r"^data\.label_groups does not fit dataset 'mnist-5k': .*" + reason):
        build(data(groups))


def test_known_classes_are_named_at_most_ten():
    registries = get_plugin_manager().registries
    config = DataConfig(
        dataset="synthetic-shapes",
        args={"classes": 12, "per_class": 4, "size": 16},
        label_groups={"a": ["circle", "nope"], "b": ["square"]},
    )
    with pytest.raises(DataError) as info:
        ImageClassificationTask(registries).build_data(config, preprocessing=PREPROCESSING, base_dir=Path("."), seed=0)
    message = str(info.value)
    assert "'nope' is not one of the dataset's classes" in message and "and 2 more)" in message
    assert "dataset classes " in message and "are in no group" in message


def test_all_problems_are_told_at_once():
    groups = {"odd": ["1", "3", "5", "7", "x"], "even": ["0", "2", "4", "6", "8", "1"], "none": []}
    with pytest.raises(DataError) as info:
        build(data(groups))
    message = str(info.value)
    assert message.count("data.label_groups") == 1
    for part in ("group 'none' is empty", "class '1' is listed more than once", "'x' is not one of", "'9' is in no"):
        assert part in message


def test_validation_reports_what_needs_no_dataset(tiny_config, tmp_path):
    tiny_config["data"]["label_groups"] = {"round": ["circle"], "flat": []}
    with pytest.raises(ConfigError, match=r"data\.label_groups.*group 'flat' is empty"):
        run_in_process(tiny_config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- end to end
def test_a_pipeline_with_label_groups_trains_from_the_cache_and_fine_tunes(tmp_path):
    config = {
        "name": "parity",
        "task": "image-classification",
        "seed": 0,
        "data": {
            "dataset": "mnist-5k",
            "args": {"per_class": 12},
            "val_fraction": 0.2,
            "test_fraction": 0.3,
            "augment": "none",
            "label_groups": {"even": PARITY["even"], "odd": PARITY["odd"]},
        },
        "model": {"backbone": "tiny-cnn", "weights": None, "input_size": 28},
        "strategy": {"name": "feature-extraction", "lr": 0.01},
        "compare": [{"name": "fine-tune"}],
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.01},
    }
    run = tmp_path / "run"
    summary = run_in_process(config, run)
    digits = labels(build(data(), seed=0).test)  # the run's split: split_seed 0
    test_even = sum(d % 2 == 0 for d in digits)
    assert summary["cache"]["feature-extraction"]["splits"]["train"]["rows"] > 0  # trained from the cache
    for arm in ("feature-extraction", "fine-tune"):
        metrics = summary["arms"][arm]["metrics"]
        assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["loss"]), arm
        test = json.loads((run / "arms" / "main" / arm / "seed0" / "result.json").read_text())["test"]
        assert test["details"]["classes"] == ["even", "odd"]
        matrix = np.array(test["details"]["confusion_matrix"])
        assert matrix.shape == (2, 2) and matrix.sum(1).tolist() == [test_even, len(digits) - test_even]
        assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
        assert (run / "plots" / f"confusion_{arm}.png").is_file()
        per_class = (run / "reports" / f"per_class_{arm}.md").read_text()
        assert "| even |" in per_class and "| odd |" in per_class and "| 0 |" not in per_class

    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["info"]["classes"] == ["even", "odd"] and list(meta["info"]["label_groups"]) == ["even", "odd"]
    image = tmp_path / "digit.png"
    build(data()).test.dataset.items[0][0].save(image)
    task_, model, _ = load_run_model(get_plugin_manager().registries, run, arm="fine-tune")
    [result] = task_.predict(model, [PredictInput(str(image))], meta["info"], options={})
    assert sorted(p["label"] for p in result["predictions"]) == ["even", "odd"]
