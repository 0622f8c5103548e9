"""Every user mistake the issue lists: one plain sentence, non-zero exit, no traceback,
and no run directory left behind that could look complete."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file


def assert_clean_failure(result, *fragments: str, code: int | None = None) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    if code is not None:
        assert result.returncode == code, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output


def make_folder(root: Path, classes: dict[str, int], size: int = 32) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (size, size), (i * 20 % 255, 40, 200 if name == "b" else 10)).save(
                root / name / f"{i}.png"
            )
    return root


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "runs"


def run_and_check_nothing_left(cli, pipeline, out: Path, *overrides: str):
    result = cli("run", str(pipeline), *overrides, f"output_dir={out}")
    assert not out.exists() or not any(out.iterdir()), "a failed start must not leave a run directory"
    return result


def test_yaml_syntax_error(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntask: image-classification\ndata: {dataset: [\n")
    assert_clean_failure(cli("validate", str(bad)), "config error:", "invalid YAML at line", code=2)


def test_unknown_key_and_wrong_type(cli, tiny_config, write_pipeline):
    tiny_config["train"]["epocs"] = 3
    tiny_config["train"]["batch_size"] = "big"
    result = cli("validate", str(write_pipeline(tiny_config)))
    assert_clean_failure(result, "config error: train.epocs: unknown key", "config error: train.batch_size:", code=2)


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("model.backbone", "resnet-7", "unknown backbone 'resnet-7'"),
        ("task", "segmentation", "unknown task 'segmentation'"),
        ("data.dataset", "imagenet-22k", "unknown dataset 'imagenet-22k'"),
        ("strategy.name", "distill", "unknown strategy 'distill'"),
    ],
)
def test_unknown_names_list_known_ones(cli, tiny_config, write_pipeline, field, value, expected):
    result = cli("validate", str(write_pipeline(tiny_config)), f"{field}={value}")
    assert_clean_failure(result, expected, "known:", code=2)


def test_valid_pipeline_validates(cli, tiny_config, write_pipeline):
    result = cli("validate", str(write_pipeline(tiny_config)))
    assert result.returncode == 0 and result.stdout.startswith("ok: tiny"), result.stderr


def test_missing_data_path(cli, tiny_config, write_pipeline, out):
    tiny_config["data"] = {"dataset": "image-folder", "args": {"path": "missing"}}
    result = run_and_check_nothing_left(cli, write_pipeline(tiny_config), out)
    assert_clean_failure(result, "data.args.path", "does not exist")


def test_empty_dataset(cli, tiny_config, write_pipeline, tmp_path, out):
    for c in ("a", "b"):
        (tmp_path / "empty" / c).mkdir(parents=True)
    tiny_config["data"] = {"dataset": "image-folder", "args": {"path": "empty"}}
    result = run_and_check_nothing_left(cli, write_pipeline(tiny_config), out)
    assert_clean_failure(result, "no images")


def test_corrupt_image(cli, tiny_config, write_pipeline, tmp_path, out):
    make_folder(tmp_path / "imgs", {"a": 6, "b": 6})
    (tmp_path / "imgs" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    tiny_config["data"] = {"dataset": "image-folder", "args": {"path": "imgs"}}
    result = run_and_check_nothing_left(cli, write_pipeline(tiny_config), out)
    assert_clean_failure(result, "broken.png", "not a readable image")


def test_csv_label_not_in_classes(cli, tiny_config, write_pipeline, tmp_path, out):
    make_folder(tmp_path / "imgs", {"a": 4, "b": 4})
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for i in range(4):
            w.writerow([f"imgs/a/{i}.png", "a"])
        w.writerow(["imgs/b/0.png", "zebra"])
    tiny_config["data"] = {"dataset": "csv", "args": {"path": "labels.csv", "classes": ["a", "b"]}}
    result = run_and_check_nothing_left(cli, write_pipeline(tiny_config), out)
    assert_clean_failure(result, "labels.csv", "zebra", "line 6")


def test_weights_file_missing(cli, tiny_config, write_pipeline, out):
    tiny_config["model"]["weights"] = "nope.safetensors"
    result = run_and_check_nothing_left(cli, write_pipeline(tiny_config), out)
    assert_clean_failure(result, "nope.safetensors", "does not exist")


def test_weights_of_wrong_architecture(cli, tiny_config, write_pipeline, tmp_path, out):
    save_file({"fc.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    tiny_config["model"]["weights"] = "other.safetensors"
    result = run_and_check_nothing_left(cli, write_pipeline(tiny_config), out)
    assert_clean_failure(result, "other.safetensors", "do not fit", "tiny-cnn")


def test_output_directory_not_writable(cli, tiny_config, write_pipeline, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file, not a directory")
    result = cli("run", str(write_pipeline(tiny_config)), "--output", str(blocker / "run"))
    assert_clean_failure(result, "cannot be created", "not a writable directory")
    assert blocker.read_text() == "I am a file, not a directory"


def test_existing_output_directory_is_never_overwritten(cli, tiny_config, write_pipeline, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    result = cli("run", str(write_pipeline(tiny_config)), "--output", str(mine))
    assert_clean_failure(result, "already exists and is not empty")
    assert (mine / "notes.txt").read_text() == "precious" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_debug_shows_traceback(cli, tiny_config, write_pipeline):
    tiny_config["model"]["weights"] = "nope.safetensors"
    result = cli("--debug", "run", str(write_pipeline(tiny_config)))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_predict_on_missing_run(cli, tmp_path):
    assert_clean_failure(cli("predict", str(tmp_path / "no-run"), "x.png"), "does not exist")
