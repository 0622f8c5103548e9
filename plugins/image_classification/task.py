"""The ``image-classification`` task: images in, one label out of K classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tlengine.atomic import write_text
from tlengine.config import DataConfig, ModelConfig
from tlengine.errors import DataError
from tlengine.execution import InputFormat
from tlengine.model import TransferModel
from tlengine.reporting.plots import plot_confusion
from tlengine.task import Evaluation, PredictInput, Task, TaskData
from tlengine.training.metrics import classification_metrics
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from . import extraction
from .datasets import open_image, verify_images
from .splits import split_samples
from .transforms import ImageDataset, build_transforms


class ImageDataOptions(BaseModel):
    """The image task's keys in the pipeline's ``data:`` section."""

    model_config = ConfigDict(extra="forbid")
    augment: Literal["none", "light", "strong"] = Field(
        "light", description="none | light (random resized crop + flip) | strong (+ affine, colour jitter)"
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

        return check_model_args(model.backbone, model.args, model.weights, self.registries, base_dir)

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
        verify_images(samples)
        split = split_samples(samples, val_fraction=data.val_fraction, test_fraction=data.test_fraction, seed=seed)
        train_idx, val_idx, test_idx = split.train, split.val, split.test
        augment = self.data_options(data).augment
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
            info={"classes": list(samples.classes), "source": samples.source, "preprocessing": preprocessing},
            warnings=list(split.warnings),
        )

    # ------------------------------------------------------------------ training
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets)

    def training_loss(self, model: Any, inputs: Any, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(inputs).float(), targets, label_smoothing=self.train_config.label_smoothing)

    def evaluate(
        self, model: TransferModel, loader: DataLoader, device: torch.device, info: dict[str, Any]
    ) -> Evaluation:
        preds, trues, total_loss = [], [], 0.0
        for batch in loader:
            inputs, targets = self.move_to(batch, device)
            logits = model(inputs).float()
            total_loss += float(F.cross_entropy(logits, targets, reduction="sum"))
            preds.append(logits.argmax(1).cpu())
            trues.append(targets.cpu())
        y_true, y_pred = torch.cat(trues), torch.cat(preds)
        result = classification_metrics(y_true, y_pred, info["classes"])
        result.metrics["loss"] = total_loss / max(len(y_true), 1)
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
