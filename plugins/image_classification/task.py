"""The ``image-classification`` task: images in, one label out of K classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tlengine.atomic import write_text
from tlengine.config import DataConfig, ModelConfig
from tlengine.errors import DataError
from tlengine.execution import InputFormat
from tlengine.model import TransferModel
from tlengine.reporting.plots import plot_confusion
from tlengine.task import Evaluation, PredictInput, Task, TaskData
from tlengine.training.metrics import classification_metrics, classifier_batch, classifier_totals
from torch import nn
from torch.utils.data import Dataset, Subset

from . import extraction
from .datasets import ImageSamples, open_image, verify_images
from .splits import split_samples
from .transforms import ImageDataset, build_transforms


class ImageDataOptions(BaseModel):
    """The image task's keys in the pipeline's ``data:`` section."""

    model_config = ConfigDict(extra="forbid")
    augment: Literal["none", "light", "strong"] = Field(
        "light", description="none | light (random resized crop + flip) | strong (+ affine, colour jitter)"
    )
    label_groups: dict[str, list[str]] | None = Field(
        None,
        description="train and score on groups of the dataset's classes, e.g. {even: ['0', '2', '4', '6', '8'], "
        "odd: ['1', '3', '5', '7', '9']}: the task's classes are the group names in the order written, and every "
        "dataset class must be in exactly one group. The train/val/test split is drawn on the dataset's own "
        "classes first and only then are the labels mapped to groups, so a grouped and an ungrouped copy of a "
        "dataset with the same args, fractions and split_seed hold exactly the same images in each split "
        "(default: none, the dataset's own classes)",
    )

    @field_validator("label_groups", mode="before")
    @classmethod
    def _numbers_as_names(cls, v: Any) -> Any:
        """YAML reads ``even: [0, 2]`` as integers; class and group names are strings."""

        def name(x: Any) -> Any:
            return str(x) if isinstance(x, int) and not isinstance(x, bool) else x

        if isinstance(v, Mapping):
            return {name(k): [name(c) for c in m] if isinstance(m, list) else m for k, m in v.items()}
        return v


#: Names shown in one message before "and N more".
_MAX_NAMED = 10


def _names(names: Sequence[str]) -> str:
    """``'a', 'b' and 'c'``, at most ``_MAX_NAMED`` of them named."""
    quoted = [f"'{n}'" for n in names[:_MAX_NAMED]]
    if len(names) > _MAX_NAMED:
        quoted.append(f"{len(names) - _MAX_NAMED} more")
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def label_group_problems(groups: Mapping[str, Sequence[str]], classes: Sequence[str] | None = None) -> list[str]:
    """What is wrong with ``label_groups`` (empty if nothing), as clauses of one sentence.

    Without ``classes`` only the groups themselves are checked (at least 2, none empty or
    blank-named, no class listed twice); with the dataset's ``classes`` also that every
    listed class is one of them and every one of them is in a group.
    """
    problems = []
    if len(groups) < 2:
        problems.append(f"it has {len(groups)} group{'' if len(groups) == 1 else 's'} but needs at least 2")
    blank = [g for g in groups if not g.strip()]
    if blank:
        problems.append("a group name is blank")
    empty = [g for g, members in groups.items() if not members]
    if empty:
        problems.append(
            f"group{'s' if len(empty) > 1 else ''} {_names(empty)} {'are' if len(empty) > 1 else 'is'} empty"
        )
    where: dict[str, list[str]] = {}
    for g, members in groups.items():
        for c in members:
            where.setdefault(c, []).append(g)
    for c, gs in where.items():
        if len(gs) > 1:
            places = f"group '{gs[0]}'" if len(set(gs)) == 1 else f"groups {_names(list(dict.fromkeys(gs)))}"
            problems.append(f"class '{c}' is listed more than once (in {places})")
    if classes is not None:
        known = set(classes)
        unknown = [c for c in where if c not in known]
        if unknown:
            problems.append(
                f"{_names(unknown)} {'are' if len(unknown) > 1 else 'is'} not one of the dataset's classes "
                f"(known: {_names(list(classes))})"
            )
        missing = [c for c in classes if c not in where]
        if missing:
            problems.append(
                f"dataset class{'es' if len(missing) > 1 else ''} {_names(missing)} "
                f"{'are' if len(missing) > 1 else 'is'} in no group"
            )
    return problems


def group_samples(samples: ImageSamples, groups: Mapping[str, Sequence[str]], dataset: str) -> ImageSamples:
    """``samples`` relabelled to ``groups``: label = index of the item's group, classes = the
    group names in order. The items keep their images (the same objects, nothing is copied)
    and their order, so indices into ``samples.items`` (a split) stay valid.

    Raises DataError naming ``data.label_groups`` and every problem found.
    """
    problems = label_group_problems(groups, samples.classes)
    if problems:
        raise DataError(f"data.label_groups does not fit dataset '{dataset}': {'; '.join(problems)}")
    group_of = {c: i for i, members in enumerate(groups.values()) for c in members}
    mapping = [group_of[c] for c in samples.classes]  # dataset label -> group index
    return ImageSamples(
        items=[(image, mapping[label]) for image, label in samples.items],
        classes=list(groups),
        source=f"{samples.source}, labels grouped into {', '.join(groups)}",
        eval_crop_pct=samples.eval_crop_pct,
        splits=samples.splits,
    )


class ImageModelOptions(BaseModel):
    """The image task's keys in the pipeline's ``model:`` section."""

    model_config = ConfigDict(extra="forbid")
    input_size: int | None = Field(None, ge=8, description="square input side in pixels; default: the backbone's own")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the new linear head")


class ImageClassificationTask(Task):
    """Single-label image classification with a linear head on pooled backbone features."""

    name = "image-classification"
    primary_metric = "accuracy"
    metric_directions = {"accuracy": "max", "macro_f1": "max", "loss": "min"}
    DataOptions = ImageDataOptions
    ModelOptions = ImageModelOptions

    # ------------------------------------------------------------------ model
    def _backbone(self, model: ModelConfig, *, init: Mapping[str, bool], base_dir: Path) -> Any:
        factory = self.registries.backbones.get(model.backbone)
        options = self.model_options(model)
        return factory(
            weights=model.weights if init.get("backbone") else None,
            weights_registry=self.registries.weights,
            base_dir=base_dir,
            input_size=options.input_size,
            **model.args,
        )

    def check_config(self, model: ModelConfig, data: DataConfig, *, base_dir: Path) -> list[tuple[str, str]]:
        from .backbones import check_model_args

        errors = check_model_args(model.backbone, model.args, model.weights, self.registries, base_dir)
        try:
            groups = self.data_options(data).label_groups
        except ValueError:  # pydantic's ValidationError: validation reports the option errors itself
            groups = None
        if groups is not None:  # what can be told without the dataset; its classes are checked by build_data
            problems = label_group_problems(groups)
            if problems:
                errors.append(("data.label_groups", "; ".join(problems)))
        return errors

    def preprocessing(self, model: ModelConfig, *, init: Mapping[str, bool], base_dir: Path) -> dict[str, Any]:
        return self._backbone(model, init=init, base_dir=base_dir).preprocessing

    def build_model(
        self, model: ModelConfig, info: dict[str, Any], *, init: Mapping[str, bool], base_dir: Path
    ) -> TransferModel:
        backbone = self._backbone(model, init=init, base_dir=base_dir)
        num_classes = len(info["classes"])
        dropout = self.model_options(model).dropout
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        head = nn.Sequential(*layers, nn.Linear(backbone.feature_dim, num_classes))
        return TransferModel(backbone, head)

    # ------------------------------------------------------------------ data
    def build_data(self, data: DataConfig, *, preprocessing: dict[str, Any], base_dir: Path, seed: int) -> TaskData:
        spec = self.registries.datasets.get(data.dataset)
        samples = spec.build(spec.args.model_validate(data.args), base_dir)
        if not samples.items:
            raise DataError(f"dataset '{data.dataset}' ({samples.source}) has no images")
        if len(samples.classes) < 2:
            raise DataError(
                f"dataset '{data.dataset}' ({samples.source}) has {len(samples.classes)} class; "
                "classification needs at least 2"
            )
        options = self.data_options(data)
        # Labels mapped to groups (a bad mapping fails here, before any image is read); the
        # same items in the same order, so split indices hold for both.
        grouped = (
            group_samples(samples, options.label_groups, data.dataset) if options.label_groups is not None else None
        )
        verify_images(samples)
        # The split is drawn on the dataset's own classes (stratified per class, each class
        # checked), and only then are labels mapped to groups: a grouped and an ungrouped
        # copy of one dataset share their split image for image.
        split = split_samples(samples, val_fraction=data.val_fraction, test_fraction=data.test_fraction, seed=seed)
        train_idx, val_idx, test_idx = split.train, split.val, split.test
        info: dict[str, Any] = {}
        if grouped is not None:
            info["dataset_classes"] = list(samples.classes)
            info["label_groups"] = {g: list(members) for g, members in options.label_groups.items()}
            samples = grouped
        augment = options.augment
        preprocessing = dict(preprocessing)
        if samples.eval_crop_pct is not None:  # e.g. synthetic shapes may touch the border
            preprocessing["crop_pct"] = samples.eval_crop_pct
        train_tf = build_transforms(preprocessing, augment=augment, train=True)
        eval_tf = build_transforms(preprocessing, augment="none", train=False)
        train = Subset(ImageDataset(samples.items, train_tf), train_idx)
        val = Subset(ImageDataset(samples.items, eval_tf), val_idx)
        test = Subset(ImageDataset(samples.items, eval_tf), test_idx)
        return TaskData(
            train,
            val,
            test,
            info={
                "classes": list(samples.classes),
                "source": samples.source,
                "preprocessing": preprocessing,
                **info,
            },
            warnings=list(split.warnings),
        )

    # ------------------------------------------------------------------ training
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets)

    def training_loss(self, model: Any, inputs: Any, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(inputs).float(), targets, label_smoothing=self.train_config.label_smoothing)

    def evaluation_batch(self, model: TransferModel, batch: Any, device: torch.device) -> dict[str, Any]:
        inputs, targets = self.move_to(batch, device)
        return classifier_batch(model(inputs), targets)

    def score(self, outcomes: list[dict[str, Any]], info: dict[str, Any]) -> Evaluation:
        y_true, y_pred, loss = classifier_totals(outcomes)
        result = classification_metrics(y_true, y_pred, info["classes"])
        result.metrics["loss"] = loss
        return result

    # ------------------------------------------------------------------ reports
    def write_reports(self, run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any]) -> list[Path]:
        written = []
        classes = info["classes"]
        for arm, evaluation in arms.items():
            matrix = evaluation.details.get("confusion_matrix")
            if matrix is not None:
                written.append(
                    plot_confusion(
                        matrix,
                        classes,
                        run_dir / "plots" / f"confusion_{arm}.png",
                        title=f"{arm}: test confusion matrix",
                    )
                )
            rows = evaluation.details.get("per_class", [])
            if rows:
                lines = ["| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
                lines += [
                    f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
                    for r in rows
                ]
                path = run_dir / "reports" / f"per_class_{arm}.md"
                path.parent.mkdir(exist_ok=True)
                write_text(path, "\n".join(lines) + "\n")
                written.append(path)
        return written

    # ------------------------------------------------------------------ feature cache
    cache_augmentation = extraction.AUGMENTATION

    def targets(self, dataset: Dataset) -> torch.Tensor:
        return extraction.targets(dataset)

    def dataset_fingerprint(self, dataset: Dataset) -> str:
        return extraction.fingerprint(dataset)

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
        return extraction.extraction_batches(
            dataset,
            indices=indices,
            view=view,
            seed=seed,
            batch_size=batch_size,
            preprocessing=preprocessing,
            kernels=kernels,
            train=train,
            input_format=input_format,
            num_workers=num_workers,
        )

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
        """Top-k labels with probabilities per image file (``options["top_k"]``, default 3)."""
        transform = build_transforms(model.preprocessing, augment="none", train=False)
        classes = info["classes"]
        top_k = int(options.get("top_k", 3))
        if top_k < 1:
            raise DataError(f"top_k must be at least 1, got {top_k}")
        k = min(top_k, len(classes))
        results = []
        model.eval()
        for item in inputs:
            if item.kind != "file":
                raise DataError("image-classification predicts on image files, not text; drop --text")
            image = open_image(Path(item.value))
            with torch.no_grad():
                probs = model(transform(image).unsqueeze(0)).float().softmax(1)[0]
            top = probs.topk(k)
            results.append(
                {
                    "input": item.value,
                    "predictions": [
                        {"label": classes[i], "probability": float(p)} for p, i in zip(top.values, top.indices)
                    ],
                }
            )
        return results

    def render_prediction(self, result: dict[str, Any]) -> str:
        preds = ", ".join(f"{p['label']} {p['probability']:.3f}" for p in result["predictions"])
        return f"{result['input']}: {preds}"
