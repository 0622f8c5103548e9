"""``speech-recognition``: a recogniser adapted to one new speaker, scored per speaker.

Splits (``data.split``) — every speaker's utterances are shuffled (``data.split_seed``) and
the last ``data.test_fraction`` of them is that speaker's test set in both modes, so an
adaptation stage never tests on what a multi-speaker stage trained on:

* ``adaptation`` (default): train = ``adaptation_utterances`` of ``target_speaker``, val =
  ``val_utterances`` more of them; test = the target's test set and every other speaker's.
  The metrics are the target's ``wer``/``cer`` and the others' ``wer_others``/``cer_others``
  (have they forgotten?); ``info["adapted_to"]`` names the target, so ``tlengine predict
  --speaker`` finds the adapted model.
* ``speakers``: train and val from every speaker but ``target_speaker`` (held out whole, if
  given), test on their test sets: training a multi-speaker base (the small CTC model).

Both sides of every score pass the same :class:`TextNormalizer` (``data.normalizer``), and
so do the training targets.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from tlengine.config import DataConfig, ModelConfig
from tlengine.errors import ConfigError, DataError
from tlengine.model import TransferModel
from tlengine.task import Evaluation, PredictInput, Task, TaskData
from torch.utils.data import DataLoader, Dataset

from . import recognizers
from .speech_batches import UtteranceDataset, collate_utterances
from .text_normalize import TextNormalizer

#: utterances shown with their transcripts in the evaluation details
SHOWN = 12


class SpeechDataOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["adaptation", "speakers"] = "adaptation"
    target_speaker: str | None = Field(None, description="the new speaker (default: the last in sorted order)")
    adaptation_utterances: int = Field(10, ge=1, description="target utterances to adapt on")
    val_utterances: int = Field(2, ge=0, description="target utterances for the best-epoch choice")
    max_seconds: float = Field(30.0, gt=0, description="longer clips are an error (Whisper hears 30 s)")
    downmix: bool = Field(False, description="average multi-channel audio to mono instead of refusing it")
    normalizer: TextNormalizer = Field(default_factory=TextNormalizer)
    forgetting_tolerance: float = Field(
        0.02, ge=0, description="how far the other speakers' WER may rise (absolute, 0.02 = 2 points)"
    )


class SpeechModelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(96, ge=1, le=440, description="Whisper: longest transcript decoded, in tokens")


class SpeechRecognitionTask(Task):
    """Speech recognition adapted to a new speaker: WER/CER per speaker, before and after."""

    name = "speech-recognition"
    primary_metric = "wer"
    table_metrics = ("wer", "cer", "wer_others")
    pretrained_parts = ("encoder", "decoder")
    DataOptions = SpeechDataOptions
    ModelOptions = SpeechModelOptions
    allows_reduced_precision = False  # adaptation moves WER by fractions of a point: fp32 throughout

    # ------------------------------------------------------------------ model
    def check_config(self, model: ModelConfig, data: DataConfig, *, base_dir: Path) -> list[tuple[str, str]]:
        if model.backbone not in recognizers.BACKBONES:
            return [
                ("model.backbone", f"'{model.backbone}' is not a recogniser; choose {', '.join(recognizers.BACKBONES)}")
            ]
        if model.backbone in recognizers.CTC_BACKBONES:
            problems = [("model.weights", "the CTC model starts random or from an earlier stage (init_from)")]
            return problems if model.weights else _ctc_args_problems(model.args)
        if model.args:
            return [("model.args", f"{model.backbone} takes no arguments; its checkpoint fixes the architecture")]
        if model.weights is None:
            named = f"{recognizers.WHISPER_TINY_EN}, " if model.backbone == recognizers.WHISPER else ""
            return [("model.weights", f"{model.backbone} needs weights ({named}a folder or hf:<id>)")]
        return []

    def part_has_weights(self, model: ModelConfig, part: str) -> bool:
        return model.weights is not None

    def preprocessing(self, model: ModelConfig, *, init: Mapping[str, bool], base_dir: Path) -> dict[str, Any]:
        """The features the recogniser takes; for a checkpoint also ``checkpoint``, where
        ``predict`` finds its architecture and tokenizer again (a named weight or hub id as
        written, a folder made absolute). Resolving it here fails bad weights before a run."""
        weights = model.weights or ""
        if model.backbone == recognizers.WHISPER:
            folder = recognizers.whisper_folder(weights, base_dir)  # converts tiny.en on first use
            checkpoint = weights if weights == recognizers.WHISPER_TINY_EN or isinstance(folder, str) else str(folder)
            return {"features": "whisper", "sample_rate": 16000, "checkpoint": checkpoint}
        if model.backbone == recognizers.WAV2VEC2:
            processor = recognizers.load_wav2vec2_processor(weights, base_dir)
            checkpoint = weights if weights.startswith("hf:") else str((base_dir / weights).resolve())
            rate = int(processor.feature_extractor.sampling_rate)
            return {"features": "waveform", "sample_rate": rate, "checkpoint": checkpoint}
        return {"features": "log-mel", "sample_rate": 16000, "n_mels": 80}

    def build_model(
        self, model: ModelConfig, info: dict[str, Any], *, init: Mapping[str, bool], base_dir: Path
    ) -> TransferModel:
        # predict rebuilds a run's model without model.weights: the checkpoint recorded in info
        checkpoint = model.weights or info.get("preprocessing", {}).get("checkpoint", "")
        if model.backbone in recognizers.CTC_BACKBONES:
            from .ctc import CharVocabulary, CTCConfig

            config = CTCConfig(kind=recognizers.CTC_BACKBONES[model.backbone], **model.args)
            vocabulary = CharVocabulary.from_json(info["vocabulary"]) if "vocabulary" in info else CharVocabulary()
            built = recognizers.CTCModel(CTCConfig(**{**config.__dict__, "vocab_size": len(vocabulary)}), vocabulary)
            if "feature_stats" in info:
                built.set_feature_stats(info["feature_stats"]["mean"], info["feature_stats"]["std"])
            return built
        if model.backbone == recognizers.WAV2VEC2:
            from .wav2vec2_model import Wav2Vec2Recognizer

            pretrained = any(init.get(p) for p in self.pretrained_parts)
            return Wav2Vec2Recognizer(*recognizers.load_wav2vec2(checkpoint, base_dir, pretrained=pretrained))
        from .whisper_model import WhisperRecognizer

        whisper, tokenizer = recognizers.load_pretrained_whisper(checkpoint, base_dir)
        if not any(init.get(p) for p in self.pretrained_parts):
            whisper = recognizers.random_like(whisper)
        options = self.model_options(model)
        return WhisperRecognizer(
            whisper, tokenizer, max_new_tokens=options.max_new_tokens, label_smoothing=self.train_config.label_smoothing
        )

    # ------------------------------------------------------------------ data
    def build_data(self, data: DataConfig, *, preprocessing: dict[str, Any], base_dir: Path, seed: int) -> TaskData:
        from .speech_data import Utterance

        options: SpeechDataOptions = self.data_options(data)
        spec = self.registries.datasets.get(data.dataset)
        utterances: list[Utterance] = spec.build(spec.args.model_validate(data.args), base_dir)
        by_speaker: dict[str, list[Utterance]] = {}
        for u in utterances:
            by_speaker.setdefault(u.speaker, []).append(u)
        if not by_speaker:
            raise DataError(f"dataset '{data.dataset}' has no utterances")
        speakers = sorted(by_speaker)
        target = options.target_speaker
        if target is not None and target not in by_speaker:
            raise ConfigError([("data.target_speaker", f"no speaker '{target}'; the data has {', '.join(speakers)}")])
        if options.split == "adaptation":
            target = target or speakers[-1]
        split = split_by_speaker(by_speaker, options, target, data, data.split_seed)
        make = lambda items, train: UtteranceDataset(  # noqa: E731
            items,
            preprocessing,
            normalizer=options.normalizer,
            max_seconds=options.max_seconds,
            downmix=options.downmix,
        )
        train, val, test = make(split["train"], True), make(split["val"], False), make(split["test"], False)
        info: dict[str, Any] = {
            "split": options.split,
            "speakers": {
                s: {k: sum(u.speaker == s for u in split[k]) for k in ("train", "val", "test")} for s in speakers
            },
            "normalizer": options.normalizer.model_dump(),
            "forgetting_tolerance": options.forgetting_tolerance,
            "preprocessing": dict(preprocessing),
        }
        if options.split == "adaptation":
            info["adapted_to"] = target
            info["adaptation_utterances"] = options.adaptation_utterances
        if preprocessing["features"] == "log-mel":
            from .ctc import CharVocabulary

            info["vocabulary"] = CharVocabulary().to_json()
            info["feature_stats"] = train.feature_stats()
        return TaskData(train, val, test, info=info)

    def collate(self, samples: Sequence[Any]) -> tuple[Any, Any]:
        return collate_utterances(samples)

    def loader(
        self, dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0
    ) -> DataLoader:
        """Length-bucketed batches (clips of similar duration together), deterministic in ``seed``."""
        from .audio import length_buckets

        batches = length_buckets(dataset.durations, batch_size, seed=seed, shuffle=shuffle)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=self.collate, num_workers=num_workers)

    # ------------------------------------------------------------------ training and evaluation
    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        return outputs

    def training_loss(self, model: Any, inputs: Any, targets: Any) -> torch.Tensor:
        return model(inputs, targets)

    def evaluation_batch(self, model: Any, batch: Any, device: torch.device) -> dict[str, list[str]]:
        inputs, targets = self.move_to(batch, device)
        return {
            "hyps": list(model.transcribe(inputs)),
            "refs": list(targets["texts"]),
            "speakers": list(targets["speakers"]),
        }

    def score(self, outcomes: list[dict[str, list[str]]], info: dict[str, Any]) -> Evaluation:
        from .scoring import error_rates, per_speaker_error_rates

        hyps = [h for o in outcomes for h in o["hyps"]]
        refs = [r for o in outcomes for r in o["refs"]]
        speakers = [s for o in outcomes for s in o["speakers"]]
        normalizer = TextNormalizer.model_validate(info.get("normalizer", {}))
        per_speaker = per_speaker_error_rates(refs, hyps, speakers, normalizer)
        target = info.get("adapted_to")
        mine = [i for i, s in enumerate(speakers) if target is None or s == target]
        others = [i for i, s in enumerate(speakers) if target is not None and s != target]
        scored = error_rates([refs[i] for i in mine], [hyps[i] for i in mine], normalizer)
        metrics = {"wer": scored["wer"], "cer": scored["cer"]}
        if others:
            rest = error_rates([refs[i] for i in others], [hyps[i] for i in others], normalizer)
            metrics |= {"wer_others": rest["wer"], "cer_others": rest["cer"]}
        shown = [{"speaker": s, "reference": r, "hypothesis": h} for s, r, h in zip(speakers, refs, hyps)][:SHOWN]
        return Evaluation(metrics, details={"per_speaker": per_speaker, "samples": shown, "target": target})

    def write_reports(self, run_dir: Path, arms: dict[str, Evaluation], info: dict[str, Any]) -> list[Path]:
        from .reports import write_adaptation_reports

        return write_adaptation_reports(run_dir, arms, info)

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
        """The transcript of each audio file (by the model the run adapted, or its base)."""
        from .audio import load_audio
        from .speech_batches import features_of

        preprocessing = info["preprocessing"]
        device = device or torch.device("cpu")
        results = []
        model.eval()
        for item in inputs:
            if item.kind != "file":
                raise DataError("speech-recognition transcribes audio files, not text; drop --text")
            wave = load_audio(Path(item.value), preprocessing["sample_rate"])
            batch = collate_utterances([(features_of(wave, preprocessing), "", "")])[0]
            with torch.no_grad():
                text = model.transcribe(self.move_to((batch, None), device)[0])[0]
            results.append({"input": item.value, "transcript": text, "speaker": info.get("adapted_to")})
        return results

    def render_prediction(self, result: dict[str, Any]) -> str:
        return f"{result['input']}: {result['transcript']}"


def split_by_speaker(
    by_speaker: dict[str, list[Any]], options: SpeechDataOptions, target: str | None, data: DataConfig, seed: int
) -> dict[str, list[Any]]:
    """The utterances of each split (see the module docstring); DataError when a speaker has too few."""
    out: dict[str, list[Any]] = {"train": [], "val": [], "test": []}
    for speaker in sorted(by_speaker):
        items = list(by_speaker[speaker])
        random.Random(f"{seed}:{speaker}").shuffle(items)
        n_test = max(1, round(len(items) * data.test_fraction))
        pool, test = items[:-n_test], items[-n_test:]
        if options.split == "speakers":
            if speaker == target:
                continue
            n_val = round(len(pool) * data.val_fraction)
            out["val"] += pool[:n_val]
            out["train"] += pool[n_val:]
            out["test"] += test
            continue
        out["test"] += test
        if speaker == target:
            need = options.adaptation_utterances + options.val_utterances
            if len(pool) < need:
                raise DataError(
                    f"speaker '{speaker}' has {len(pool)} utterances outside its test set, and "
                    f"data.adaptation_utterances + data.val_utterances = {need}"
                )
            out["train"] += pool[: options.adaptation_utterances]
            out["val"] += pool[options.adaptation_utterances : need]
    if not out["train"]:
        raise DataError("no training utterances are left after the split")
    return out


def _ctc_args_problems(args: dict[str, Any]) -> list[tuple[str, str]]:
    from .ctc import CTCConfig

    known = set(CTCConfig.__dataclass_fields__) - {"kind", "vocab_size"}
    return [
        (f"model.args.{k}", f"unknown; the CTC model takes {', '.join(sorted(known))}") for k in args if k not in known
    ]
