"""The object-detection task in-process: cached backbone maps vs the live backbone (plain and
mirrored views with their mirrored boxes), resized targets vs the eval transform, the data
split and its warnings/errors, and evaluate() against an independent pycocotools run."""

from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tlengine.config import CacheConfig, DataConfig, ModelConfig, TrainConfig
from tlengine.errors import DataError
from tlengine.plugins import get_plugin_manager
from tlengine.task import PredictInput
from tlengine.training.feature_cache import CachedFeatures
from tlengine_plugins.object_detection import batches
from tlengine_plugins.object_detection.datasets import DetectionItem
from tlengine_plugins.object_detection.task import ObjectDetectionTask
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

CLASSES = ["circle", "square", "triangle"]
SIZE = 256  # model.input_size


@pytest.fixture(scope="module")
def task() -> ObjectDetectionTask:
    return ObjectDetectionTask(get_plugin_manager().registries, TrainConfig())


def model_config(**options) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "backbone": "timm/tf_efficientnet_lite0",
            "weights": None,
            "detector": "fcos",
            "input_size": SIZE,
            "fpn_channels": 32,
            **options,
        }
    )


def synthetic(images: int = 8, **data) -> DataConfig:
    return DataConfig.model_validate(
        {
            "dataset": "synthetic-scenes",
            "args": {"classes": CLASSES, "images": images, "size": 128, "seed": 3},
            "val_fraction": 0.2,
            "test_fraction": 0.3,
            **data,
        }
    )


def build(task, tmp_path: Path, data: DataConfig | None = None, seed: int = 0, **options):
    mc = model_config(**options)
    pre = task.preprocessing(mc, init={"backbone": False}, base_dir=tmp_path)
    built = task.build_data(data or synthetic(), preprocessing=pre, base_dir=tmp_path, seed=seed)
    model = task.build_model(mc, built.info, init={"backbone": False}, base_dir=tmp_path)
    return model, built


def stacked(dataset, indices=None):
    indices = range(len(dataset)) if indices is None else indices
    return torch.stack([dataset[i][0] for i in indices])


# ------------------------------------------------------------------ feature cache
def test_cached_maps_and_detections_equal_the_live_backbone_and_odd_views_are_mirrored(task, tmp_path) -> None:
    torch.manual_seed(0)
    # score_threshold 0: the random head's detections are all kept, so there is something to compare
    model, data = build(task, tmp_path, score_threshold=0.0, detections_per_image=20)
    model.frozen_parts = {"backbone"}
    model.eval()
    cached = CachedFeatures(
        task, model, data, CacheConfig(views=2, kernels="torch"), device=torch.device("cpu"), seed=0, batch_size=3
    )
    cached.prepare()
    try:
        assert cached.stats()["precision"] == "fp32" and cached.stats()["layout"]["layout"] == "maps"
        assert set(cached.map_shapes) == {"c3", "c4", "c5"}
        assert cached.map_shapes["c3"][1:] == (SIZE // 8, SIZE // 8)
        assert cached.map_shapes["c5"][1:] == (SIZE // 32, SIZE // 32)
        for split in ("val", "test"):
            dataset = getattr(data, split)
            assert len(dataset) > 0
            maps, targets = next(iter(cached.eval_loader(split, batch_size=len(dataset))))
            with torch.no_grad():
                live = model.forward_features(stacked(dataset))
                assert list(maps) == list(live)
                for name in live:
                    torch.testing.assert_close(maps[name].float(), live[name], atol=1e-4, rtol=1e-4)
                from_cache = model.forward_head(maps)
                from_live = model.forward_head(live)
            assert len(from_cache) == len(dataset)
            assert sum(len(d["boxes"]) for d in from_live) > 0
            for a, b in zip(from_cache, from_live):
                for key in ("boxes", "scores", "labels"):
                    torch.testing.assert_close(a[key], b[key], atol=1e-3, rtol=1e-3)
                assert int(b["labels"].min()) >= 0 and int(b["labels"].max()) < len(CLASSES)
            # the cached targets are the plain view's, in input pixels, with the original annotation
            for i, t in enumerate(targets):
                _, want = dataset[i]
                torch.testing.assert_close(t["boxes"], want["boxes"], atol=1e-3, rtol=0)
                assert torch.equal(t["labels"], want["labels"])
                assert torch.equal(t["orig_boxes"], want["orig_boxes"])

        # train split: two views per sample; odd rows are the mirrored image with mirrored boxes
        items, idx = data.train.dataset.items, list(data.train.indices)
        eval_view = batches.DetectionDataset(items, size=SIZE, augment="none", train=False)
        images = stacked(eval_view, idx)
        with torch.no_grad():
            live = model.forward_features(images)
            mirrored = model.forward_features(F.horizontal_flip(images))
        plain = torch.arange(len(idx)) * 2
        even, odd = cached.inputs("train", plain), cached.inputs("train", plain + 1)
        for name in live:
            torch.testing.assert_close(even[name].float(), live[name], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(odd[name].float(), mirrored[name], atol=1e-4, rtol=1e-4)
            assert not torch.allclose(odd[name], even[name], atol=1e-3)
        # what the training loader serves: each row's maps with the targets of its view
        seen = set()
        for epoch in range(4):
            served = cached.train_loader(epoch, batch_size=4, seed=epoch).dataset
            assert len(served.rows) == len(idx)
            for k, row in enumerate(served.rows.tolist()):
                inputs, (target,) = served.__getitems__([k])
                sample, view = divmod(row, 2)
                seen.add(view)
                boxes = batches.resized_target(items[idx[sample]], idx[sample], SIZE)["boxes"]
                if view:
                    flipped = F.horizontal_flip(
                        tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(SIZE, SIZE))
                    )
                    boxes = flipped.as_subclass(torch.Tensor)
                torch.testing.assert_close(target["boxes"], boxes)
                source = mirrored if view else live
                torch.testing.assert_close(inputs["c5"][0].float(), source["c5"][sample], atol=1e-4, rtol=1e-4)
        assert seen == {0, 1}  # both views were served
    finally:
        cached.close()


def test_view_targets_mirror_boxes_like_flipping_the_image(task) -> None:
    """Odd views get the boxes torchvision's own horizontal flip gives; even views are unchanged."""
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(5, 2, generator=g) * 200
    wh = torch.rand(5, 2, generator=g) * 50 + 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    target = {"boxes": boxes, "labels": torch.arange(5), "input_size": SIZE}
    out = task.view_targets([target, target, target], torch.tensor([0, 1, 3]))
    assert torch.equal(out[0]["boxes"], boxes)
    want = F.horizontal_flip(tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(SIZE, SIZE)))
    for t in out[1:]:
        torch.testing.assert_close(t["boxes"], want.as_subclass(torch.Tensor))
        assert torch.equal(t["labels"], target["labels"])
    direct = batches.flip_targets([target, target, target], torch.tensor([0, 1, 3]))
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(out, direct))
    # mirroring twice is the identity; the input is not modified
    twice = batches.flip_targets(batches.flip_targets([target], torch.tensor([1])), torch.tensor([1]))
    torch.testing.assert_close(twice[0]["boxes"], boxes)


# ------------------------------------------------------------------ targets and data
def _image(w: int, h: int, boxes) -> Image.Image:
    image = Image.new("RGB", (w, h), (40, 90, 30))
    draw = ImageDraw.Draw(image)
    for x1, y1, x2, y2 in boxes:
        draw.rectangle([x1, y1, x2, y2], fill=(230, 200, 10))
    return image


def _items() -> list[DetectionItem]:
    """Non-square images (so x and y scale differently), one box partly outside the image
    (clamped) and one thinner than a pixel after the resize (dropped)."""
    specs = [
        (200, 120, [(10.0, 20.0, 60.0, 90.0), (150.5, 5.25, 199.0, 119.0), (30.0, 30.0, 30.5, 80.0)], [0, 1, 2]),
        (96, 160, [(5.0, 7.0, 50.0, 40.0), (60.0, 100.0, 110.0, 170.0)], [2, 0]),
        (300, 300, [(100.0, 100.0, 180.0, 260.0)], [1]),
    ]
    return [DetectionItem(image=_image(w, h, b), boxes=b, labels=lab, width=w, height=h) for w, h, b, lab in specs]


def test_resized_target_equals_the_eval_transform_and_to_original_maps_back() -> None:
    items = _items()
    dataset = batches.DetectionDataset(items, size=SIZE, augment="none", train=False)
    dropped = 0
    for i, item in enumerate(items):
        image, target = dataset[i]
        assert tuple(image.shape) == (3, SIZE, SIZE) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        want = batches.resized_target(item, i, SIZE)
        torch.testing.assert_close(want["boxes"], target["boxes"], atol=1e-3, rtol=0)
        assert torch.equal(want["labels"], target["labels"])
        for key in ("orig_size", "orig_boxes", "orig_labels"):
            assert torch.equal(want[key], target[key]), key
        assert want["orig_size"].tolist() == [item.height, item.width] and want["image_id"] == i
        dropped += len(item.boxes) - len(want["boxes"])
        # back to the image's own pixels: the annotation, clamped to the image
        back = batches.to_original({"boxes": want["boxes"]}, want["orig_size"], SIZE)["boxes"]
        kept = [b for b in item.boxes if (b[2] - b[0]) * SIZE / item.width >= 1]
        clamped = torch.tensor(kept).clamp(min=0).minimum(torch.tensor([item.width, item.height] * 2))
        torch.testing.assert_close(back, clamped.float(), atol=1e-3, rtol=0)
    assert dropped == 1  # the 0.5 px wide box


def test_build_data_splits_by_the_fractions_and_reports_its_info(task, tmp_path) -> None:
    n = 24
    data = synthetic(n, val_fraction=0.15, test_fraction=0.3)
    mc = model_config()
    pre = task.preprocessing(mc, init={"backbone": False}, base_dir=tmp_path)
    built = task.build_data(data, preprocessing=pre, base_dir=tmp_path, seed=0)
    n_test, n_val = round(n * 0.3), round(n * 0.15)
    assert (len(built.train), len(built.val), len(built.test)) == (n - n_test - n_val, n_val, n_test)
    splits = {s: set(getattr(built, s).indices) for s in ("train", "val", "test")}
    assert set().union(*splits.values()) == set(range(n))
    assert sum(len(v) for v in splits.values()) == n
    assert built.info["images"] == {s: len(v) for s, v in splits.items()}
    assert built.info["classes"] == CLASSES and built.info["preprocessing"]["input_size"] == SIZE
    for s, v in splits.items():
        subset = getattr(built, s)
        assert built.info["boxes"][s] == sum(len(subset.dataset.items[i].boxes) for i in v)
    assert built.train.dataset.train and not built.test.dataset.train and not built.val.dataset.train
    assert built.warnings == []
    # another seed, another split; the same seed, the same split
    again = task.build_data(data, preprocessing=pre, base_dir=tmp_path, seed=0)
    other = task.build_data(data, preprocessing=pre, base_dir=tmp_path, seed=1)
    assert again.test.indices == built.test.indices and other.test.indices != built.test.indices
    assert task.report_items == [other.test.dataset.items[i] for i in other.test.indices[:6]]


def _write_csv(folder: Path, rows: list[str]) -> None:
    for name in {r.split(",")[0] for r in rows}:
        _image(64, 48, []).save(folder / name)
    (folder / "boxes.csv").write_text("image_path,xmin,ymin,xmax,ymax,label\n" + "\n".join(rows) + "\n")


def test_a_class_without_training_box_is_a_warning(task, tmp_path) -> None:
    rows = [f"img{i}.png,{i},{i},{i + 20},{i + 20},{'car' if i % 2 else 'bus'}" for i in range(8)]
    _write_csv(tmp_path, rows)
    data = DataConfig.model_validate(
        {"dataset": "detection-csv", "args": {"path": "boxes.csv", "classes": ["bus", "car", "bike"]}}
    )
    pre = task.preprocessing(model_config(), init={"backbone": False}, base_dir=tmp_path)
    built = task.build_data(data, preprocessing=pre, base_dir=tmp_path, seed=0)
    assert built.info["classes"] == ["bus", "car", "bike"]
    assert len(built.warnings) == 1 and "bike" in built.warnings[0] and "training" in built.warnings[0]
    assert "bus" not in built.warnings[0] and "car" not in built.warnings[0]


def test_a_dataset_without_boxes_is_one_sentence_of_data_error(task, tmp_path) -> None:
    _write_csv(tmp_path, [f"img{i}.png,,,,," for i in range(5)])
    data = DataConfig.model_validate({"dataset": "detection-csv", "args": {"path": "boxes.csv", "classes": ["car"]}})
    pre = task.preprocessing(model_config(), init={"backbone": False}, base_dir=tmp_path)
    with pytest.raises(DataError) as info:
        task.build_data(data, preprocessing=pre, base_dir=tmp_path, seed=0)
    message = str(info.value)
    assert "no boxes" in message and "detection-csv" in message
    assert "\n" not in message and "Traceback" not in message


# ------------------------------------------------------------------ evaluation
class _Replay:
    """A stand-in detector: returns precomputed per-image predictions (input pixels) in order."""

    def __init__(self, predictions: list[dict[str, torch.Tensor]]):
        self.predictions, self.at = predictions, 0

    def __call__(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = self.predictions[self.at : self.at + len(images)]
        self.at += len(images)
        return out


def _noisy_predictions(targets: list[dict], seed: int) -> list[dict[str, torch.Tensor]]:
    """Jittered true boxes (some relabelled), plus random false positives, with random scores."""
    rng = random.Random(seed)
    out = []
    for t in targets:
        boxes, labels, scores = [], [], []
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            jitter = [rng.uniform(-0.25, 0.25) * s for s in (w, h, w, h)]
            boxes.append([v + j for v, j in zip(box, jitter)])
            labels.append(label if rng.random() < 0.8 else (label + 1) % len(CLASSES))
            scores.append(rng.uniform(0.2, 1.0))
        for _ in range(rng.randint(0, 3)):
            x, y = rng.uniform(0, SIZE - 40), rng.uniform(0, SIZE - 40)
            boxes.append([x, y, x + rng.uniform(8, 40), y + rng.uniform(8, 40)])
            labels.append(rng.randrange(len(CLASSES)))
            scores.append(rng.uniform(0.0, 0.9))
        out.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "scores": torch.tensor(scores, dtype=torch.float32),
            }
        )
    return out


def _pycocotools(items: list[DetectionItem], predictions: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """COCOeval's twelve summary numbers for predictions in SIZE x SIZE pixels, scaled to each image."""
    gt = COCO()
    images, annotations, results = [], [], []
    for image_id, (item, pred) in enumerate(zip(items, predictions), start=1):
        images.append({"id": image_id, "width": item.width, "height": item.height})
        for (x1, y1, x2, y2), label in zip(item.boxes, item.labels):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        sx, sy = item.width / SIZE, item.height / SIZE
        for (x1, y1, x2, y2), label, score in zip(
            pred["boxes"].tolist(), pred["labels"].tolist(), pred["scores"].tolist()
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy],
                    "score": score,
                }
            )
    gt.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_equals_an_independent_pycocotools_run_in_original_pixels(task, seed) -> None:
    from tlengine_plugins.object_detection.synthetic import generate_scenes

    items = _items()
    for image, boxes, labels in generate_scenes(classes=CLASSES, images=5, size=144, seed=seed):
        # stretched to a non-square size, boxes with it
        w, h = 144 + 40 * seed + 16, 144
        items.append(
            DetectionItem(
                image=image.resize((w, h)),
                boxes=[(x1 * w / 144, y1, x2 * w / 144, y2) for x1, y1, x2, y2 in boxes],
                labels=list(labels),
                width=w,
                height=h,
            )
        )
    dataset = batches.DetectionDataset(items, size=SIZE, augment="none", train=False)
    targets = [dataset[i][1] for i in range(len(items))]
    predictions = _noisy_predictions(targets, seed)
    loader = DataLoader(dataset, batch_size=3, shuffle=False, collate_fn=task.collate)
    info = {"classes": CLASSES, "preprocessing": {"input_size": SIZE}}
    result = task.evaluate(_Replay(predictions), loader, torch.device("cpu"), info)
    stats = _pycocotools(items, predictions)
    names = {"map": 0, "map_50": 1, "map_75": 2, "map_small": 3, "map_medium": 4, "map_large": 5, "mar_100": 8}
    for name, k in names.items():
        if stats[k] == -1:
            assert name not in result.metrics
        else:
            assert result.metrics[name] == pytest.approx(stats[k], abs=1e-9), name
    assert 0.05 < result.metrics["map"] < result.metrics["map_50"] < 1.0  # not a trivial 0 or 1
    assert set(result.details["per_class_ap"]) == set(CLASSES)
    assert len(result.details["examples"]) == min(6, len(items))
    first = result.details["examples"][0]
    assert all(s >= 0.3 for s in first["scores"])  # REPORT_SCORE


# ------------------------------------------------------------------ predict
def test_predict_score_threshold_zero_keeps_every_detection(task, tmp_path) -> None:
    torch.manual_seed(0)
    model, data = build(task, tmp_path, data=synthetic(6), score_threshold=0.0, detections_per_image=10)
    path = tmp_path / "scene.png"
    data.test.dataset.items[data.test.indices[0]].image.save(path)
    info = data.info
    every = task.predict(model, [PredictInput(str(path), "file")], info, options={"score_threshold": 0.0})
    some = task.predict(model, [PredictInput(str(path), "file")], info, options={"score_threshold": 1e-6})
    assert len(some[0]["detections"]) == 10  # the random head scores far below 0.5
    assert len(every[0]["detections"]) == 10


def test_data_tile_cuts_each_split_into_tiles_with_their_boxes(task, tmp_path) -> None:
    mc = model_config()
    pre = task.preprocessing(mc, init={"backbone": False}, base_dir=tmp_path)
    plain = task.build_data(synthetic(10), preprocessing=pre, base_dir=tmp_path, seed=0)
    tiled = task.build_data(
        synthetic(10, tile={"size": 64, "overlap": 0, "min_visible": 0.01}),
        preprocessing=pre,
        base_dir=tmp_path,
        seed=0,
    )
    # 128 px scenes in 64 px tiles: four tiles per image, and the split is by image, before tiling
    for split in ("train", "val", "test"):
        assert len(getattr(tiled, split)) == 4 * len(getattr(plain, split))
    items = tiled.train.dataset.items
    for i in tiled.train.indices:
        item = items[i]
        assert (item.width, item.height) == (64, 64)
        image = batches.load_image(item.image)
        assert image.size == (64, 64)
        for x1, y1, x2, y2 in item.boxes:
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
    # with min_visible ~0 every box keeps at least one piece (a box across a tile border keeps two)
    assert tiled.info["boxes"]["train"] >= plain.info["boxes"]["train"]
    assert "in 64 px tiles" in tiled.info["source"]
