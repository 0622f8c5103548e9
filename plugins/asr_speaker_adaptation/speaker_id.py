"""``speaker-identification``: who is speaking, from a frozen (or fine-tuned) speech encoder.

The model is a speech encoder (part ``encoder``: Whisper's, or the small CTC model's from an
earlier stage) and a new linear head (part ``head``) on the encoder's frames mean-pooled under
their mask. ``forward_features`` returns ``(hidden [N,T,D], lengths [N])`` - the padded
sequence form of the feature-cache contract - so a ``feature-extraction`` arm caches one pooled
row per utterance (the core pools under the mask) and trains the head from the cache: the
encoder runs once per utterance, never once per epoch. Live arms (``fine-tune``, ``scratch``)
pool the same way in :class:`PooledSpeakerHead`.

Whisper's encoder hears 30 s of log-mel (the clip, then zeros) and gives 1500 frames of 20 ms;
only the first ``ceil(seconds * 50)`` belong to the clip, the rest encode the padding, so the
mean is taken over those frames alone: the same clip gives the same vector alone or in a batch,
whatever else the batch holds. ``model.window_seconds`` may shorten the window (the encoder then
runs on the first frames with the first position embeddings): on clips of a few seconds a 5 s
window is about ten times cheaper than 30 s, which is what makes the live arms (fine-tune,
scratch) of the quickstart affordable on a CPU.

Data: the speech datasets (``speech-manifest``, ``speaker-folder``, ``synthetic-speech``);
classes are the sorted speaker names, and every speaker's utterances are split into train / val
/ test by ``data.val_fraction`` / ``data.test_fraction`` (shuffled by ``data.split_seed``), so
every speaker is in every split. Metrics: accuracy (primary), macro-F1, loss; the evaluation's
details hold the accuracy of each speaker and the confusion matrix.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tlengine.config import DataConfig, ModelConfig
from tlengine.errors import DataError
from tlengine.execution import InputFormat
from tlengine.model import TransferModel
from tlengine.task import CacheSpec, Evaluation, PredictInput, Task, TaskData
from tlengine.training.metrics import classifier_batch, classifier_totals
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import recognizers
from .audio import pad_batch
from .speech_batches import UtteranceDataset
from .text_normalize import TextNormalizer

TASK = "speaker-identification"
#: Whisper's encoder frames per second of audio (10 ms mel hop, then a stride-2 convolution)
WHISPER_FRAMES_PER_SECOND = 50


class SpeakerDataOptions(BaseModel):
    """The speaker task's keys in the pipeline's ``data:`` section."""

    model_config = ConfigDict(extra="forbid")

    max_seconds: float = Field(30.0, gt=0, description="longer clips are an error (Whisper hears 30 s)")
    downmix: bool = Field(False, description="average multi-channel audio to mono instead of refusing it")


class SpeakerModelOptions(BaseModel):
    """The speaker task's keys in the pipeline's ``model:`` section."""

    model_config = ConfigDict(extra="forbid")

    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the pooled vector, before the linear head")
    window_seconds: float = Field(
        30.0,
        gt=0.0,
        le=30.0,
        description="Whisper: seconds of log-mel the encoder hears per clip (its own 30 s by default; a shorter "
        "window runs it on the first frames with the first position embeddings - several times faster on short "
        "clips; longer clips are an error)",
    )

    @field_validator("window_seconds")
    @classmethod
    def _whole_frames(cls, v: float) -> float:
        if abs(v * WHISPER_FRAMES_PER_SECOND - round(v * WHISPER_FRAMES_PER_SECOND)) > 1e-6:
            raise ValueError("must be a whole number of Whisper's 20 ms encoder frames (a multiple of 0.02)")
        return v


# ---------------------------------------------------------------------- data
class SpeakerDataset(Dataset):
    """Utterances with their speaker's class index: samples ``(features, seconds, label)``.

    Features are made (and kept) by an :class:`UtteranceDataset`; ``seconds`` is the clip's
    duration, which tells Whisper's pooling how many of its 1500 frames are the clip.
    """

    def __init__(self, utterances: Sequence[Any], classes: Sequence[str], preprocessing: dict[str, Any], **audio: Any):
        self.speech = UtteranceDataset(utterances, preprocessing, normalizer=TextNormalizer(), **audio)
        self.preprocessing = preprocessing
        index = {c: i for i, c in enumerate(classes)}
        self.labels = [index[u.speaker] for u in self.speech.utterances]
        self.durations = [float(d) for d in self.speech.durations]

    @property
    def utterances(self) -> list[Any]:
        return self.speech.utterances

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, float, int]:
        return windowed(self.speech.features(i), self.preprocessing), self.durations[i], self.labels[i]


def windowed(features: torch.Tensor, preprocessing: Mapping[str, Any]) -> torch.Tensor:
    """Whisper's [80,3000] log-mel cut to ``preprocessing["window_seconds"]`` (10 ms frames);
    other features unchanged."""
    if preprocessing.get("features") != "whisper":
        return features
    frames = round(float(preprocessing.get("window_seconds", 30.0)) * 100)
    return features if frames >= features.shape[-1] else features[..., :frames].contiguous()


def collate_speakers(
    samples: Sequence[tuple[torch.Tensor, float, int]],
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({"features", "lengths" (input frames or samples), "seconds"}, labels [N])``."""
    features, lengths = pad_batch([f for f, _, _ in samples])
    seconds = torch.tensor([s for _, s, _ in samples], dtype=torch.float32)
    labels = torch.tensor([y for _, _, y in samples], dtype=torch.int64)
    return {"features": features, "lengths": lengths, "seconds": seconds}, labels


def split_per_speaker(
    by_speaker: Mapping[str, Sequence[Any]], *, val_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, list[Any]], list[str]]:
    """Every speaker's utterances shuffled (``random.Random(f"{seed}:{speaker}")``) and cut into
    test (the last ``round(n * test_fraction)``, at least one when the fraction is not 0), val
    (likewise) and train (the rest, at least one). Returns the splits and warnings."""
    out: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    warnings: list[str] = []
    for speaker in sorted(by_speaker):
        items = list(by_speaker[speaker])
        random.Random(f"{seed}:{speaker}").shuffle(items)
        n = len(items)
        n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
        while n_test + n_val >= n and (n_test or n_val):  # keep one utterance to train on
            if n_val >= n_test and n_val:
                n_val -= 1
            else:
                n_test -= 1
        if (test_fraction > 0 and not n_test) or (val_fraction > 0 and not n_val):
            warnings.append(f"speaker '{speaker}' has {n} utterances: {n_val} for val, {n_test} for test")
        out["test"] += items[n - n_test :]
        out["val"] += items[n - n_test - n_val : n - n_test]
        out["train"] += items[: n - n_test - n_val]
    return out, warnings


def files_fingerprint(dataset: SpeakerDataset) -> str:
    """sha256 of each utterance's audio path, size, mtime, duration and label, and of the
    preprocessing: changes whenever a clip, its speaker or how it is featurised changes."""
    digest = hashlib.sha256()
    pre = {k: v for k, v in dataset.preprocessing.items()}
    pre |= {"max_seconds": dataset.speech.max_seconds, "downmix": dataset.speech.downmix}
    digest.update(json.dumps(pre, sort_keys=True, default=str).encode())
    for u, label, seconds in zip(dataset.utterances, dataset.labels, dataset.durations):
        path = Path(u.audio_path)
        try:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f"{path}\0{size}\0{mtime}\0{seconds!r}\0{label}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------- model
def masked_mean(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[N,T,D] frames -> [N,D]: the mean of each row's first ``lengths`` frames (the rest ignored)."""
    mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
    summed = (hidden * mask[..., None].to(hidden.dtype)).sum(1)
    return summed / lengths.clamp(min=1).to(hidden.device, hidden.dtype)[:, None]


class PooledSpeakerHead(nn.Module):
    """Masked mean (given ``(hidden, lengths)``) or a cached pooled row [N,D] -> dropout ->
    linear: logits [N,K]."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, features: Any) -> torch.Tensor:
        if isinstance(features, tuple):
            features = masked_mean(*features)
        return self.linear(self.dropout(features.float()))


class SpeakerClassifier(TransferModel):
    """Parts ``encoder`` (pretrained, in blocks) and ``head`` (new); ``kind`` is ``whisper``
    (inputs log-mel [N,80,3000] + ``seconds``) or ``ctc`` (log-mel [N,T,80] + ``lengths``)."""

    def __init__(
        self,
        encoder: nn.Module,
        blocks: list[tuple[str, nn.Module]],
        dim: int,
        num_classes: int,
        *,
        kind: str,
        arch: str,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.kind = kind
        self.add_part("encoder", encoder, blocks=blocks)
        self.add_part("head", PooledSpeakerHead(dim, num_classes, dropout))
        self.arch = arch
        self.feature_dim = dim
        self.num_classes = num_classes

    def forward_features(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "whisper":
            # by key: a frozen part's ModelOutput may come back from the execution plan as a plain dict
            hidden = self.run_part("encoder", inputs["features"])["last_hidden_state"]
            frames = torch.ceil(inputs["seconds"].to(torch.float64) * WHISPER_FRAMES_PER_SECOND).to(torch.int64)
            return hidden, frames.clamp(1, hidden.shape[1]).to(hidden.device)
        hidden, lengths = self.run_part("encoder", inputs["features"], inputs["lengths"])
        return hidden, lengths


@functools.cache
def windowed_whisper_encoder() -> type[nn.Module]:
    """transformers' ``WhisperEncoder`` subclassed to also take windows shorter than 30 s
    (built on first use, so registering the task does not import transformers)."""
    from transformers.modeling_outputs import BaseModelOutput
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    class WindowedWhisperEncoder(WhisperEncoder):
        """Log-mel [N,80,F] (F even, at most 3000) -> ``BaseModelOutput(last_hidden_state=[N,F/2,D])``
        with the first F/2 position embeddings. Same parameters and state-dict keys; 30 s
        windows go through transformers' own forward."""

        def forward(self, input_features: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if input_features.shape[-1] == self.config.max_source_positions * 2:
                return super().forward(input_features, *args, **kwargs)
            x = nn.functional.gelu(self.conv1(input_features))
            x = nn.functional.gelu(self.conv2(x)).permute(0, 2, 1)
            x = x + self.embed_positions.weight[: x.shape[1]]
            x = nn.functional.dropout(x, p=self.dropout, training=self.training)
            for layer in self.layers:
                if self.training and self.layerdrop > 0.0 and torch.rand([]) < self.layerdrop:
                    continue
                out = layer(x, None)
                x = out[0] if isinstance(out, tuple) else out
            return BaseModelOutput(last_hidden_state=self.layer_norm(x))

    return WindowedWhisperEncoder


def _whisper_speaker_model(whisper: nn.Module, num_classes: int, dropout: float) -> SpeakerClassifier:
    from .whisper_model import encoder_blocks

    encoder = whisper.model.encoder
    encoder.__class__ = windowed_whisper_encoder()  # the same module, also for windows shorter than 30 s
    return SpeakerClassifier(
        encoder,
        encoder_blocks(encoder),
        int(whisper.config.d_model),
        num_classes,
        kind="whisper",
        arch="whisper-encoder",
        dropout=dropout,
    )


# ---------------------------------------------------------------------- task
class SpeakerIdentificationTask(Task):
    """Speaker identification: pooled speech-encoder frames and a linear head."""

    name = TASK
    primary_metric = "accuracy"
    metric_directions = {"accuracy": "max", "macro_f1": "max", "loss": "min"}
    table_metrics = ("accuracy", "macro_f1")
    pretrained_parts = ("encoder",)
    DataOptions = SpeakerDataOptions
    ModelOptions = SpeakerModelOptions

    # ------------------------------------------------------------------ model
    def check_config(self, model: ModelConfig, data: DataConfig, *, base_dir: Path) -> list[tuple[str, str]]:
        backbones = (recognizers.WHISPER, *recognizers.CTC_BACKBONES)
        if model.backbone not in backbones:
            return [
                ("model.backbone", f"'{model.backbone}' has no speaker encoder here; choose {', '.join(backbones)}")
            ]
        if model.backbone in recognizers.CTC_BACKBONES:
            if model.weights:
                return [("model.weights", "the CTC encoder starts random or from an earlier stage (init_from)")]
            from .task import _ctc_args_problems

            return _ctc_args_problems(model.args)
        if model.args:
            return [("model.args", "whisper takes no arguments; its checkpoint fixes the architecture")]
        if model.weights is None:
            return [("model.weights", f"whisper needs weights ({recognizers.WHISPER_TINY_EN}, a folder or hf:<id>)")]
        return []

    def preprocessing(self, model: ModelConfig, *, init: Mapping[str, bool], base_dir: Path) -> dict[str, Any]:
        """As speech-recognition's: Whisper's 30 s log-mel (the checkpoint recorded for
        ``predict``), or the CTC model's log-mel [T,80]. Resolving Whisper's weights here
        fails bad weights before a run."""
        if model.backbone == recognizers.WHISPER:
            weights = model.weights or ""
            folder = recognizers.whisper_folder(weights, base_dir)  # converts tiny.en on first use
            checkpoint = weights if weights == recognizers.WHISPER_TINY_EN or isinstance(folder, str) else str(folder)
            window = float(self.model_options(model).window_seconds)
            return {"features": "whisper", "sample_rate": 16000, "checkpoint": checkpoint, "window_seconds": window}
        return {"features": "log-mel", "sample_rate": 16000, "n_mels": 80}

    def build_model(
        self, model: ModelConfig, info: dict[str, Any], *, init: Mapping[str, bool], base_dir: Path
    ) -> SpeakerClassifier:
        options: SpeakerModelOptions = self.model_options(model)
        k = len(info["classes"])
        if model.backbone in recognizers.CTC_BACKBONES:
            from .ctc import CharVocabulary, CTCConfig

            config = CTCConfig(kind=recognizers.CTC_BACKBONES[model.backbone], **model.args)
            vocabulary = CharVocabulary()
            ctc_model = recognizers.CTCModel(
                CTCConfig(**{**config.__dict__, "vocab_size": len(vocabulary)}), vocabulary
            )
            if "feature_stats" in info:
                ctc_model.set_feature_stats(info["feature_stats"]["mean"], info["feature_stats"]["std"])
            encoder = ctc_model.part("encoder")
            built = SpeakerClassifier(
                encoder.module,
                encoder.blocks,
                ctc_model.feature_dim,
                k,
                kind="ctc",
                arch=ctc_model.arch,
                dropout=options.dropout,
            )
        else:
            # predict rebuilds a run's model without model.weights: the checkpoint recorded in info
            checkpoint = model.weights or info.get("preprocessing", {}).get("checkpoint", "")
            whisper, _ = recognizers.load_pretrained_whisper(checkpoint, base_dir)
            if not init.get("encoder"):
                whisper = recognizers.random_like(whisper)
            built = _whisper_speaker_model(whisper, k, options.dropout)
        built.preprocessing = dict(info.get("preprocessing") or {})
        return built

    # ------------------------------------------------------------------ data
    def build_data(self, data: DataConfig, *, preprocessing: dict[str, Any], base_dir: Path, seed: int) -> TaskData:
        options: SpeakerDataOptions = self.data_options(data)
        spec = self.registries.datasets.get(data.dataset)
        utterances = spec.build(spec.args.model_validate(data.args), base_dir)
        by_speaker: dict[str, list[Any]] = {}
        for u in utterances:
            by_speaker.setdefault(u.speaker, []).append(u)
        if len(by_speaker) < 2:
            raise DataError(
                f"dataset '{data.dataset}' has {len(by_speaker)} speaker(s); speaker identification needs at least 2"
            )
        classes = sorted(by_speaker)
        split, warnings = split_per_speaker(
            by_speaker, val_fraction=data.val_fraction, test_fraction=data.test_fraction, seed=data.split_seed
        )
        window = preprocessing.get("window_seconds") if preprocessing["features"] == "whisper" else None
        audio = {"max_seconds": min(options.max_seconds, window or options.max_seconds), "downmix": options.downmix}
        train, val, test = (SpeakerDataset(split[k], classes, preprocessing, **audio) for k in ("train", "val", "test"))
        for dataset in (train, val, test):
            for u, seconds in zip(dataset.utterances, dataset.durations):
                if window is not None and seconds > window:
                    raise DataError(
                        f"{u.audio_path} lasts {seconds:.2f} s, longer than model.window_seconds ({window:g} s)"
                    )
        info: dict[str, Any] = {
            "classes": classes,
            "speakers": {s: {k: sum(u.speaker == s for u in split[k]) for k in split} for s in classes},
            "preprocessing": dict(preprocessing),
        }
        if preprocessing["features"] == "log-mel":
            info["feature_stats"] = train.speech.feature_stats()
        return TaskData(train, val, test, info=info, warnings=warnings)

    def collate(self, samples: Sequence[Any]) -> tuple[Any, Any]:
        return collate_speakers(samples)

    def loader(
        self, dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0
    ) -> DataLoader:
        """Length-bucketed batches (clips of similar duration together), deterministic in ``seed``."""
        from .audio import length_buckets

        batches = length_buckets(dataset.durations, batch_size, seed=seed, shuffle=shuffle)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=self.collate, num_workers=num_workers)

    # ------------------------------------------------------------------ training and evaluation
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets)

    def training_loss(self, model: Any, inputs: Any, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(inputs).float(), targets, label_smoothing=self.train_config.label_smoothing)

    def evaluation_batch(self, model: Any, batch: Any, device: torch.device) -> dict[str, Any]:
        inputs, targets = self.move_to(batch, device)
        return classifier_batch(model(inputs), targets)

    def score(self, outcomes: list[dict[str, Any]], info: dict[str, Any]) -> Evaluation:
        y_true, y_pred, loss = classifier_totals(outcomes)
        metrics, details = speaker_metrics(y_true, y_pred, list(info["classes"]))
        metrics["loss"] = loss
        return Evaluation(metrics, details)

    # ------------------------------------------------------------------ feature cache
    def cache_spec(self, model: Any) -> CacheSpec:
        return CacheSpec(layout="vector", pooling="avg")

    def targets(self, dataset: Dataset) -> torch.Tensor:
        return torch.as_tensor(dataset.labels, dtype=torch.int64)

    def dataset_fingerprint(self, dataset: Dataset) -> str:
        return files_fingerprint(dataset)

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
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """Audio has no augmented views here: every view is the clip itself, batched by duration."""
        from .audio import length_buckets

        wanted = indices.tolist()
        for batch in length_buckets([dataset.durations[i] for i in wanted], batch_size, seed=0, shuffle=False):
            rows = [wanted[j] for j in batch]
            inputs, _ = self.collate([dataset[i] for i in rows])
            yield inputs, torch.as_tensor(rows, dtype=torch.int64)

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
        """The speaker of each audio file, with its probability (and the ``top_k`` best)."""
        from .audio import load_audio
        from .speech_batches import features_of

        preprocessing = info["preprocessing"]
        classes = info["classes"]
        k = max(1, min(int(options.get("top_k", 1) or 1), len(classes)))
        device = device or torch.device("cpu")
        results = []
        model.eval()
        for item in inputs:
            if item.kind != "file":
                raise DataError("speaker-identification takes audio files, not text; drop --text")
            rate = int(preprocessing["sample_rate"])
            wave = load_audio(Path(item.value), rate, max_seconds=preprocessing.get("window_seconds"))
            features = windowed(features_of(wave, preprocessing), preprocessing)
            batch, _ = collate_speakers([(features, wave.shape[-1] / rate, 0)])
            with torch.no_grad():
                probs = model(self.move_to((batch, None), device)[0]).float().softmax(1)[0].cpu()
            top = probs.topk(k)
            results.append(
                {
                    "input": item.value,
                    "speaker": classes[int(top.indices[0])],
                    "probability": float(top.values[0]),
                    "predictions": [
                        {"speaker": classes[int(j)], "probability": float(p)} for p, j in zip(top.values, top.indices)
                    ],
                }
            )
        return results

    def render_prediction(self, result: dict[str, Any]) -> str:
        return f"{result['input']}: {result['speaker']} {result['probability']:.3f}"


def speaker_metrics(
    y_true: torch.Tensor, y_pred: torch.Tensor, classes: Sequence[str]
) -> tuple[dict[str, float], dict[str, Any]]:
    """Accuracy and macro-F1 (over the speakers present in ``y_true`` or ``y_pred``), and as
    details each speaker's accuracy (recall), F1 and count, and the confusion matrix
    (rows: true speaker, columns: predicted)."""
    k = len(classes)
    confusion = torch.zeros(k, k, dtype=torch.int64)
    if len(y_true):
        confusion.index_put_((y_true, y_pred), torch.ones_like(y_true), accumulate=True)
    tp = confusion.diag().double()
    support = confusion.sum(1).double()
    predicted = confusion.sum(0).double()
    per_speaker: dict[str, dict[str, Any]] = {}
    f1s = []
    for i, name in enumerate(classes):
        if not support[i] and not predicted[i]:
            continue
        f1 = float(2 * tp[i] / (support[i] + predicted[i]))
        f1s.append(f1)
        per_speaker[name] = {
            "accuracy": float(tp[i] / support[i]) if support[i] else None,
            "f1": f1,
            "utterances": int(support[i]),
        }
    n = int(support.sum())
    metrics = {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
    }
    details = {"per_speaker": per_speaker, "confusion": confusion.tolist(), "classes": list(classes)}
    return metrics, details
