"""Hook implementations of the builtin ASR speaker-adaptation plugin.

Registered through tlengine's own ``[project.entry-points.tlengine]``, exactly as a
third-party plugin would be. The adaptation methods (``lhuc``, ``adapter``, ``fine-tune``
of the top layers, ``zero-shot`` as the "before") are the core's strategies: any task
whose model lists its hidden layers can use them.
"""

from __future__ import annotations

from pathlib import Path

from tlengine import hookimpl
from tlengine.registry import Registry

PIPELINES_DIR = Path(__file__).parent / "pipelines"
PIPELINES = {
    "asr-adaptation-quickstart": "Whisper tiny.en adapted to a new synthetic speaker by fine-tune, LHUC and "
    "adapters; WER before/after, the other speakers held (needs the [pretrained] extra and espeak-ng)",
    "asr-ctc-adaptation": "a small CTC recogniser trained on five synthetic speakers, then adapted to a sixth "
    "(needs espeak-ng)",
    "speaker-id-quickstart": "who of six synthetic speakers is speaking: Whisper tiny.en's encoder, cached "
    "(feature-extraction) vs its top layer fine-tuned vs scratch (needs the [pretrained] extra and espeak-ng)",
    "speaker-id-channel-shift": "domain adaptation from clean to telephone-channel speech: DANN, CORAL, MMD vs "
    "source-only for speaker identification on Whisper tiny.en, three seeds (needs the [pretrained] extra and espeak-ng)",
}


@hookimpl
def tlengine_register_tasks(tasks: Registry) -> None:
    from .task import SpeechRecognitionTask

    tasks.add(
        SpeechRecognitionTask.name,
        SpeechRecognitionTask,
        description="speech recognition adapted to a new speaker (Whisper or a small CTC model), WER/CER per speaker",
    )
    from .speaker_id import SpeakerIdentificationTask

    tasks.add(
        SpeakerIdentificationTask.name,
        SpeakerIdentificationTask,
        description="who is speaking: a speech encoder's frames mean-pooled under their mask, a linear head",
    )


@hookimpl
def tlengine_register_backbones(backbones: Registry) -> None:
    from .recognizers import CTC_BACKBONES, WAV2VEC2, WHISPER, CTCModel, load_pretrained_whisper, load_wav2vec2

    backbones.add(WHISPER, load_pretrained_whisper, description="a transformers Whisper checkpoint (encoder-decoder)")
    backbones.add(WAV2VEC2, load_wav2vec2, description="a transformers Wav2Vec2-CTC checkpoint (encoder + CTC layer)")
    for name, kind in CTC_BACKBONES.items():
        backbones.add(name, CTCModel, description=f"a small {kind} CTC recogniser on log-mel, trained from scratch")


@hookimpl
def tlengine_register_datasets(datasets: Registry) -> None:
    from .datasets import register_datasets

    register_datasets(datasets)


@hookimpl
def tlengine_register_weights(weights: Registry) -> None:
    from .recognizers import NAMED_WHISPER

    weights.add(NAMED_WHISPER.name, NAMED_WHISPER, description=NAMED_WHISPER.description)


@hookimpl
def tlengine_register_pipelines(pipelines: Registry) -> None:
    for name, description in PIPELINES.items():
        path = PIPELINES_DIR / f"{name}.yaml"
        if path.is_file():
            pipelines.add(name, path, description=description)
