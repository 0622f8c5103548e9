"""The ``image-classification`` task: images in, one label out of K classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from tlengine.config import DataConfig, ModelConfig
from tlengine.data import split_indices
from tlengine.errors import DataError
from tlengine.model import TransferModel
from tlengine.reporting.plots import plot_confusion
from tlengine.task import Evaluation, Task, TaskData
from tlengine.training.metrics import classification_metrics

from .datasets import verify_images
from . import extraction
from .datasets import open_image
from .transforms import ImageDataset, build_transforms


class ImageClassificationTask(Task):
    """Single-label image classification with a linear head on pooled backbone features."""

    name = "image-classification"
    primary_metric = "accuracy"

    # ------------------------------------------------------------------ model
    def _backbone(self, model: ModelConfig, *, pretrained: bool, base_dir: Path) -> Any:
        factory = self.registries.backbones.get(model.backbone)
        return factory(weights=model.weights if pretrained else None, weights_registry=self.registries.weights,
                       base_dir=base_dir, input_size=model.input_size, **model.args)

    def preprocessing(self, model: ModelConfig, *, pretrained: bool, base_dir: Path) -> dict[str, Any]:
        return self._backbone(model, pretrained=pretrained, base_dir=base_dir).preprocessing

    def build_model(self, model: ModelConfig, info: dict[str, Any], *, pretrained: bool,
                    base_dir: Path) -> TransferModel:
        backbone = self._backbone(model, pretrained=pretrained, base_dir=base_dir)
        num_classes = len(info["classes"])
        layers: list[nn.Module] = [nn.Dropout(model.dropout)] if model.dropout > 0 else []
        head = nn.Sequential(*layers, nn.Linear(backbone.feature_dim, num_classes))
        return TransferModel(backbone, head)

    # ------------------------------------------------------------------ data
    def build_data(self, data: DataConfig, *, preprocessing: dict[str, Any], base_dir: Path,
                   seed: int) -> TaskData:
        spec = self.registries.datasets.get(data.dataset)
        samples = spec.build(spec.args.model_validate(data.args), base_dir)
        if not samples.items:
            raise DataError(f"dataset '{data.dataset}' ({samples.source}) has no images")
        if len(samples.classes) < 2:
            raise DataError(f"dataset '{data.dataset}' ({samples.source}) has {len(samples.classes)} class; "
                            "classification needs at least 2")
        verify_images(samples)
        labels = [label for _, label in samples.items]
        train_idx, val_idx, test_idx = split_indices(labels, data.val_fraction, data.test_fraction, seed)
        if not train_idx or not test_idx:
            raise DataError(f"dataset '{data.dataset}' ({samples.source}) has {len(labels)} images: too few "
                            "to split into train and test")
        preprocessing = dict(preprocessing)
        if samples.eval_crop_pct is not None:  # e.g. synthetic shapes may touch the border
            preprocessing["crop_pct"] = samples.eval_crop_pct
        train_tf = build_transforms(preprocessing, augment=data.augment, train=True)
        eval_tf = build_transforms(preprocessing, augment="none", train=False)
        train = Subset(ImageDataset(samples.items, train_tf), train_idx)
        val = Subset(ImageDataset(samples.items, eval_tf), val_idx)
        test = Subset(ImageDataset(samples.items, eval_tf), test_idx)
        return TaskData(train, val, test, info={"classes": list(samples.classes), "source": samples.source,
                                                   "preprocessing": preprocessing})

    # ------------------------------------------------------------------ training
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets)

    def evaluate(self, model: TransferModel, loader: DataLoader, device: torch.device,
                 info: dict[str, Any]) -> Evaluation:
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
                written.append(plot_confusion(matrix, classes, run_dir / "plots" / f"confusion_{arm}.png",
                                              title=f"{arm}: test confusion matrix"))
            rows = evaluation.details.get("per_class", [])
            if rows:
                lines = ["| class | precision | recall | f1 | support |", "|---|---|---|---|---|"]
                lines += [f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
                          f"{r['support']} |" for r in rows]
                path = run_dir / "arms" / arm / "per_class.md"
                path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return written

    # ------------------------------------------------------------------ feature cache
    cache_augmentation = extraction.AUGMENTATION

    def targets(self, dataset: Dataset) -> torch.Tensor:
        return extraction.targets(dataset)

    def dataset_fingerprint(self, dataset: Dataset) -> str:
        return extraction.fingerprint(dataset)

    def extraction_batches(self, dataset: Dataset, *, indices: torch.Tensor, view: int, seed: int,
                           batch_size: int, preprocessing: dict[str, Any], kernels: str, train: bool
                           ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return extraction.extraction_batches(dataset, indices=indices, view=view, seed=seed, batch_size=batch_size,
                                             preprocessing=preprocessing, kernels=kernels, train=train)

    # ------------------------------------------------------------------ inference
    def predict(self, model: TransferModel, files: Sequence[Path], info: dict[str, Any], *, top_k: int = 3,
                device: torch.device | None = None) -> list[dict[str, Any]]:
        transform = build_transforms(model.preprocessing, augment="none", train=False)
        classes = info["classes"]
        k = max(1, min(top_k, len(classes)))
        results = []
        model.eval()
        for path in files:
            image = open_image(Path(path))
            with torch.no_grad():
                probs = model(transform(image).unsqueeze(0)).float().softmax(1)[0]
            top = probs.topk(k)
            results.append({"input": str(path), "predictions": [
                {"label": classes[i], "probability": float(p)} for p, i in zip(top.values, top.indices)]})
        return results
