"""Image-classification data: the synthetic generator, the three dataset specs,
image verification, transforms and ImageDataset. All data is tiny and made in tmp_path."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from tlengine.data import resolve_under, split_indices
from tlengine.data.synthetic_shapes import SHAPES, generate, render_shape_image
from tlengine.errors import DataError
from tlengine.registry import Registry
from tlengine_plugins.image_classification.datasets import (
    CSV,
    IMAGE_FOLDER,
    SYNTHETIC_SHAPES,
    CsvArgs,
    ImageFolderArgs,
    ImageSamples,
    SyntheticShapesArgs,
    register_datasets,
    verify_images,
)
from tlengine_plugins.image_classification.transforms import ImageDataset, build_transforms

PREPROCESSING = {
    "input_size": 32,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": "bilinear",
}


def write_png(
    path: Path, colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (20, 16), mode: str = "RGB"
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else 128).save(path)
    return path


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


# --------------------------------------------------------------------------- generator
def test_shapes_catalogue():
    assert len(SHAPES) >= 10 and len(set(SHAPES)) == len(SHAPES)
    assert SHAPES[:4] == ("circle", "square", "triangle", "star")


def test_generate_is_deterministic_and_seed_dependent():
    a = generate(["circle", "star"], per_class=3, size=32, seed=7)
    b = generate(["circle", "star"], per_class=3, size=32, seed=7)
    c = generate(["circle", "star"], per_class=3, size=32, seed=8)
    assert [lbl for _, lbl in a] == [0, 0, 0, 1, 1, 1]
    assert all(np.array_equal(pixels(x), pixels(y)) for (x, _), (y, _) in zip(a, b))
    assert not any(np.array_equal(pixels(x), pixels(y)) for (x, _), (y, _) in zip(a, c))
    # Samples within one class differ from each other.
    assert not np.array_equal(pixels(a[0][0]), pixels(a[1][0]))


def test_generate_is_stable_when_per_class_or_shape_list_changes():
    small = generate(["circle", "star"], per_class=2, size=32, seed=0)
    big = generate(["circle", "star"], per_class=5, size=32, seed=0)
    star_only = generate(["star"], per_class=2, size=32, seed=0)
    assert np.array_equal(pixels(small[1][0]), pixels(big[1][0]))  # circle #1
    assert np.array_equal(pixels(small[2][0]), pixels(big[5][0]))  # star #0
    assert np.array_equal(pixels(small[3][0]), pixels(star_only[1][0]))  # star #1, label differs
    assert star_only[1][1] == 0


@pytest.mark.parametrize("size", [16, 64, 200])
def test_render_every_shape(size):
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        im = render_shape_image(shape, size=size, rng=rng)
        assert im.mode == "RGB" and im.size == (size, size)
        assert pixels(im).std() > 5  # not a blank image


def test_generate_rejects_unknown_shapes():
    with pytest.raises(ValueError, match="unknown shape.*blob.*known: circle"):
        generate(["circle", "blob"], per_class=1, size=32, seed=0)
    with pytest.raises(ValueError, match="unknown shape 'blob'"):
        render_shape_image("blob", size=32, rng=np.random.default_rng(0))


def test_generate_is_fast():
    import time

    start = time.perf_counter()
    generate(SHAPES[:4], per_class=50, size=64, seed=0)
    assert time.perf_counter() - start < 3.0  # 200 images; well under a second normally


def test_style_switches_default_to_the_full_difficulty():
    a = generate(["circle", "heart"], per_class=3, size=32, seed=4)
    b = generate(["circle", "heart"], per_class=3, size=32, seed=4, background="textured", distractors=True, noise=8.0)
    assert all(np.array_equal(pixels(x), pixels(y)) for (x, _), (y, _) in zip(a, b))


def test_plain_clean_images_are_one_flat_colour_around_the_shape():
    for im, _ in generate(list(SHAPES), per_class=2, size=48, seed=1, background="plain", distractors=False, noise=0):
        p = pixels(im).reshape(-1, 3)
        corner = p[0]  # a corner is never covered by the shape (it stays inside its circle)
        flat = np.all(p == corner, axis=1).mean()
        assert 0.4 < flat < 0.99, flat  # the background, i.e. everything but the shape


def test_style_switches_change_only_what_they_paint():
    # Every random value is drawn in every style, so the shape (placement and fill colour)
    # is the same: the plain and the textured version agree on the shape's pixels.
    kw = dict(per_class=4, size=48, seed=3, distractors=False, noise=0)
    for (t, _), (p, _) in zip(
        generate(["square", "star"], background="textured", **kw),
        generate(["square", "star"], background="plain", **kw),
    ):
        same = np.all(pixels(t) == pixels(p), axis=2).mean()
        assert 0.02 < same < 0.9, same
    # Noise and distractors change pixels but not the image's layout.
    clean = generate(["ring"], per_class=1, size=48, seed=3, background="plain", distractors=False, noise=0)
    noisy = generate(["ring"], per_class=1, size=48, seed=3, background="plain", distractors=False, noise=8)
    diff = pixels(noisy[0][0]).astype(int) - pixels(clean[0][0]).astype(int)
    assert 0 < np.abs(diff).mean() < 10


def test_style_switches_are_validated():
    with pytest.raises(ValueError, match="background must be one of textured, plain"):
        generate(["circle"], per_class=1, size=32, seed=0, background="wavy")
    with pytest.raises(ValueError, match="noise must be >= 0"):
        render_shape_image("circle", size=32, rng=np.random.default_rng(0), noise=-1)
    with pytest.raises(ValidationError):
        SyntheticShapesArgs(background="wavy")
    with pytest.raises(ValidationError):
        SyntheticShapesArgs(noise=-1)


# --------------------------------------------------------------------------- synthetic-shapes spec
def test_synthetic_shapes_defaults_and_labels(tmp_path):
    samples = SYNTHETIC_SHAPES.build(SyntheticShapesArgs(per_class=5, size=32), tmp_path)
    assert isinstance(samples, ImageSamples)
    assert samples.classes == ["circle", "square", "triangle", "star"]
    assert Counter(samples.labels) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert all(isinstance(im, Image.Image) and im.size == (32, 32) for im, _ in samples.items)
    assert samples.source == "synthetic-shapes (4 classes x 5 images, 32px, seed 0)"
    assert samples.eval_crop_pct == 1.0
    plain = SYNTHETIC_SHAPES.build(
        SyntheticShapesArgs(classes=2, per_class=1, size=32, background="plain", distractors=False, noise=0), tmp_path
    )
    assert plain.source == (
        "synthetic-shapes (2 classes x 1 image, 32px, seed 0, plain background, no distractors, noise 0)"
    )


def test_synthetic_shapes_args():
    assert SyntheticShapesArgs(classes=6).shape_names() == list(SHAPES[:6])
    assert SyntheticShapesArgs(shapes=["ring", "heart"]).shape_names() == ["ring", "heart"]
    with pytest.raises(ValidationError, match="unknown shape.*blob.*known: circle, square"):
        SyntheticShapesArgs(shapes=["circle", "blob"])
    with pytest.raises(ValidationError, match="either shapes .* or classes"):
        SyntheticShapesArgs(shapes=["circle"], classes=2)
    with pytest.raises(ValidationError, match="more than once"):
        SyntheticShapesArgs(shapes=["circle", "circle"])
    with pytest.raises(ValidationError, match="Extra inputs"):
        SyntheticShapesArgs(colour="red")
    with pytest.raises(ValidationError):
        SyntheticShapesArgs(size=8)
    with pytest.raises(ValidationError):
        SyntheticShapesArgs(per_class=0)


def test_split_is_stratified_over_synthetic_labels(tmp_path):
    samples = SYNTHETIC_SHAPES.build(SyntheticShapesArgs(classes=3, per_class=20, size=16), tmp_path)
    train, val, test = split_indices(samples.labels, 0.15, 0.25, seed=0)
    assert sorted(train + val + test) == list(range(60))
    for part, per_class in ((train, 12), (val, 3), (test, 5)):
        assert Counter(samples.labels[i] for i in part) == {0: per_class, 1: per_class, 2: per_class}
    assert split_indices(samples.labels, 0.15, 0.25, seed=0) == (train, val, test)


# --------------------------------------------------------------------------- image-folder
def make_folder(root: Path) -> Path:
    for cls, n in (("cat", 3), ("dog", 2)):
        for i in range(n):
            write_png(root / "pets" / cls / f"{i}.png")
    write_png(root / "pets" / "dog" / "nested" / "x.PNG")  # recursive, any case
    (root / "pets" / "dog" / "notes.txt").write_text("not an image")
    write_png(root / "pets" / ".hidden" / "h.png")  # hidden folders are ignored
    return root / "pets"


def test_image_folder_happy_path(tmp_path):
    make_folder(tmp_path)
    samples = IMAGE_FOLDER.build(ImageFolderArgs(path="pets"), tmp_path)
    assert samples.classes == ["cat", "dog"]
    assert Counter(samples.labels) == {0: 3, 1: 3}
    assert all(isinstance(p, Path) and p.suffix.lower() == ".png" for p, _ in samples.items)
    assert samples.source == f"ImageFolder {tmp_path.resolve() / 'pets'} (2 classes, 6 images)"
    verify_images(samples)


def test_image_folder_class_selection_and_order(tmp_path):
    make_folder(tmp_path)
    samples = IMAGE_FOLDER.build(ImageFolderArgs(path="pets", classes=["dog"]), tmp_path)
    assert samples.classes == ["dog"] and samples.labels == [0, 0, 0]
    samples = IMAGE_FOLDER.build(ImageFolderArgs(path="pets", classes=["dog", "cat"]), tmp_path)
    assert Counter(samples.labels) == {0: 3, 1: 3}
    assert "cat" in str(samples.items[-1][0])


def test_image_folder_extensions_are_normalised():
    assert ImageFolderArgs(path="x", extensions=["PNG", ".Jpg"]).extensions == [".png", ".jpg"]


def test_image_folder_errors(tmp_path):
    build = IMAGE_FOLDER.build
    with pytest.raises(DataError, match=r"image folder .*missing does not exist"):
        build(ImageFolderArgs(path="missing"), tmp_path)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"image folder .*file.png is not a directory"):
        build(ImageFolderArgs(path="file.png"), tmp_path)
    write_png(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match=r"image folder .*flat has no class subfolders.*holds 1 image directly"):
        build(ImageFolderArgs(path="flat"), tmp_path)
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "dog").mkdir(parents=True)
    with pytest.raises(DataError, match=r"image folder .*empty contains no images with extensions \.jpg"):
        build(ImageFolderArgs(path="empty"), tmp_path)
    write_png(tmp_path / "empty" / "cat" / "0.png")
    with pytest.raises(DataError, match=r"class folder .*empty.dog has no images"):
        build(ImageFolderArgs(path="empty"), tmp_path)
    make_folder(tmp_path)
    with pytest.raises(DataError, match=r"class 'bird' listed in classes has no folder in .*pets; found: cat, dog"):
        build(ImageFolderArgs(path="pets", classes=["cat", "bird"]), tmp_path)
    with pytest.raises(DataError, match=r"image folder '\.\./' is outside the data root"):
        build(ImageFolderArgs(path="../"), tmp_path / "pets")


def test_image_folder_symlink_out_of_root_is_refused(tmp_path):
    outside = write_png(tmp_path / "outside.png")
    make_folder(tmp_path / "root")
    os.symlink(outside, tmp_path / "root" / "pets" / "cat" / "link.png")
    with pytest.raises(DataError, match="is outside the data root"):
        IMAGE_FOLDER.build(ImageFolderArgs(path="pets"), tmp_path / "root")


# --------------------------------------------------------------------------- csv
def make_csv(root: Path, rows: list[str], header: str = "path,label", name: str = "labels.csv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text("\n".join([header, *rows]) + "\n" if header or rows else "")
    return path


def test_csv_happy_path(tmp_path):
    for i in range(4):
        write_png(tmp_path / "img" / f"{i}.png")
    make_csv(tmp_path, ["img/0.png,dog", "img/1.png,cat", "img/2.png,dog", "img/3.png,cat"])
    samples = CSV.build(CsvArgs(path="labels.csv"), tmp_path)
    assert samples.classes == ["cat", "dog"]
    assert samples.labels == [1, 0, 1, 0]
    assert samples.items[0][0] == (tmp_path / "img" / "0.png").resolve()
    assert samples.source.endswith("(2 classes, 4 images)")
    verify_images(samples)


def test_csv_options(tmp_path):
    for i in range(3):
        write_png(tmp_path / "images" / f"{i}.png")
    make_csv(tmp_path / "meta", ["0.png,10", "1.png,9", "2.png,10"], header="file,y")
    samples = CSV.build(
        CsvArgs(path="meta/labels.csv", image_root="images", path_column="file", label_column="y"), tmp_path
    )
    assert samples.classes == ["9", "10"]  # integer labels sort numerically
    assert samples.labels == [1, 0, 1]
    samples = CSV.build(
        CsvArgs(
            path="meta/labels.csv", image_root="images", path_column="file", label_column="y", classes=["10", "9", "8"]
        ),
        tmp_path,
    )
    assert samples.classes == ["10", "9", "8"] and samples.labels == [0, 1, 0]


def test_csv_label_not_in_classes(tmp_path):
    write_png(tmp_path / "a.png")
    make_csv(tmp_path, ["a.png,cat", "a.png,bird"])
    with pytest.raises(DataError, match=r"labels.csv line 3: label 'bird' is not one of the classes \(cat, dog\)"):
        CSV.build(CsvArgs(path="labels.csv", classes=["cat", "dog"]), tmp_path)


def test_csv_missing_image(tmp_path):
    write_png(tmp_path / "a.png")
    make_csv(tmp_path, ["a.png,cat", "", "b.png,dog"])  # blank lines are skipped but counted
    with pytest.raises(DataError, match=r"labels.csv line 4: image file .*b.png does not exist"):
        CSV.build(CsvArgs(path="labels.csv"), tmp_path)


def test_csv_escaping_the_root(tmp_path):
    root = tmp_path / "root"
    write_png(tmp_path / "outside.png")
    write_png(root / "a.png")
    make_csv(root, ["a.png,cat", "../outside.png,dog"])
    with pytest.raises(DataError, match=r"labels.csv line 3: image path '\.\./outside.png' is outside the data root"):
        CSV.build(CsvArgs(path="labels.csv"), root)
    make_csv(root, [f"{tmp_path / 'outside.png'},dog"])
    with pytest.raises(DataError, match=r"labels.csv line 2: image path '/.*outside.png' is outside the data root"):
        CSV.build(CsvArgs(path="labels.csv"), root)
    # An absolute path inside the root is fine.
    make_csv(root, [f"{root / 'a.png'},cat"])
    assert CSV.build(CsvArgs(path="labels.csv"), root).items[0][0] == (root / "a.png").resolve()
    with pytest.raises(DataError, match=r"csv file '\.\./labels.csv' is outside the data root"):
        CSV.build(CsvArgs(path="../labels.csv"), root)
    with pytest.raises(DataError, match=r"image_root '\.\.' is outside the data root"):
        CSV.build(CsvArgs(path="labels.csv", image_root=".."), root)


def test_csv_structure_errors(tmp_path):
    write_png(tmp_path / "a.png")
    make_csv(tmp_path, ["a.png,cat"], header="file,label")
    with pytest.raises(DataError, match=r"labels.csv has no column 'path' \(its header has: file, label\)"):
        CSV.build(CsvArgs(path="labels.csv"), tmp_path)
    make_csv(tmp_path, ["a.png,cat"])
    with pytest.raises(DataError, match=r"has no column 'y'.*set label_column"):
        CSV.build(CsvArgs(path="labels.csv", label_column="y"), tmp_path)
    make_csv(tmp_path, [])
    with pytest.raises(DataError, match=r"labels.csv has no rows"):
        CSV.build(CsvArgs(path="labels.csv"), tmp_path)
    make_csv(tmp_path, [], header="")
    with pytest.raises(DataError, match=r"labels.csv has no rows"):
        CSV.build(CsvArgs(path="labels.csv"), tmp_path)
    make_csv(tmp_path, ["a.png,"])
    with pytest.raises(DataError, match=r"labels.csv line 2: column 'label' is empty"):
        CSV.build(CsvArgs(path="labels.csv"), tmp_path)
    with pytest.raises(DataError, match=r"csv file .*nope.csv does not exist"):
        CSV.build(CsvArgs(path="nope.csv"), tmp_path)


# --------------------------------------------------------------------------- verify + paths
def test_verify_images_catches_corrupt_files(tmp_path):
    good = write_png(tmp_path / "cat" / "good.png")
    bad = tmp_path / "cat" / "bad.png"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    samples = ImageSamples(items=[(good, 0), (bad, 0)], classes=["cat"], source="test")
    verify_images(samples, limit=1)  # only the good one
    with pytest.raises(DataError, match=r"image .*bad.png is not a readable image \(.+\)"):
        verify_images(samples)


def test_verify_images_catches_truncated_png(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-200])
    samples = ImageSamples(items=[(path, 0)], classes=["x"], source="test")
    with pytest.raises(DataError, match=r"t.png is not a readable image"):
        verify_images(samples)


def test_verify_images_skips_in_memory_images(tmp_path, monkeypatch):
    opened: list[str] = []
    real_open = Image.open

    def spy_open(fp, *args, **kwargs):
        opened.append(str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy_open)
    memory = [Image.new("RGB", (4, 4), (9, 8, 7)), Image.new("L", (3, 5), 42)]
    verify_images(ImageSamples(items=[(im, 0) for im in memory], classes=["x"], source="test"))
    assert opened == []  # nothing to read: no file was opened...
    assert memory[0].getpixel((1, 1)) == (9, 8, 7) and memory[1].getpixel((2, 4)) == 42  # ...nor verify()'d
    # Mixed with files, only the files are checked, and `limit` counts files only: the two
    # in-memory images do not use up a limit of 1, which reaches the good file.
    good = write_png(tmp_path / "good.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    mixed = ImageSamples(items=[(memory[0], 0), (memory[1], 0), (good, 0), (broken, 0)], classes=["x"], source="t")
    verify_images(mixed, limit=1)
    assert set(opened) == {str(good)}
    with pytest.raises(DataError, match=r"broken.png is not a readable image"):
        verify_images(mixed)
    assert set(opened) == {str(good), str(broken)}


def test_resolve_under_refuses_escape(tmp_path):
    assert resolve_under(tmp_path, "a/b.png") == tmp_path.resolve() / "a" / "b.png"
    with pytest.raises(DataError, match=r"data path '\.\./x' is outside the data root"):
        resolve_under(tmp_path, "../x")
    with pytest.raises(DataError, match="is outside the data root"):
        resolve_under(tmp_path / "sub", tmp_path / "x.png")


# --------------------------------------------------------------------------- transforms + dataset
@pytest.mark.parametrize("augment", ["none", "light", "strong"])
@pytest.mark.parametrize("train", [True, False])
def test_transform_shapes(augment, train):
    t = build_transforms(PREPROCESSING, augment=augment, train=train)
    for image in (
        Image.new("RGB", (50, 40), (10, 200, 30)),
        Image.new("L", (17, 23), 90),
        Image.new("RGBA", (40, 40)),
        Image.new("P", (30, 30)),
        Image.new("I;16", (20, 20)),
    ):
        x = t(image)
        assert type(x) is torch.Tensor and x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert torch.isfinite(x).all()


def test_eval_transform_is_deterministic_and_normalised():
    t = build_transforms(dict(PREPROCESSING, crop_pct=1.0), augment="strong", train=False)
    image = Image.new("RGB", (64, 64), (124, 116, 104))  # ~ the ImageNet mean colour
    x = t(image)
    assert torch.equal(x, t(image))
    assert x.abs().max() < 0.05


def test_train_augmentation_follows_torch_seed():
    image = generate(["star"], per_class=1, size=48, seed=0)[0][0]
    t = build_transforms(PREPROCESSING, augment="strong", train=True)
    torch.manual_seed(3)
    a = t(image)
    torch.manual_seed(3)
    assert torch.equal(a, t(image))
    assert not torch.equal(a, t(image))


def test_eval_crop_pct():
    # A 64x64 image with a red border: crop_pct=1.0 keeps it, the default crop cuts it off.
    arr = np.zeros((64, 64, 3), dtype=np.uint8)
    arr[:2] = arr[-2:] = arr[:, :2] = arr[:, -2:] = (255, 0, 0)
    image = Image.fromarray(arr)
    plain = dict(PREPROCESSING, mean=[0, 0, 0], std=[1, 1, 1], input_size=64)
    full = build_transforms(dict(plain, crop_pct=1.0), augment="none", train=False)(image)
    cropped = build_transforms(plain, augment="none", train=False)(image)
    assert full[0, 0, 32] > 0.9 and cropped[0, 0, 32] < 0.1


def test_transform_rejects_bad_settings():
    with pytest.raises(ValueError, match="augment must be one of"):
        build_transforms(PREPROCESSING, augment="heavy", train=True)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        build_transforms(dict(PREPROCESSING, interpolation="cubic"), augment="none", train=False)


def test_image_dataset_reads_files_and_memory(tmp_path):
    make_folder(tmp_path)
    samples = IMAGE_FOLDER.build(ImageFolderArgs(path="pets"), tmp_path)
    memory = SYNTHETIC_SHAPES.build(SyntheticShapesArgs(per_class=2, size=16), tmp_path)
    ds = ImageDataset(samples.items + memory.items, build_transforms(PREPROCESSING, augment="light", train=True))
    assert len(ds) == 14 and ds.labels[:6] == samples.labels
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    x, y = ds[13]
    assert x.shape == (3, 32, 32) and y == 3
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 3, 32, 32) and batch[1].tolist() == [0, 0, 0, 1]


def test_image_dataset_names_undecodable_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    ds = ImageDataset([(bad, 0)], build_transforms(PREPROCESSING, augment="none", train=False))
    with pytest.raises(DataError, match=r"image .*bad.png is not a readable image"):
        ds[0]


# --------------------------------------------------------------------------- registration
def test_register_datasets():
    registry: Registry = Registry("dataset")
    register_datasets(registry)
    assert registry.names() == ["csv", "image-folder", "mnist-5k", "synthetic-shapes", "uci-digits"]
    for name in registry.names():
        spec = registry.get(name)
        assert spec.name == name and spec.task == "image-classification"
        assert spec.args.model_config.get("extra") == "forbid"
        assert registry.entry(name).description
        for field in spec.args.model_fields.values():
            assert field.description


@pytest.mark.parametrize("crop_pct", [1.0, 0.875])
def test_cached_view_0_is_the_eval_transform(crop_pct):
    """The feature cache's view 0 (every split, train included) must be pixel for pixel the
    eval transform, which the naive loop also trains on with augment: none; otherwise cached
    and naive training see different crops (any aspect ratio, odd margins included)."""
    from tlengine_plugins.image_classification import extraction

    rng = np.random.default_rng(0)
    sizes = [(48, 48), (40, 53), (61, 37), (33, 34), (29, 90)]
    items = [(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)), 0) for h, w in sizes]
    pre = {
        "input_size": 28,
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3],
        "crop_pct": crop_pct,
        "interpolation": "bilinear",
    }
    dataset = ImageDataset(items, build_transforms(pre, augment="none", train=False))
    want = torch.stack([dataset[i][0] for i in range(len(dataset))])
    for train in (False, True):
        got = torch.cat(
            [
                batch
                for batch, _ in extraction.extraction_batches(
                    dataset,
                    indices=torch.arange(len(sizes)),
                    view=0,
                    seed=0,
                    batch_size=2,
                    preprocessing=pre,
                    kernels="torch",
                    train=train,
                )
            ]
        )
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=lambda m: f"train={train}: {m}")


def test_training_views_share_one_decoded_base_per_sample(tmp_path):
    """Views >= 1 of a sample are cut from the same base size: its file is decoded and
    resized once for all of them; a rewritten file is decoded again."""
    from tlengine_plugins.image_classification import extraction

    rng = np.random.default_rng(1)
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    items = [(str(p), 0) for p in paths]
    pre = {"input_size": 24, "mean": [0.5] * 3, "std": [0.25] * 3, "crop_pct": 0.875, "interpolation": "bilinear"}
    dataset = ImageDataset(items, build_transforms(pre, augment="none", train=False))

    def views(vs, **kw):
        return [
            torch.cat(
                [
                    b
                    for b, _ in extraction.extraction_batches(
                        dataset,
                        indices=torch.arange(4),
                        view=v,
                        seed=0,
                        batch_size=3,
                        preprocessing=pre,
                        kernels="torch",
                        train=True,
                        **kw,
                    )
                ]
            )
            for v in vs
        ]

    before = extraction.DECODED.decodes
    first = views([1, 2, 3])
    assert extraction.DECODED.decodes - before == 4  # one decode per sample, not per view
    assert not torch.equal(first[0], first[1])  # the views still differ (crop / mirror)
    again = views([1, 2, 3])
    assert extraction.DECODED.decodes - before == 4
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)
    Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(paths[0])
    os.utime(paths[0], ns=(10**18, 10**18))
    views([1])
    assert extraction.DECODED.decodes - before == 5  # only the rewritten file


def test_decoded_bases_store_evicts_least_recently_used():
    from tlengine_plugins.image_classification.extraction import DecodedBases

    store = DecodedBases(limit_bytes=20)
    a, b, c = object(), object(), object()
    store.put(("a",), a, torch.zeros(8, dtype=torch.uint8))
    store.put(("b",), b, torch.zeros(8, dtype=torch.uint8))
    assert store.get(("a",), a) is not None  # a is now the most recent
    store.put(("c",), c, torch.zeros(8, dtype=torch.uint8))  # 24 bytes > 20: b goes
    assert store.get(("b",), b) is None and store.get(("a",), a) is not None
    assert store.get(("a",), object()) is None  # another item under a recycled key
    assert store.bytes == 16
