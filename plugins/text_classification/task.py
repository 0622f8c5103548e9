"""The ``text-classification`` task: a text in, one label out of K classes.

The pretrained part is a BERT-family encoder (:mod:`.encoders`); the head pools its
hidden states under the attention mask (``model.pooling: mean | cls``) and classifies.
Texts are tokenised once when the data is built, batched by length and padded per batch
(:mod:`.batches`). Feature-extraction arms cache one pooled row per text, so later
epochs never run the encoder. Metrics add, for two classes, the positive class's F1,
ROC-AUC and PR-AUC (:mod:`.metrics`); reports add a PR curve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tlengine.config import DataConfig, ModelConfig
from tlengine.errors import DataError, TLEngineError
from tlengine.execution import InputFormat
from tlengine.task import CacheSpec, Evaluation, PredictInput, Task, TaskData
from tlengine.training.metrics import classifier_batch, classifier_totals
from torch.utils.data import DataLoader, Dataset

from . import encoders
from .batches import LengthBucketBatchSampler, TextDataset, collate_texts, tokenize
from .datasets import TASK, TextSamples, texts_fingerprint
from .metrics import balanced_sample_weights, class_weights, text_classification_metrics
from .model import TextClassifier
from .reports import write_text_reports
from .splits import duplicates_across_splits, split_text_samples


class TextDataOptions(BaseModel):
    """The text task's keys in the pipeline's ``data:`` section."""

    model_config = ConfigDict(extra="forbid")
    balance: Literal["none", "class_weights", "sampler"] = Field(
        "none", description="imbalanced classes: weigh the loss by inverse class frequency, or draw balanced batches"
    )
    positive_class: str | None = Field(
        None, description="two classes: the class whose F1 / ROC-AUC / PR-AUC are reported (default: spam, or the 2nd)"
    )


class TextModelOptions(BaseModel):
    """The text task's keys in the pipeline's ``model:`` section."""

    model_config = ConfigDict(extra="forbid")
    max_length: int = Field(128, ge=8, le=4096, description="tokens per text, [CLS] and [SEP] included; longer is cut")
    pooling: Literal["mean", "cls"] = Field("mean", description="attention-masked mean of the tokens, or [CLS]")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout before the new linear head")
    encoder_dropout: float | None = Field(None, ge=0.0, lt=1.0, description="overrides the checkpoint's dropout")
    padding: Literal["dynamic", "max_length"] = Field(
        "dynamic", description="pad each batch to its longest text (dynamic) or every batch to max_length"
    )


class TextClassificationTask(Task):
    """Single-label text classification with a pretrained BERT-family encoder."""

    name = TASK
    primary_metric = "macro_f1"
    metric_directions = {"accuracy": "max", "macro_f1": "max", "loss": "min"}
    table_metrics = ("accuracy", "positive_f1", "roc_auc", "pr_auc", "macro_roc_auc")
    pretrained_parts = ("encoder",)
    DataOptions = TextDataOptions
    ModelOptions = TextModelOptions
    accepts_text = True

    def __init__(self, registries: Any, train: Any = None):
        super().__init__(registries, train)
        self._class_weights: torch.Tensor | None = None
        self._balanced: dict[int, torch.Tensor] = {}  # id(train dataset) -> per-sample weights

    # ------------------------------------------------------------------ model
    def _checkpoint(self, model: ModelConfig, base_dir: Path) -> encoders.Checkpoint:
        return encoders.resolve_checkpoint(model.weights, weights_registry=self.registries.weights, base_dir=base_dir)

    def check_config(self, model: ModelConfig, data: DataConfig, *, base_dir: Path) -> list[tuple[str, str]]:
        problems = []
        if model.backbone != encoders.FAMILY:
            problems.append(("model.backbone", f"text-classification encoders are '{encoders.FAMILY}' (BERT family)"))
        if model.weights is None:
            problems.append(
                (
                    "model.weights",
                    f"a text model needs a checkpoint for its architecture and tokenizer: "
                    f"'{encoders.MINILM_L6}', a local directory or hf:<id> (scratch arms re-initialise it)",
                )
            )
        if model.args:
            problems.append(("model.args", "text encoders take no args; use model.max_length / pooling / dropout"))
        if model.weights is not None:
            try:
                self._checkpoint(model, base_dir)
            except TLEngineError as exc:
                problems.append(("model.weights", str(exc)))
        return problems

    def preprocessing(self, model: ModelConfig, *, init: Mapping[str, bool], base_dir: Path) -> dict[str, Any]:
        checkpoint = self._checkpoint(model, base_dir)
        options = self.model_options(model)
        tokenizer = encoders.load_tokenizer(checkpoint.directory)
        return {
            "checkpoint": checkpoint.ref,
            "tokenizer": checkpoint.directory,
            "encoder_config": checkpoint.config,
            "max_length": min(options.max_length, int(checkpoint.config.get("max_position_embeddings", 512))),
            "padding": options.padding,
            "pad_id": int(tokenizer.pad_token_id or 0),
        }

    def build_model(
        self, model: ModelConfig, info: dict[str, Any], *, init: Mapping[str, bool], base_dir: Path
    ) -> TextClassifier:
        pre = info.get("preprocessing") or {}
        if "encoder_config" in pre:  # predict: the architecture is stored with the run
            checkpoint = encoders.Checkpoint(pre["checkpoint"], pre["tokenizer"], pre["encoder_config"])
        else:
            checkpoint = self._checkpoint(model, base_dir)
        options = self.model_options(model)
        encoder = encoders.build_encoder(
            checkpoint, pretrained=bool(init.get("encoder")), dropout=options.encoder_dropout
        )
        classifier = TextClassifier(encoder, len(info["classes"]), pooling=options.pooling, dropout=options.dropout)
        classifier.preprocessing = dict(pre) if pre else self.preprocessing(model, init=init, base_dir=base_dir)
        return classifier

    # ------------------------------------------------------------------ data
    def build_data(self, data: DataConfig, *, preprocessing: dict[str, Any], base_dir: Path, seed: int) -> TaskData:
        spec = self.registries.datasets.get(data.dataset)
        if spec.task != TASK:
            raise DataError(f"dataset '{data.dataset}' holds data for '{spec.task}', not {TASK}")
        samples: TextSamples = spec.build(spec.args.model_validate(data.args), base_dir)
        options = self.data_options(data)
        if options.positive_class is not None and options.positive_class not in samples.classes:
            raise DataError(
                f"data.positive_class '{options.positive_class}' is not one of the classes "
                f"({', '.join(samples.classes)})"
            )
        split = split_text_samples(samples, val_fraction=data.val_fraction, test_fraction=data.test_fraction, seed=seed)
        self._use(preprocessing)
        tokenizer = encoders.load_tokenizer(preprocessing["tokenizer"])
        token_ids = tokenize(tokenizer, samples.texts, preprocessing["max_length"])

        def subset(indices: list[int]) -> TextDataset:
            return TextDataset(
                [samples.texts[i] for i in indices],
                [samples.labels[i] for i in indices],
                [token_ids[i] for i in indices],
            )

        train, val, test = subset(split.train), subset(split.val), subset(split.test)
        k = len(samples.classes)
        if options.balance == "class_weights":
            self._class_weights = class_weights(train.labels, k)
        elif options.balance == "sampler":
            self._balanced[id(train)] = balanced_sample_weights(train.labels, k)
        truncated = sum(1 for ids in token_ids if len(ids) >= preprocessing["max_length"])
        warnings = list(split.warnings)
        if truncated:
            warnings.append(
                f"{truncated} of {len(token_ids)} texts are longer than model.max_length "
                f"({preprocessing['max_length']} tokens) and are cut"
            )
        return TaskData(
            train,
            val,
            test,
            info={
                "classes": list(samples.classes),
                "source": samples.source,
                "positive_class": options.positive_class,
                "duplicates_across_splits": duplicates_across_splits(samples.texts, split),
                "preprocessing": preprocessing,
            },
            warnings=warnings,
        )

    def collate(self, samples: Sequence[Any]) -> tuple[Any, Any]:
        return collate_texts(samples, pad_id=self._pad_id, pad_to=self._pad_to)

    _pad_id = 0
    _pad_to: int | None = None

    def _use(self, preprocessing: Mapping[str, Any]) -> None:
        self._pad_id = int(preprocessing.get("pad_id", 0))
        self._pad_to = int(preprocessing["max_length"]) if preprocessing.get("padding") == "max_length" else None

    def loader(
        self, dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0
    ) -> DataLoader:
        """Length-bucketed batches (see :class:`LengthBucketBatchSampler`), deterministic in ``seed``."""
        if not isinstance(dataset, TextDataset):
            return super().loader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers)
        sampler = LengthBucketBatchSampler(
            dataset.lengths,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            weights=self.sample_weights(dataset) if shuffle else None,
        )
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=self.collate, num_workers=num_workers)

    @property
    def balances_classes(self) -> bool:
        """Whether ``data.balance`` weighs the classes (the TF-IDF arm follows it)."""
        return self._class_weights is not None or bool(self._balanced)

    def sample_weights(self, dataset: Dataset) -> torch.Tensor | None:
        return self._balanced.get(id(dataset))

    # ------------------------------------------------------------------ training
    def _weights_on(self, device: torch.device) -> torch.Tensor | None:
        return None if self._class_weights is None else self._class_weights.to(device)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets)

    def training_loss(self, model: Any, inputs: Any, targets: torch.Tensor) -> torch.Tensor:
        logits = model(inputs).float()
        return F.cross_entropy(
            logits, targets, weight=self._weights_on(logits.device), label_smoothing=self.train_config.label_smoothing
        )

    def evaluation_batch(self, model: Any, batch: Any, device: torch.device) -> dict[str, Any]:
        inputs, targets = self.move_to(batch, device)
        return classifier_batch(model(inputs), targets, keep="probs")

    def score(self, outcomes: list[dict[str, Any]], info: dict[str, Any]) -> Evaluation:
        y_true, probs, loss = classifier_totals(outcomes, keep="probs")
        result = text_classification_metrics(y_true, probs, info["classes"], positive_class=info.get("positive_class"))
        result.metrics["loss"] = loss
        return result

    def write_reports(self, run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any]) -> list[Path]:
        return write_text_reports(run_dir, arms, info)

    # ------------------------------------------------------------------ feature cache
    def cache_spec(self, model: Any) -> CacheSpec:
        return CacheSpec(layout="vector", pooling="cls" if getattr(model, "pooling", "mean") == "cls" else "avg")

    def targets(self, dataset: Dataset) -> torch.Tensor:
        return torch.as_tensor(dataset.labels, dtype=torch.int64)

    def dataset_fingerprint(self, dataset: Dataset) -> str:
        # token ids follow from the texts and the tokenizer / max_length, which the cache key holds
        return texts_fingerprint(dataset.texts, dataset.labels)

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
    ) -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
        """Texts have no augmented views: every view is the text itself, batched by length."""
        self._use(preprocessing)
        wanted = indices.tolist()
        lengths = [len(dataset.token_ids[i]) for i in wanted]
        for batch in LengthBucketBatchSampler(lengths, batch_size, shuffle=False, seed=0):
            rows = [wanted[j] for j in batch]
            inputs, _ = self.collate([dataset[i] for i in rows])
            yield inputs, torch.as_tensor(rows, dtype=torch.int64)

    # ------------------------------------------------------------------ inference
    def predict(
        self,
        model: Any,
        inputs: Sequence[PredictInput],
        info: dict[str, Any],
        *,
        options: Mapping[str, Any],
        device: torch.device | None = None,
    ) -> list[dict[str, Any]]:
        """Label and probability per text (``--text``) or per line of a text file."""
        texts: list[tuple[str, str]] = []  # (what to show as the input, the text)
        for item in inputs:
            if item.kind == "text":
                texts.append((item.value, item.value))
            else:
                texts += [(line, line) for line in _read_lines(Path(item.value))]
        if not texts:
            raise DataError("nothing to predict: the inputs hold no text")
        classes = info["classes"]
        k = max(1, min(int(options.get("top_k", 1) or 1), len(classes)))
        pre = model.preprocessing
        self._use(pre)
        tokenizer = encoders.load_tokenizer(pre["tokenizer"])
        ids = tokenize(tokenizer, [t for _, t in texts], int(pre["max_length"]))
        dataset = TextDataset([t for _, t in texts], [0] * len(texts), ids)
        results: list[dict[str, Any] | None] = [None] * len(texts)
        model.eval()
        for batch in LengthBucketBatchSampler(dataset.lengths, 32, shuffle=False, seed=0):
            batch_inputs, _ = self.collate([dataset[i] for i in batch])
            with torch.inference_mode():
                probs = model(batch_inputs).float().softmax(1)
            for row, i in enumerate(batch):
                top = probs[row].topk(k)
                results[i] = {
                    "input": texts[i][0],
                    "label": classes[int(top.indices[0])],
                    "probability": float(top.values[0]),
                    "predictions": [
                        {"label": classes[int(j)], "probability": float(p)} for p, j in zip(top.values, top.indices)
                    ],
                }
        return [r for r in results if r is not None]

    def render_prediction(self, result: dict[str, Any]) -> str:
        text = result["input"].replace("\n", " ")
        shown = text if len(text) <= 70 else text[:67] + "..."
        return f"{result['label']} {result['probability']:.3f}  {shown}"


def _read_lines(path: Path) -> list[str]:
    """Non-blank lines of a UTF-8 text file (one text per line)."""
    try:
        content = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"text file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not a text file with one text per line") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"text file {path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"text file {path} cannot be read ({exc.strerror or exc})") from None
    return [line.strip() for line in content.splitlines() if line.strip()]
