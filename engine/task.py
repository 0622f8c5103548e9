"""What a modality plugin implements: a :class:`Task`.

The runner and the strategies are modality-free; everything that depends on what the
data *is* (how to read it, which model fits it, how to batch it, which loss and metrics
apply, how to predict on files, which plots help) lives in a Task subclass registered by
a plugin through ``tlengine_register_tasks``.

The contract a batch follows: ``collate`` returns ``(inputs, targets)``; the model maps
``inputs`` to outputs; ``loss(outputs, targets)`` is a scalar. Tasks whose batches are
not stacked tensors (detection: lists of images and target dicts) keep that contract by
overriding ``collate``, ``move_to`` and ``loss``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate

if TYPE_CHECKING:
    from .config import DataConfig, ModelConfig
    from .model import TransferModel
    from .registry import Registries


@dataclass
class TaskData:
    """The three splits of one dataset, and what the model needs to know about it.

    ``info`` is JSON-serialisable and is stored with every checkpoint, so ``predict``
    can rebuild the model: e.g. ``{"classes": ["circle", "square"]}``.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Scalar metrics (JSON-ready) plus task-specific details (e.g. a confusion matrix)."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """Base class of every task; subclass it in a plugin and register it by name."""

    name: ClassVar[str] = ""
    #: the metric that decides "best" and that the summary table shows
    primary_metric: ClassVar[str] = "accuracy"

    def __init__(self, registries: "Registries"):
        self.registries = registries

    # ------------------------------------------------------------------ data and model
    @abstractmethod
    def build_model(self, model: "ModelConfig", info: dict[str, Any], *, pretrained: bool,
                    base_dir: Path) -> "TransferModel":
        """The model for this task. ``pretrained=False`` means random init (the scratch
        arm) even if ``model.weights`` names weights. ``info`` is ``TaskData.info``."""

    @abstractmethod
    def preprocessing(self, model: "ModelConfig", *, pretrained: bool, base_dir: Path) -> dict[str, Any]:
        """What inputs the model expects (e.g. input size, mean/std). Called before the
        data is built; loading the weights here lets bad weights fail before a run starts."""

    @abstractmethod
    def build_data(self, data: "DataConfig", *, preprocessing: dict[str, Any], base_dir: Path,
                   seed: int) -> TaskData:
        """Read or generate the dataset, split it, and attach transforms that produce
        what the model's ``preprocessing`` asks for. Raise DataError on bad data."""

    def check_config(self, model: "ModelConfig", data: "DataConfig") -> list[tuple[str, str]]:
        """Extra validation for this task; returns (dotted.field, reason) pairs."""
        return []

    # ------------------------------------------------------------------ batches
    def collate(self, samples: Sequence[Any]) -> tuple[Any, Any]:
        return default_collate(samples)

    def move_to(self, batch: tuple[Any, Any], device: torch.device) -> tuple[Any, Any]:
        inputs, targets = batch
        return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    def loader(self, dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int,
               num_workers: int = 0) -> DataLoader:
        """A DataLoader whose order depends only on ``seed`` (so resumed runs match)."""
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                          num_workers=num_workers, collate_fn=self.collate,
                          persistent_workers=False)

    @abstractmethod
    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """Scalar training loss of a batch."""

    def training_loss(self, model: "TransferModel", inputs: Any, targets: Any) -> torch.Tensor:
        """Loss of one training batch. Override when the model needs the targets in its
        forward pass (teacher forcing in captioning, torchvision detectors in train mode)."""
        return self.loss(model(inputs), targets)

    # ------------------------------------------------------------------ evaluation
    @abstractmethod
    def evaluate(self, model: "TransferModel", loader: DataLoader, device: torch.device,
                 info: dict[str, Any]) -> Evaluation:
        """Metrics of ``model`` over ``loader`` (model is in eval mode, under no_grad).
        ``info`` is ``TaskData.info`` (e.g. class names)."""

    def write_reports(self, run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any]) -> list[Path]:
        """Task-specific plots and tables for the test evaluations of each arm."""
        return []

    # ------------------------------------------------------------------ feature cache
    #: how cached training views are augmented; part of the cache key
    cache_augmentation: ClassVar[str] = ""

    @property
    def supports_feature_cache(self) -> bool:
        """True when the task implements the three methods below."""
        return type(self).extraction_batches is not Task.extraction_batches

    def targets(self, dataset: Dataset) -> torch.Tensor:
        """The targets of every sample of ``dataset``, without decoding inputs ([N] for labels)."""
        raise NotImplementedError

    def dataset_fingerprint(self, dataset: Dataset) -> str:
        """A string that changes whenever the samples of ``dataset`` change (cache key part)."""
        raise NotImplementedError

    def extraction_batches(self, dataset: Dataset, *, indices: torch.Tensor, view: int, seed: int, batch_size: int,
                           preprocessing: dict[str, Any], kernels: str, train: bool
                           ) -> Iterator[tuple[Any, torch.Tensor]]:
        """Backbone-ready inputs for the samples ``indices`` of ``dataset`` under augmented
        view ``view`` (0 = the plain eval view; others deterministic in (seed, sample, view)),
        as ``(inputs, sample_indices)`` batches. ``kernels`` is "auto", "fused" or "torch";
        ``train`` says whether these are training views (which may be cut from a larger base)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ inference
    def predict(self, model: "TransferModel", files: Sequence[Path], info: dict[str, Any], *,
                top_k: int = 3, device: torch.device | None = None) -> list[dict[str, Any]]:
        """Predictions for input files, one JSON-ready dict per file."""
        raise NotImplementedError(f"task '{self.name}' does not support predict")
