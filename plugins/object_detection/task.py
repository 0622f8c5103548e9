"""The ``object-detection`` task: images in, boxes with a class and a score out.

Model: a torchvision detector on one of the engine's classification backbones
(:func:`.detectors.build_detector`): part ``backbone`` pretrained (with blocks, so
fine-tuning gets lower learning rates and gradual unfreezing), parts ``neck`` and ``head``
new. Data: any dataset of this task (COCO JSON, VOC, detection CSV, synthetic scenes), each
image resized to ``model.input_size`` square. Metrics: the COCO protocol by pycocotools
(:func:`.metrics.coco_evaluate`) on boxes mapped back to each image's own pixels; the
primary metric is ``map_50``.

Feature cache: a frozen backbone's C3-C5 maps are cached (``CacheSpec(layout="maps")``);
``cache.views: 2`` stores each training image plain and mirrored (boxes mirrored with it),
so feature-extraction trains on flips without running the backbone again. The other parts of
``data.augment`` (zoom-out, IoU crops, colour) need the live image and apply to arms that
run the backbone every epoch.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tlengine.config import DataConfig, ModelConfig
from tlengine.errors import ConfigError, DataError
from tlengine.execution import InputFormat
from tlengine.model import TransferModel
from tlengine.task import CacheSpec, Evaluation, PredictInput, Task, TaskData
from torch.utils.data import Dataset, Subset

from . import batches
from .datasets import DetectionSamples
from .detectors import build_detector
from .metrics import coco_documents, coco_evaluate
from .pretrained_detectors import PRETRAINED_DETECTORS

#: smallest input side per detector: FPN level P7 (stride 128) or SSDlite's last extra layer
#: must keep 2x2 cells, or GroupNorm/BatchNorm in training see one value per channel
MIN_INPUT_SIZE = {"fasterrcnn": 128, "retinanet": 256, "fcos": 256, "ssdlite": 320}
#: test images whose predictions the evaluation keeps for the drawn report
REPORT_IMAGES = 6
#: predictions below this score are not drawn in reports (they are all scored by COCO)
REPORT_SCORE = 0.3


class TileOptions(BaseModel):
    """``data.tile``: cut large images (aerial, documents) into square tiles before training."""

    model_config = ConfigDict(extra="forbid")
    size: int = Field(ge=32, description="tile side in pixels of the original image")
    overlap: int = Field(0, ge=0, description="pixels shared by neighbouring tiles")
    min_visible: float = Field(0.6, gt=0.0, le=1.0, description="keep a clipped box when this much of it is inside")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "TileOptions":
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


class DetectionDataOptions(BaseModel):
    """The detection task's keys in the pipeline's ``data:`` section."""

    model_config = ConfigDict(extra="forbid")
    tile: TileOptions | None = Field(
        None, description="cut every image into tiles (after the split, so no image is in two splits)"
    )
    augment: Literal["none", "light", "strong"] = Field(
        "light",
        description="none | light (flip, mild zoom-out) | strong (+ colour, IoU crop, zoom-out to 2.5x); "
        "arms on the feature cache train on cache.views plain/mirrored views instead",
    )


class DetectionModelOptions(BaseModel):
    """The detection task's keys in the pipeline's ``model:`` section."""

    model_config = ConfigDict(extra="forbid")
    pretrained_detector: str | None = Field(
        None,
        description="start from a whole torchvision detector, e.g. fasterrcnn_resnet50_fpn (its class layers "
        "replaced), whose weights model.weights names: COCO_V1 / DEFAULT (hub cache or network) or a file",
    )
    detector: Literal["fasterrcnn", "retinanet", "fcos", "ssdlite"] = Field(
        "fcos", description="torchvision detector: fasterrcnn (FPN) | retinanet | fcos | ssdlite"
    )
    input_size: int = Field(320, ge=64, le=2048, description="square input side in pixels (a multiple of 32)")
    fpn_channels: int = Field(128, ge=8, le=1024, description="width of the feature pyramid (not ssdlite)")
    score_threshold: float = Field(0.05, ge=0.0, lt=1.0, description="detections below it are dropped at eval")
    detections_per_image: int = Field(100, ge=1, le=1000)


class ObjectDetectionTask(Task):
    """Object detection with a torchvision detector on a transferred backbone."""

    name = "object-detection"
    primary_metric = "map_50"
    metric_directions = {"map": "max", "map_50": "max", "map_75": "max", "mar_100": "max"}
    table_metrics = ("map_50", "map", "map_75", "mar_100")
    DataOptions = DetectionDataOptions
    ModelOptions = DetectionModelOptions
    cache_augmentation = batches.CACHE_AUGMENTATION

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: the test items whose predictions the reports draw (set by build_data)
        self.report_items: list[Any] = []

    # ------------------------------------------------------------------ model
    def check_config(self, model: ModelConfig, data: DataConfig, *, base_dir: Path) -> list[tuple[str, str]]:
        from tlengine_plugins.image_classification.backbones import check_model_args

        try:
            options = self.model_options(model)
        except ValidationError:  # the schema's own errors are reported already
            return check_model_args(model.backbone, model.args, model.weights, self.registries, base_dir)
        if options.pretrained_detector is not None:  # model.weights are the detector's
            problems = check_model_args(model.backbone, model.args, None, self.registries, base_dir)
            return problems + _pretrained_detector_problems(model, options, base_dir)
        problems = check_model_args(model.backbone, model.args, model.weights, self.registries, base_dir)
        if options.detector in ("fcos", "retinanet") and options.fpn_channels % 32:
            problems.append(
                (
                    "model.fpn_channels",
                    f"{options.detector}'s head normalises in 32 groups, so it needs a multiple of 32, "
                    f"got {options.fpn_channels}",
                )
            )
        if options.input_size % 32:
            problems.append(
                ("model.input_size", f"must be a multiple of 32 (the stride of C5), got {options.input_size}")
            )
        smallest = MIN_INPUT_SIZE[options.detector]
        if options.input_size < smallest:
            problems.append(
                (
                    "model.input_size",
                    f"{options.detector} needs at least {smallest} px (its coarsest level must keep 2x2 cells "
                    f"for its normalisation layers), got {options.input_size}",
                )
            )
        return problems

    def preprocessing(self, model: ModelConfig, *, init: Mapping[str, bool], base_dir: Path) -> dict[str, Any]:
        from tlengine_plugins.image_classification.backbones import build_backbone

        options = self.model_options(model)
        if options.pretrained_detector is not None:  # built here so that weights which do not fit fail early
            detector = self._pretrained(model, 1, init=init, base_dir=base_dir)
            return {
                "input_size": options.input_size,
                "mean": list(detector.preprocessing["mean"]),
                "std": list(detector.preprocessing["std"]),
                "detector": options.pretrained_detector,
            }
        backbone = build_backbone(
            model.backbone,
            weights=model.weights if init.get("backbone") else None,
            weights_registry=self.registries.weights,
            base_dir=base_dir,
            **model.args,
        )
        pp = backbone.preprocessing
        return {
            "input_size": options.input_size,
            "mean": list(pp.get("mean", (0.485, 0.456, 0.406))),
            "std": list(pp.get("std", (0.229, 0.224, 0.225))),
            "detector": options.detector,
        }

    def build_model(
        self, model: ModelConfig, info: dict[str, Any], *, init: Mapping[str, bool], base_dir: Path
    ) -> TransferModel:
        options = self.model_options(model)
        if options.pretrained_detector is not None:
            detector = self._pretrained(model, len(info["classes"]), init=init, base_dir=base_dir)
            detector.preprocessing = {**detector.preprocessing, **info.get("preprocessing", {})}
            return detector
        if model.backbone not in self.registries.backbones:
            raise ConfigError([("model.backbone", f"unknown backbone '{model.backbone}'")])
        extra = {"fpn_channels": options.fpn_channels} if options.detector != "ssdlite" else {}
        detector = build_detector(
            options.detector,
            model.backbone,
            len(info["classes"]),
            weights=model.weights if init.get("backbone") else None,
            weights_registry=self.registries.weights,
            base_dir=base_dir,
            min_size=options.input_size,
            max_size=options.input_size,
            score_thresh=options.score_threshold,
            detections_per_img=options.detections_per_image,
            **extra,
        )
        detector.preprocessing = {**detector.preprocessing, **info.get("preprocessing", {})}
        return detector

    def _pretrained(self, model: ModelConfig, num_classes: int, *, init: Mapping[str, bool], base_dir: Path) -> Any:
        from .pretrained_detectors import build_pretrained_detector

        options = self.model_options(model)
        return build_pretrained_detector(
            options.pretrained_detector,
            num_classes,
            weights=model.weights if init.get("backbone") else None,
            base_dir=base_dir,
            min_size=options.input_size,
            max_size=options.input_size,
            score_threshold=options.score_threshold,
            detections_per_image=options.detections_per_image,
        )

    def init_from_state(
        self, model: TransferModel, state: Mapping[str, torch.Tensor], parts: Sequence[str], *, source: str
    ) -> None:
        """``init_from`` an earlier stage, also of another task: an image-classification
        stage's ``backbone.*`` loads into the detector's backbone, strictly, except the layers
        the detector never runs (e.g. MobileNetV3's pre-logits ``classifier.0``)."""
        from tlengine.model import load_parts

        dropped = tuple(f"backbone.{name}." for name in getattr(model.part("backbone").module, "dropped", []))
        load_parts(
            model, {k: v for k, v in state.items() if not (dropped and k.startswith(dropped))}, parts, source=source
        )

    # ------------------------------------------------------------------ data
    def build_data(self, data: DataConfig, *, preprocessing: dict[str, Any], base_dir: Path, seed: int) -> TaskData:
        spec = self.registries.datasets.get(data.dataset)
        samples: DetectionSamples = spec.build(spec.args.model_validate(data.args), base_dir)
        if not samples.items:
            raise DataError(f"dataset '{data.dataset}' ({samples.source}) has no images")
        if samples.num_boxes == 0:
            raise DataError(f"dataset '{data.dataset}' ({samples.source}) has no boxes to learn from")
        split, warnings = _split(samples, data.val_fraction, data.test_fraction, seed)
        size = int(preprocessing["input_size"])
        options = self.data_options(data)
        items = samples.items
        if options.tile is not None:  # tiles after the split: tiles of one image never land in two splits
            t = options.tile
            tiled = {
                k: batches.tile_items([items[i] for i in v], size=t.size, overlap=t.overlap, min_visible=t.min_visible)
                for k, v in split.items()
            }
            items, start = [], 0
            for k in ("train", "val", "test"):
                items += tiled[k]
                split[k] = list(range(start, start + len(tiled[k])))
                start += len(tiled[k])
            samples = DetectionSamples(
                items, samples.classes, f"{samples.source}, in {t.size} px tiles", samples.skipped
            )

        def subset(indices: list[int], train: bool) -> Subset:
            dataset = batches.DetectionDataset(
                items, size=size, augment=options.augment if train else "none", train=train, source=samples.source
            )
            return Subset(dataset, indices)

        train, val, test = subset(split["train"], True), subset(split["val"], False), subset(split["test"], False)
        if not len(train) or not len(test):
            raise DataError(
                f"dataset '{data.dataset}' ({samples.source}) leaves {len(train)} training and {len(test)} test "
                "images after the split; both need at least one"
            )
        missing = [
            c for k, c in enumerate(samples.classes) if not any(k in samples.items[i].labels for i in split["train"])
        ]
        if missing:
            warnings.append(f"class(es) {', '.join(missing)} have no box among the training images")
        if samples.skipped:
            skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(samples.skipped.items()))
            warnings.append(f"skipped while reading {samples.source}: {skipped}")
        self.report_items = [samples.items[i] for i in split["test"][:REPORT_IMAGES]]
        info = {
            "classes": list(samples.classes),
            "source": samples.source,
            "preprocessing": dict(preprocessing),
            "skipped": dict(samples.skipped),
            "images": {k: len(v) for k, v in split.items()},
            "boxes": {k: sum(len(samples.items[i].boxes) for i in v) for k, v in split.items()},
        }
        return TaskData(train, val, test, info=info, warnings=warnings)

    def collate(self, samples: Sequence[Any]) -> tuple[Any, Any]:
        return batches.collate_detection(samples)

    # ------------------------------------------------------------------ training
    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The detector computes its own losses in train mode: ``outputs`` is their dict."""
        return sum(outputs.values())

    def training_loss(self, model: Any, inputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        return model(inputs, targets)

    def evaluation_batch(self, model: Any, batch: Any, device: torch.device) -> list[dict[str, Any]]:
        """Per image: the predicted boxes (in model input coordinates), the true ones, its size."""
        inputs, targets = self.move_to(batch, device)
        outputs = model(inputs)
        return [
            {
                "pred": {k: v.detach().cpu() for k, v in out.items()},
                "truth": {"boxes": t["orig_boxes"].cpu(), "labels": t["orig_labels"].cpu()},
                "orig_size": t["orig_size"].cpu(),
            }
            for t, out in zip(targets, outputs)
        ]

    def score(self, outcomes: list[list[dict[str, Any]]], info: dict[str, Any]) -> Evaluation:
        size = int(info["preprocessing"]["input_size"])
        images = [image for batch in outcomes for image in batch]
        truths = [i["truth"] for i in images]
        predictions = [batches.to_original(i["pred"], i["orig_size"], size) for i in images]
        image_sizes = [i["orig_size"].tolist() for i in images]
        examples = []
        for pred in predictions[:REPORT_IMAGES]:
            keep = pred["scores"] >= REPORT_SCORE
            examples.append(
                {
                    "boxes": [[round(float(v), 1) for v in b] for b in pred["boxes"][keep]],
                    "labels": [int(v) for v in pred["labels"][keep]],
                    "scores": [round(float(v), 3) for v in pred["scores"][keep]],
                }
            )
        result = coco_evaluate(truths, predictions, info["classes"])
        result.details["examples"] = examples
        sizes = [{**t, "image_size": [int(v) for v in t_size]} for t, t_size in zip(truths, image_sizes)]
        ground_truth, detections = coco_documents(sizes, predictions, info["classes"])
        result.details["coco"] = {"ground_truth": ground_truth, "detections": detections}
        return result

    # ------------------------------------------------------------------ reports
    def write_reports(self, run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any]) -> list[Path]:
        from .reports import write_detection_reports

        return write_detection_reports(run_dir, arms, info, self.report_items)

    # ------------------------------------------------------------------ feature cache
    def cache_spec(self, model: TransferModel) -> CacheSpec:
        return CacheSpec(layout="maps")

    def targets(self, dataset: Dataset) -> list[dict[str, Any]]:
        return batches.targets(dataset)

    def view_targets(self, targets: Any, views: torch.Tensor) -> Any:
        return batches.flip_targets(targets, views)

    def dataset_fingerprint(self, dataset: Dataset) -> str:
        return batches.fingerprint(dataset)

    def extraction_batches(
        self,
        dataset: Dataset,
        *,
        indices: torch.Tensor,
        view: int,
        seed: int,
        batch_size: int,
        preprocessing: dict[str, Any],
        kernels: str,
        train: bool,
        input_format: InputFormat | None = None,
        num_workers: int = 0,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return batches.extraction_batches(dataset, indices=indices, view=view, batch_size=batch_size)

    # ------------------------------------------------------------------ inference
    def predict(
        self,
        model: TransferModel,
        inputs: Sequence[PredictInput],
        info: dict[str, Any],
        *,
        options: Mapping[str, Any],
        device: torch.device | None = None,
    ) -> list[dict[str, Any]]:
        """Detections per image file: class, score and xyxy box in the image's own pixels, at
        or above ``options["score_threshold"]`` (default 0.5); with ``options["save_dir"]`` the
        image with its boxes drawn is written there too (``<stem>.detections.png``)."""
        from .reports import draw_detections

        size = int(info["preprocessing"]["input_size"])
        threshold = 0.5 if options.get("score_threshold") is None else float(options["score_threshold"])
        save_dir = options.get("save_dir")
        classes = info["classes"]
        dataset = batches.DetectionDataset([], size=size, augment="none", train=False)
        results = []
        model.eval()
        for item in inputs:
            if item.kind != "file":
                raise DataError("object-detection predicts on image files, not text; drop --text")
            image = batches.load_image(Path(item.value))
            tensor, _ = dataset.transform(
                image, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
            )
            with torch.no_grad():
                out = model(tensor.unsqueeze(0))[0]
            pred = batches.to_original(out, torch.tensor([image.height, image.width]), size)
            keep = pred["scores"] >= threshold
            detections = [
                {"label": classes[int(c)], "score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
                for b, s, c in zip(pred["boxes"][keep], pred["scores"][keep], pred["labels"][keep])
            ]
            result: dict[str, Any] = {"input": item.value, "detections": detections}
            if save_dir:
                out_path = Path(save_dir) / f"{Path(item.value).stem}.detections.png"
                draw_detections(image, detections, classes).save(out_path)
                result["drawn"] = str(out_path)
            results.append(result)
        return results

    def render_prediction(self, result: dict[str, Any]) -> str:
        lines = [f"{result['input']}: {len(result['detections'])} detection(s)"]
        lines += [
            f"  {d['label']} {d['score']:.3f} [{', '.join(f'{v:.1f}' for v in d['box'])}]" for d in result["detections"]
        ]
        if result.get("drawn"):
            lines.append(f"  drawn: {result['drawn']}")
        return "\n".join(lines)


def _pretrained_detector_problems(
    model: ModelConfig, options: DetectionModelOptions, base_dir: Path
) -> list[tuple[str, str]]:
    from .pretrained_detectors import detector_weight_problem

    name = options.pretrained_detector
    if name not in PRETRAINED_DETECTORS:
        return [("model.pretrained_detector", detector_weight_problem(name, None, base_dir) or "")]
    problems = []
    problem = detector_weight_problem(name, model.weights, base_dir)
    if problem is not None:
        problems.append(("model.weights", problem))
    if PRETRAINED_DETECTORS[name] != options.detector:
        problems.append(
            ("model.detector", f"{name} is a {PRETRAINED_DETECTORS[name]} detector, not {options.detector}")
        )
    if not name.split("_", 1)[1].startswith(model.backbone + "_"):
        problems.append(("model.backbone", f"{name} is built on another backbone than '{model.backbone}'"))
    return problems


def _split(
    samples: DetectionSamples, val_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, list[int]], list[str]]:
    """Image indices per split: the dataset's own (VOC ImageSets) when it names train and test,
    else a seeded random split by the fractions (at least one test image from 3 images on)."""
    warnings: list[str] = []
    n = len(samples.items)
    given = samples.splits or {}
    if "train" in given and "test" in given:
        return {"train": list(given["train"]), "val": list(given.get("val", [])), "test": list(given["test"])}, warnings
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    if n >= 3:
        n_test = max(n_test, 1)
    split = {"test": sorted(order[:n_test]), "val": sorted(order[n_test : n_test + n_val])}
    split["train"] = sorted(order[n_test + n_val :])
    if given:
        warnings.append(f"the dataset's own split ({', '.join(sorted(given))}) lacks train or test; split at random")
    return split, warnings
