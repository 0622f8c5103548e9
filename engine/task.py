"""What a modality plugin implements: a :class:`Task`.

The runner and the strategies are modality-free; everything that depends on what the
data *is* lives in a Task subclass registered by a plugin through
``tlengine_register_tasks``:

* data: ``build_data`` reads or generates a dataset and splits it; ``collate`` /
  ``move_to`` batch it (lists of dicts are fine: detection);
* model: ``build_model`` returns a :class:`tlengine.model.TransferModel` of named parts
  (``pretrained_parts`` names those that can start pretrained, each with its own init);
* training: ``training_loss`` returns a loss or a dict of named losses (all logged);
  the model's forward may take the targets (teacher forcing, detectors);
* evaluation: ``evaluate`` returns metrics; ``metric_directions`` says which are
  better lower (WER, loss), which drives gains, tables, plots and the best epoch;
* options: ``DataOptions`` / ``ModelOptions`` validate the task's own keys in the
  ``data:`` and ``model:`` sections (image tasks: ``augment``, ``input_size``);
* inference: ``predict`` takes files or strings, ``render_prediction`` prints one;
* feature cache: ``cache_spec`` says what is cached per sample (a pooled vector, a
  token sequence [T,D] with its length, or a map [C,H,W]); ``extraction_batches``,
  ``targets`` and ``dataset_fingerprint`` feed it; ``cached_inputs`` turns cached rows
  back into what the model's ``forward_head`` takes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Literal, Mapping, Sequence

import torch
from pydantic import BaseModel, ConfigDict
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, default_collate

from .config import TrainConfig
from .execution import InputFormat

if TYPE_CHECKING:
    from .config import DataConfig, ModelConfig
    from .model import TransferModel
    from .registry import Registries


class NoOptions(BaseModel):
    """Options of a task that takes none in this section: any extra key is an error."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class TaskData:
    """The three splits of one dataset, and what the model needs to know about it.

    ``info`` is JSON-serialisable and is stored with every checkpoint, so ``predict``
    can rebuild the model: e.g. ``{"classes": ["circle", "square"]}``. ``warnings`` are
    plain sentences the runner prints (e.g. a class with no validation samples).
    ``extra`` holds the stage's extra datasets (``extra_data``), each built whole by the
    same task (set by the runner; what a strategy's :meth:`~tlengine.strategies.Strategy.prepare`
    reads, e.g. the classes of a multitask head).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, "TaskData"] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Scalar metrics (JSON-ready) plus task-specific details (e.g. a confusion matrix)."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class CacheSpec:
    """What the feature cache stores per sample for a task.

    layout: ``vector`` — one pooled row [D] (features [N,D], [N,T,D] or [N,C,H,W] are
        pooled by ``pooling``; padded sequences pool under their mask); ``sequence`` — the
        token sequence [T,D] (with its length when padded); ``map`` — the map [C,H,W];
        ``maps`` — several named maps ``{name: [C_i,H_i,W_i]}`` (a detector backbone's
        pyramid: ``forward_features`` returns a dict), served back as the same dict.
    pooling: for ``vector``: avg | max | cls; ignored otherwise (stored whole).
    max_tokens: for ``sequence`` with padded sequences: every row holds this many tokens
        (batches are padded or cut to it; a longer sequence is an error).
    """

    layout: Literal["vector", "sequence", "map", "maps"] = "vector"
    pooling: Literal["avg", "max", "cls"] = "avg"
    l2_normalize: bool = False
    max_tokens: int | None = None


@dataclass
class PredictInput:
    """One thing to predict on: a file path or a string (``tlengine predict --text``)."""

    value: str
    kind: Literal["file", "text"] = "file"


class Task(ABC):
    """Base class of every task; subclass it in a plugin and register it by name."""

    name: ClassVar[str] = ""
    #: the metric that decides the best epoch and that the summary table shows
    primary_metric: ClassVar[str] = "accuracy"
    #: "max" or "min" per metric; metrics not listed are "max" unless their name says
    #: loss / error / wer / cer (see :meth:`higher_is_better`)
    metric_directions: ClassVar[dict[str, str]] = {}
    #: metrics the run's summary table shows (empty: all); metrics.json keeps every one
    table_metrics: ClassVar[tuple[str, ...]] = ()
    #: names of the model parts that can start from pretrained weights
    pretrained_parts: ClassVar[tuple[str, ...]] = ("backbone",)
    #: the task's own keys in the pipeline's ``data:`` / ``model:`` sections
    DataOptions: ClassVar[type[BaseModel]] = NoOptions
    ModelOptions: ClassVar[type[BaseModel]] = NoOptions
    #: whether ``predict`` takes strings (``tlengine predict --text``)
    accepts_text: ClassVar[bool] = False
    #: whether frozen parts may run in reduced precision (``extraction.precision``); a task
    #: whose outputs need fp32 (e.g. regression to exact coordinates) sets False
    allows_reduced_precision: ClassVar[bool] = True

    def __init__(self, registries: "Registries", train: TrainConfig | None = None):
        self.registries = registries
        #: the stage's training settings (e.g. ``label_smoothing`` for the loss)
        self.train_config = train or TrainConfig()

    # ------------------------------------------------------------------ options
    def data_options(self, data: "DataConfig") -> Any:
        """The task's options in ``data`` (validated ``DataOptions``)."""
        return self.DataOptions.model_validate(data.task_options)

    def model_options(self, model: "ModelConfig") -> Any:
        """The task's options in ``model`` (validated ``ModelOptions``)."""
        return self.ModelOptions.model_validate(model.task_options)

    @classmethod
    def higher_is_better(cls, metric: str) -> bool:
        """Direction of ``metric``: from ``metric_directions``, else by its name. A metric on
        an ``evaluate_on`` dataset (``target.accuracy``) goes the way of its own name's."""
        if metric in cls.metric_directions:
            return cls.metric_directions[metric] == "max"
        own = metric.rsplit(".", 1)[-1]
        if own in cls.metric_directions:
            return cls.metric_directions[own] == "max"
        lowered = metric.lower()
        return not any(w in lowered for w in ("loss", "error", "wer", "cer", "perplexity", "distance"))

    # ------------------------------------------------------------------ data and model
    @abstractmethod
    def build_model(
        self, model: "ModelConfig", info: dict[str, Any], *, init: Mapping[str, bool], base_dir: Path
    ) -> "TransferModel":
        """The model for this task. ``init[part]`` says whether pretrained part ``part``
        (one of ``pretrained_parts``) loads ``model.weights`` (True) or starts random
        (False, e.g. the scratch arm). ``info`` is ``TaskData.info``."""

    @abstractmethod
    def preprocessing(self, model: "ModelConfig", *, init: Mapping[str, bool], base_dir: Path) -> dict[str, Any]:
        """What inputs the model expects (e.g. input size, mean/std). Called before the
        data is built; loading the weights here lets bad weights fail before a run starts."""

    @abstractmethod
    def build_data(self, data: "DataConfig", *, preprocessing: dict[str, Any], base_dir: Path, seed: int) -> TaskData:
        """Read or generate the dataset, split it, and attach transforms that produce
        what the model's ``preprocessing`` asks for. Raise DataError on bad data."""

    def check_config(self, model: "ModelConfig", data: "DataConfig", *, base_dir: Path) -> list[tuple[str, str]]:
        """Validation beyond the option schemas (e.g. backbone arguments, weight names);
        returns (dotted.field relative to the stage, reason) pairs. Called before any
        run directory exists."""
        return []

    def part_has_weights(self, model: "ModelConfig", part: str) -> bool:
        """Whether pretrained part ``part`` has weights to start from in ``model`` (when the
        arm starts it pretrained). Default: ``model.weights`` is set. A task whose parts take
        their weights from its own keys (captioning's ``model.decoder`` checkpoint) says so."""
        return model.weights is not None

    def init_from_state(
        self, model: "TransferModel", state: Mapping[str, torch.Tensor], parts: Sequence[str], *, source: str
    ) -> None:
        """Load the pretrained ``parts`` of ``model`` from an earlier stage's state dict
        (``init_from``). Default: each part's ``<part>.*`` tensors, strictly. Override
        when the earlier stage's model names its parts differently."""
        from .model import load_parts

        load_parts(model, state, parts, source=source)

    # ------------------------------------------------------------------ batches
    def collate(self, samples: Sequence[Any]) -> tuple[Any, Any]:
        return default_collate(samples)

    def move_to(self, batch: tuple[Any, Any], device: torch.device) -> tuple[Any, Any]:
        inputs, targets = batch
        return to_device(inputs, device), to_device(targets, device)

    def loader(
        self, dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0
    ) -> DataLoader:
        """A DataLoader whose order depends only on ``seed`` (so resumed runs match); when
        shuffling, batches are drawn by :meth:`sample_weights` if the task gives any."""
        generator = torch.Generator().manual_seed(seed)
        weights = self.sample_weights(dataset) if shuffle else None
        sampler = WeightedRandomSampler(weights, len(weights), generator=generator) if weights is not None else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            generator=generator,
            num_workers=num_workers,
            collate_fn=self.collate,
            persistent_workers=False,
        )

    def sample_weights(self, dataset: Dataset) -> torch.Tensor | None:
        """Per-sample weights [N] for drawing the training batches of ``dataset`` with
        replacement (a class-balanced sampler), or None for a plain shuffle. Used by
        :meth:`loader` and by the feature cache's training batches alike."""
        return None

    @abstractmethod
    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """Scalar loss of a batch (also used for the validation loss)."""

    def training_loss(self, model: Any, inputs: Any, targets: Any) -> torch.Tensor | dict[str, torch.Tensor]:
        """Loss of one training batch, or a dict of named losses (summed for the update,
        each logged). Override when the model needs the targets in its forward pass
        (teacher forcing in captioning, torchvision detectors in train mode)."""
        return self.loss(model(inputs), targets)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model: Any, loader: DataLoader, device: torch.device, info: dict[str, Any]) -> Evaluation:
        """Metrics of ``model`` over ``loader`` (model is in eval mode, under no_grad).
        ``info`` is ``TaskData.info`` (e.g. class names).

        Implement this, or the two halves it is made of by default: :meth:`evaluation_batch`
        (what the metrics need of one batch) and :meth:`score` (the metrics from every
        batch's). With the halves, processes under torchrun each evaluate their share of the
        batches and rank 0 scores them all; with ``evaluate`` alone rank 0 evaluates every batch."""
        return self.score([self.evaluation_batch(model, batch, device) for batch in loader], info)

    def evaluation_batch(self, model: Any, batch: Any, device: torch.device) -> Any:
        """What the metrics need of one loader batch (predictions and targets), on the CPU and
        plain enough to pickle: under torchrun it travels to rank 0."""
        raise NotImplementedError(f"task '{self.name}' implements neither evaluate nor evaluation_batch and score")

    def score(self, outcomes: list[Any], info: dict[str, Any]) -> Evaluation:
        """The metrics from :meth:`evaluation_batch`'s result for every batch, in loader order."""
        raise NotImplementedError(f"task '{self.name}' implements neither evaluate nor evaluation_batch and score")

    @property
    def scores_in_parts(self) -> bool:
        """Whether the task evaluates in the two halves, so processes can share an evaluation."""
        return type(self).score is not Task.score

    def write_reports(self, run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any]) -> list[Path]:
        """Task-specific plots and tables for the test evaluations of each arm
        (``arms`` maps an arm label to its first seed's evaluation)."""
        return []

    # ------------------------------------------------------------------ feature cache
    #: how cached training views are augmented; part of the cache key
    cache_augmentation: ClassVar[str] = ""

    @property
    def supports_feature_cache(self) -> bool:
        """True when the task implements ``extraction_batches``, ``targets`` and
        ``dataset_fingerprint``."""
        return type(self).extraction_batches is not Task.extraction_batches

    def cache_spec(self, model: "TransferModel") -> CacheSpec:
        """What is cached per sample of ``model.forward_features`` (default: a pooled vector)."""
        return CacheSpec()

    def cached_inputs(self, features: torch.Tensor, lengths: torch.Tensor | None) -> Any:
        """Cached rows of a batch -> what ``model.forward_head`` takes. ``features`` is
        [B,D], [B,T,D] or [B,C,H,W] per ``cache_spec`` (a dict of [B,C,H,W] maps for
        ``maps``); ``lengths`` [B] for padded sequences."""
        return features if lengths is None else (features, lengths)

    def view_targets(self, targets: Any, views: torch.Tensor) -> Any:
        """Targets of a batch of cached training rows whose inputs are augmented views
        ``views`` [B] (0 = the plain view). Default: unchanged (a class label does not move
        when its image flips); a task whose targets follow the geometry (detection boxes)
        transforms them the way its ``extraction_batches`` transformed view ``views[i]``."""
        return targets

    def targets(self, dataset: Dataset) -> Any:
        """The targets of every sample of ``dataset`` without decoding inputs: a tensor
        whose first dimension is the sample ([N] for labels), or a list."""
        raise NotImplementedError

    def dataset_fingerprint(self, dataset: Dataset) -> str:
        """A string that changes whenever the samples of ``dataset`` change (cache key part)."""
        raise NotImplementedError

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
    ) -> Iterator[tuple[Any, torch.Tensor]]:
        """Inputs of the frozen part for the samples ``indices`` of ``dataset`` under
        augmented view ``view`` (0 = the plain eval view; others deterministic in (seed,
        sample, view)), as ``(inputs, sample_indices)`` batches. ``kernels`` is "auto",
        "fused" or "torch"; ``train`` says whether these are training views.
        ``input_format`` is the memory format and dtype the frozen part runs in (a task
        that builds 4-D inputs can write them so, saving a conversion pass; others may
        ignore it); ``num_workers`` the data-loading processes the user allowed."""
        raise NotImplementedError

    # ------------------------------------------------------------------ inference
    def predict(
        self,
        model: "TransferModel",
        inputs: Sequence[PredictInput],
        info: dict[str, Any],
        *,
        options: Mapping[str, Any],
        device: torch.device | None = None,
    ) -> list[dict[str, Any]]:
        """Predictions for files or strings, one JSON-ready dict per input (with ``input``).
        ``options`` come from the command line (e.g. ``top_k``)."""
        raise NotImplementedError(f"task '{self.name}' does not support predict")

    def render_prediction(self, result: dict[str, Any]) -> str:
        """One human-readable line (or a few) for one ``predict`` result."""
        return f"{result.get('input')}: {result}"


def to_device(x: Any, device: torch.device) -> Any:
    """Move tensors (also inside lists, tuples and dicts) to ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(to_device(v, device) for v in x)
    return x
