"""Train/val/test splits: predefined image-folder splits and split_samples' per-class checks.

Every dataset here is a few tiny PNGs written to tmp_path (or file names that are never
opened: split_samples only reads labels).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from tlengine.data import split_indices
from tlengine.errors import DataError
from tlengine_plugins.image_classification.datasets import IMAGE_FOLDER, ImageFolderArgs, ImageSamples
from tlengine_plugins.image_classification.splits import SplitResult, split_samples


def make_folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """``{"train": {"cat": 3, ...}, ...}`` -> root/<split>/<class>/<i>.png (a split "" is the top)."""
    for split, classes in layout.items():
        for cls, n in classes.items():
            folder = root / split / cls if split else root / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (4, 4), (10 * i, 0, 0)).save(folder / f"{i}.png")
    return root


def build(tmp_path: Path, layout: dict[str, dict[str, int]], **args) -> ImageSamples:
    make_folder(tmp_path / "data", layout)
    return IMAGE_FOLDER.build(ImageFolderArgs(path="data", **args), tmp_path)


def samples_of(counts: dict[str, int]) -> ImageSamples:
    """In-memory samples (paths never opened) with ``counts[class]`` items per class."""
    classes = list(counts)
    items = [(Path(f"{c}/{i}.png"), label) for label, c in enumerate(classes) for i in range(counts[c])]
    return ImageSamples(items=items, classes=classes, source="test set")


def split_of(samples: ImageSamples, result: SplitResult, name: str) -> list[tuple[str, str]]:
    """(class, file name) of the items in one split, to compare with the folders."""
    return sorted(
        (samples.classes[label], Path(item).name) for item, label in (samples.items[i] for i in getattr(result, name))
    )


def one_sentence(text: str) -> bool:
    return "\n" not in text and text.endswith(".") and text.count(". ") == 0


# ----------------------------------------------------------------------- image-folder layout
def test_predefined_train_val_test_folders_are_kept(tmp_path):
    samples = build(
        tmp_path, {"train": {"cat": 4, "dog": 3}, "val": {"cat": 1, "dog": 1}, "test": {"cat": 2, "dog": 2}}
    )
    assert samples.classes == ["cat", "dog"]
    assert set(samples.splits) == {"train", "val", "test"} and len(samples) == 13
    assert "train/val/test folders" in samples.source and "7 train, 2 val, 4 test" in samples.source
    for split in ("train", "val", "test"):
        assert all(Path(samples.items[i][0]).parts[-3] == split for i in samples.splits[split])
        assert all(
            Path(samples.items[i][0]).parent.name == samples.classes[samples.items[i][1]] for i in samples.splits[split]
        )

    result = split_samples(samples, val_fraction=0.5, test_fraction=0.5, seed=0)  # fractions unused
    assert (result.train, result.val, result.test) == (
        samples.splits["train"],
        samples.splits["val"],
        samples.splits["test"],
    )
    assert result.warnings == []


def test_without_val_folder_validation_comes_out_of_train_stratified(tmp_path):
    samples = build(tmp_path, {"train": {"a": 10, "b": 10, "c": 5}, "test": {"a": 2, "b": 2, "c": 2}})
    assert set(samples.splits) == {"train", "test"}
    result = split_samples(samples, val_fraction=0.2, test_fraction=0.9, seed=3)
    assert result.test == samples.splits["test"]
    assert sorted(result.train + result.val) == samples.splits["train"]
    assert not set(result.train) & set(result.val)
    val_classes = [samples.items[i][1] for i in result.val]
    assert sorted(val_classes) == [0, 0, 1, 1, 2]  # 20% of 10, 10 and (at least one of) 5
    # the same as split_indices on the train folder alone: deterministic for a seed
    sub, subval, _ = split_indices([samples.items[i][1] for i in samples.splits["train"]], 0.2, 0.0, 3)
    assert result.val == sorted(samples.splits["train"][i] for i in subval)
    assert split_samples(samples, val_fraction=0.2, test_fraction=0.9, seed=3) == result
    assert split_samples(samples, val_fraction=0.2, test_fraction=0.9, seed=4).val != result.val


def test_classes_are_the_union_and_a_test_only_class_is_an_error(tmp_path):
    samples = build(tmp_path / "ok", {"train": {"b": 2, "a": 2, "c": 1}, "test": {"a": 1, "b": 1}})
    assert samples.classes == ["a", "b", "c"]  # sorted, as for a flat folder
    with pytest.raises(DataError, match=r"class 'c' has a folder in .*test but none in .*train"):
        build(tmp_path / "bad", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1, "c": 1}})
    with pytest.raises(DataError, match=r"class 'c' has a folder in .*val but none in .*train"):
        build(tmp_path / "bad2", {"train": {"a": 2, "b": 2}, "val": {"c": 1}, "test": {"a": 1, "b": 1}})


def test_class_missing_from_test_folder_is_an_error_naming_it(tmp_path):
    samples = build(tmp_path, {"train": {"a": 3, "b": 2, "c": 4}, "test": {"a": 1, "c": 1}})
    with pytest.raises(DataError) as err:
        split_samples(samples, val_fraction=0.2, test_fraction=0.25, seed=0)
    message = str(err.value)
    assert "class 'b' (2 images in train) has no images in the predefined test split" in message
    assert "at least 1 test image" in message and "\n" not in message


def test_class_missing_from_val_folder_is_a_warning(tmp_path):
    samples = build(tmp_path, {"train": {"a": 3, "b": 2}, "val": {"a": 1}, "test": {"a": 1, "b": 1}})
    result = split_samples(samples, val_fraction=0.2, test_fraction=0.25, seed=0)
    assert len(result.warnings) == 1 and one_sentence(result.warnings[0])
    assert "class 'b' (2 images in train) has no images in the predefined val split" in result.warnings[0]


def test_small_class_gets_no_val_out_of_the_train_folder_warning(tmp_path):
    samples = build(tmp_path, {"train": {"a": 10, "b": 1}, "test": {"a": 1, "b": 1}})
    result = split_samples(samples, val_fraction=0.2, test_fraction=0.25, seed=0)
    assert [samples.items[i][1] for i in result.val] == [0, 0]
    assert len(result.warnings) == 1 and one_sentence(result.warnings[0])
    assert "class 'b' (1 image in train) has no validation images" in result.warnings[0]
    assert "at least 3 images in train" in result.warnings[0]


def test_split_layout_errors(tmp_path):
    with pytest.raises(DataError, match=r"has train/, val/ but no test/ subfolder"):
        build(tmp_path / "a", {"train": {"x": 1}, "val": {"x": 1}})
    with pytest.raises(DataError, match=r"has train/ but no test/ subfolder"):
        build(tmp_path / "b", {"train": {"x": 1}})
    (tmp_path / "c" / "data" / "train").mkdir(parents=True)
    make_folder(tmp_path / "c" / "data", {"test": {"x": 1}})
    with pytest.raises(DataError, match=r"split folder .*train has no class subfolders"):
        IMAGE_FOLDER.build(ImageFolderArgs(path="data"), tmp_path / "c")
    (tmp_path / "d" / "data" / "test" / "x").mkdir(parents=True)
    make_folder(tmp_path / "d" / "data", {"train": {"x": 1}})
    with pytest.raises(DataError, match=r"class folder .*test/x has no images"):
        IMAGE_FOLDER.build(ImageFolderArgs(path="data"), tmp_path / "d")


def test_class_selection_in_split_layout(tmp_path):
    samples = build(tmp_path, {"train": {"a": 2, "b": 2, "c": 2}, "test": {"a": 1, "b": 1, "c": 1}}, classes=["c", "a"])
    assert samples.classes == ["c", "a"]
    assert sorted(samples.items[i][1] for i in samples.splits["test"]) == [0, 1]
    assert len(samples.splits["train"]) == 4
    with pytest.raises(DataError, match=r"class 'z' listed in classes has no folder in .*train"):
        IMAGE_FOLDER.build(ImageFolderArgs(path="data", classes=["a", "z"]), tmp_path)


def test_flat_folder_and_a_class_named_train_are_not_a_split_layout(tmp_path):
    flat = build(tmp_path / "flat", {"": {"cat": 2, "dog": 2}})
    assert flat.splits is None
    odd = build(tmp_path / "odd", {"": {"train": 2, "dog": 2}})  # a class folder called train
    assert odd.splits is None and odd.classes == ["dog", "train"]


def test_split_images_are_read_by_the_task_pipeline(tmp_path):
    """The predefined items are real files that verify and open."""
    from tlengine_plugins.image_classification.datasets import verify_images

    samples = build(tmp_path, {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}})
    verify_images(samples)


# ----------------------------------------------------------------------- random split
def test_random_split_is_split_indices_unchanged():
    samples = samples_of({"a": 20, "b": 13, "c": 7})
    result = split_samples(samples, val_fraction=0.15, test_fraction=0.25, seed=5)
    assert (result.train, result.val, result.test) == split_indices(samples.labels, 0.15, 0.25, 5)
    assert result.warnings == []


def test_class_too_small_for_a_test_image_is_an_error_naming_it():
    samples = samples_of({"a": 20, "tiny": 2, "b": 10})
    with pytest.raises(DataError) as err:  # 2 images at test_fraction 0.25: round(0.5) = 0 test
        split_samples(samples, val_fraction=0.15, test_fraction=0.25, seed=0)
    message = str(err.value)
    assert message.startswith("test set: class 'tiny' (2 images) has too few images")
    assert "each class needs at least 3 images" in message and "\n" not in message


def test_several_small_classes_are_named_together():
    counts = {"big": 20} | {f"c{i:02d}": 1 for i in range(12)}
    with pytest.raises(DataError) as err:
        split_samples(samples_of(counts), val_fraction=0.15, test_fraction=0.25, seed=0)
    message = str(err.value)
    assert "classes 'c00' (1 image), 'c01' (1 image)" in message and "and 2 more have" in message
    assert "'big'" not in message


def test_class_without_val_images_is_a_warning():
    samples = samples_of({"a": 20, "pair": 2})
    result = split_samples(samples, val_fraction=0.15, test_fraction=0.3, seed=0)  # pair: 1 test, 1 train
    assert len(result.warnings) == 1 and one_sentence(result.warnings[0])
    assert "class 'pair' (2 images) has no validation images" in result.warnings[0]
    assert "at least 3 images" in result.warnings[0]
    # no validation asked for: nothing to warn about
    assert split_samples(samples, val_fraction=0.0, test_fraction=0.3, seed=0).warnings == []


def test_zero_test_fraction_is_an_error():
    with pytest.raises(DataError, match="test_fraction is 0"):
        split_samples(samples_of({"a": 10, "b": 10}), val_fraction=0.1, test_fraction=0.0, seed=0)


def test_listed_class_without_any_image_is_an_error():
    samples = samples_of({"a": 10, "b": 10})
    samples.classes.append("ghost")  # e.g. a csv dataset's classes list names a label no row has
    with pytest.raises(DataError, match=r"class 'ghost' \(0 images\)"):
        split_samples(samples, val_fraction=0.1, test_fraction=0.2, seed=0)
