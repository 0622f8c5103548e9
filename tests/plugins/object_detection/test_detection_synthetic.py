"""Object detection: the synthetic scene generator and the box-aware transforms (all in memory, fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tlengine_plugins.object_detection.synthetic import MIN_VISIBILITY, generate_scenes
from tlengine_plugins.object_detection.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_detection_transforms,
    flip_boxes,
)
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

CLASSES = ["circle", "square", "triangle", "star"]
SEED = 0  # torch / scene seed of the tests below (they pass for other seeds too)


@pytest.fixture(scope="module")
def scenes():
    # Heavy occlusion so that some objects get hidden below the visibility threshold.
    return generate_scenes(classes=CLASSES, images=24, size=96, seed=3 + SEED, occlusion=0.8, return_masks=True)


# ----------------------------------------------------------------------- generator
def test_same_seed_gives_byte_identical_scenes_and_scene_i_ignores_images():
    a = generate_scenes(classes=CLASSES, images=4, size=64, seed=7)
    b = generate_scenes(classes=CLASSES, images=6, size=64, seed=7)
    c = generate_scenes(classes=CLASSES, images=4, size=64, seed=8)
    for (ia, ba, la), (ib, bb, lb) in zip(a, b[:4]):
        assert ia.tobytes() == ib.tobytes() and ba == bb and la == lb
    assert any(ia.tobytes() != ic.tobytes() for (ia, _, _), (ic, _, _) in zip(a, c))
    # return_masks draws nothing extra: same pixels.
    d = generate_scenes(classes=CLASSES, images=4, size=64, seed=7, return_masks=True)
    assert all(x[0].tobytes() == y[0].tobytes() and x[1] == y[1] for x, y in zip(a, d))


def test_boxes_inside_image_and_tight_to_the_visible_mask_of_their_class(scenes):
    for image, boxes, labels, painted in scenes:
        assert image.size == (96, 96) and image.mode == "RGB"
        assert len(boxes) == len(labels) == sum(p.emitted for p in painted)
        arr = np.asarray(image, dtype=np.float64)
        for p in painted:
            assert p.shape == CLASSES[p.label]
            if not p.emitted:
                continue
            x1, y1, x2, y2 = boxes[p.box_index]
            assert labels[p.box_index] == p.label
            assert 0 <= x1 < x2 <= 96 and 0 <= y1 < y2 <= 96
            # Tight: every visible pixel inside, and the box touches the mask on all four sides.
            ys, xs = np.nonzero(p.visible)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)
            inside = p.visible[int(y1) : int(y2), int(x1) : int(x2)]
            assert inside.sum() == p.visible.sum()
            assert inside.mean() > 0.15  # a box is not mostly empty background
            # The visible pixels are painted in the object's colour (up to its gradient and noise).
            colour_error = np.abs(arr[p.visible] - np.array(p.colour)).mean(axis=1)
            assert np.median(colour_error) < 45


def test_hidden_objects_are_not_emitted_and_visibility_matches_the_masks(scenes):
    hidden = 0
    for _, boxes, _, painted in scenes:
        covered = np.zeros((96, 96), bool)
        for p in reversed(painted):  # later objects cover earlier ones
            visible = p.mask & ~covered
            assert np.array_equal(visible, p.visible)
            assert p.visibility == pytest.approx(visible.sum() / p.mask.sum())
            assert p.emitted == (p.visibility >= MIN_VISIBILITY)
            hidden += not p.emitted
            covered |= p.mask
        if painted:
            assert painted[-1].visibility == 1.0  # nothing covers the last object
    assert hidden > 0, "occlusion=0.8 should hide at least one object in 24 scenes"


@pytest.mark.parametrize("objects", [(1, 5), (2, 3), (1, 1), (0, 2)])
def test_emitted_counts_within_objects(objects):
    scenes = generate_scenes(classes=CLASSES, images=12, size=64, seed=1, objects=objects, scale=(0.1, 0.3))
    counts = [len(b) for _, b, _ in scenes]
    assert all(objects[0] <= n <= objects[1] for n in counts), counts
    assert all(0 <= label < len(CLASSES) for _, _, labels in scenes for label in labels)


def test_no_objects_means_only_background_and_clutter():
    scenes = generate_scenes(classes=["circle"], images=3, size=64, seed=0, objects=(0, 0), clutter=6)
    for image, boxes, labels in scenes:
        assert boxes == [] and labels == []
        assert np.asarray(image).std() > 1  # the textured background and clutter are drawn


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown shape"):
        generate_scenes(classes=["blob"], images=1)
    with pytest.raises(ValueError, match="objects"):
        generate_scenes(classes=CLASSES, images=1, objects=(3, 1))
    with pytest.raises(ValueError, match="scale"):
        generate_scenes(classes=CLASSES, images=1, scale=(0.0, 0.3))
    with pytest.raises(ValueError, match="occlusion"):
        generate_scenes(classes=CLASSES, images=1, occlusion=1.5)
    with pytest.raises(ValueError, match="background"):
        generate_scenes(classes=CLASSES, images=1, background="fancy")


# ----------------------------------------------------------------------- transforms
def _rectangle_scene(w: int = 120, h: int = 80, box=(30, 20, 70, 50)):
    """A grey image with one solid red rectangle covering exactly ``box`` (xyxy pixel edges)."""
    image = Image.new("RGB", (w, h), (128, 128, 128))
    ImageDraw.Draw(image).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=(255, 0, 0))
    target = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([1])}
    return image, target


def _red_pixels(x: torch.Tensor) -> torch.Tensor:
    """Mask of pixels that are mostly the rectangle's red in a normalised image tensor."""
    rgb = x * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]
    return (rgb[0] - rgb[1] > 0.6) & (rgb[0] - rgb[2] > 0.6)


def _pixel_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("augment", ["light", "strong"])
def test_augmented_boxes_stay_on_their_object(augment):
    image, target = _rectangle_scene()
    transform = build_detection_transforms(augment, train=True, size=None)
    torch.manual_seed(SEED)
    flips = sizes = 0
    for _ in range(30):
        x, out = transform(image, target)
        assert x.dtype == torch.float32 and x.shape[0] == 3
        if augment == "light":  # photometric changes in "strong" would upset the red test
            red = _red_pixels(x)
            assert len(out["boxes"]) == 1 and red.any()
            px = _pixel_box(red)
            for got, want in zip(out["boxes"][0].tolist(), px):
                assert abs(got - want) <= 1.0, (out["boxes"], px)
            if x.shape[-1] == 120:  # not zoomed out: the rectangle is where it was, or mirrored
                assert px in [(30, 20, 70, 50), (50, 20, 90, 50)]
                flips += px[0] == 50
            else:
                sizes += 1
        else:
            boxes = out["boxes"]
            assert out["labels"].tolist() == [1] * len(boxes)
            h, w = x.shape[-2:]
            assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
            assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    if augment == "light":
        assert flips > 0 and sizes > 0  # both the flip and the zoom-out were exercised


def test_strong_geometry_keeps_boxes_on_the_rectangle():
    # Photometric distortion off the table: check the geometry (zoom-out + IoU crop + flip) alone
    # through the same pipeline, by comparing against the red pixels' extent in the output.
    image, target = _rectangle_scene()
    transform = build_detection_transforms("strong", train=True, size=64)
    torch.manual_seed(SEED + 1)
    checked = 0
    for _ in range(40):
        x, out = transform(image, target)
        assert x.shape == (3, 64, 64)
        red = _red_pixels(x)
        if len(out["boxes"]) == 0 or red.sum() < 20:
            continue  # colours distorted too much to find the rectangle, or cropped away
        x1, y1, x2, y2 = out["boxes"][0].tolist()
        ys, xs = torch.nonzero(red, as_tuple=True)
        # Every clearly red pixel lies inside the box (1.5 px of slack for resampling).
        assert xs.min() >= x1 - 1.5 and xs.max() + 1 <= x2 + 1.5
        assert ys.min() >= y1 - 1.5 and ys.max() + 1 <= y2 + 1.5
        checked += 1
    assert checked >= 10


def test_eval_transform_scales_boxes_exactly():
    image, target = _rectangle_scene(w=120, h=80, box=(30, 20, 70, 50))
    x, out = build_detection_transforms("strong", train=False, size=60)(image, target)  # augment ignored
    assert x.shape == (3, 60, 60)
    assert torch.allclose(out["boxes"], torch.tensor([[30 * 0.5, 20 * 0.75, 70 * 0.5, 50 * 0.75]]))
    x, out = build_detection_transforms("none", train=False, size=40, keep_aspect=True)(image, target)
    assert x.shape == (3, 40, 60)
    assert torch.allclose(out["boxes"], torch.tensor([[15.0, 10.0, 35.0, 25.0]]))
    x, out = build_detection_transforms("none", train=False, size=None)(image, target)
    assert x.shape == (3, 80, 120) and torch.equal(out["boxes"], target["boxes"])
    # Normalised with mean / std: the grey background is (128/255 - mean) / std.
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[:, 0, 0], expected, atol=1e-5)


def test_degenerate_boxes_are_dropped_with_their_labels():
    image, _ = _rectangle_scene()
    target = {
        "boxes": torch.tensor([[30.0, 20, 70, 50], [10, 10, 10.5, 40], [5, 5, 5, 5]]),
        "labels": torch.tensor([1, 2, 3]),
        "iscrowd": torch.tensor([0, 1, 1]),
    }
    _, out = build_detection_transforms("none", train=False, size=None)(image, target)
    assert out["boxes"].tolist() == [[30.0, 20, 70, 50]]
    assert out["labels"].tolist() == [1] and out["iscrowd"].tolist() == [0]


def test_scene_without_boxes_goes_through_every_pipeline():
    image = Image.new("RGB", (50, 40), (0, 0, 0))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    for augment in ("none", "light", "strong"):
        x, out = build_detection_transforms(augment, train=True, size=32)(image, empty)
        assert x.shape == (3, 32, 32) and out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)


def test_flip_boxes_matches_torchvision_and_is_an_involution():
    boxes = torch.tensor([[10.0, 5, 30, 25], [0, 0, 64, 10]])
    flipped = flip_boxes(boxes, 64)
    ref = F.horizontal_flip_bounding_boxes(boxes, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(32, 64))
    assert torch.equal(flipped, ref)
    assert torch.equal(flip_boxes(flipped, 64), boxes)
    assert np.array_equal(flip_boxes(boxes.numpy(), 64), ref.numpy())
    assert flip_boxes([(10, 5, 30, 25)], 64) == [(34, 5, 54, 25)]


def test_generated_scenes_feed_the_transforms():
    (image, boxes, labels), *_ = generate_scenes(classes=CLASSES, images=1, size=64, seed=0, objects=(3, 3))
    target = {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)}
    x, out = build_detection_transforms("none", train=False, size=32)(image, target)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(out["boxes"], torch.tensor(boxes) / 2)
    assert out["labels"].tolist() == labels
