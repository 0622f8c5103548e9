"""The speech datasets: what each builds is a list of :class:`.speech_data.Utterance`."""

from __future__ import annotations

from typing import Any

from tlengine.data.spec import DatasetSpec

from . import speech_data

SPEECH_DATASETS = (
    DatasetSpec(
        name="speech-manifest",
        task="speech-recognition",
        tasks=("speaker-identification",),
        args=speech_data.ManifestArgs,
        build=speech_data.build_manifest,
        description="a JSONL manifest: {audio_filepath, text, speaker[, duration]} per line (NeMo's format)",
    ),
    DatasetSpec(
        name="speaker-folder",
        task="speech-recognition",
        tasks=("speaker-identification",),
        args=speech_data.SpeakerFolderArgs,
        build=speech_data.build_speaker_folder,
        description="<speaker>/<clip>.wav|.flac with a transcripts.tsv",
    ),
    DatasetSpec(
        name="synthetic-speech",
        task="speech-recognition",
        tasks=("speaker-identification",),
        args=speech_data.SyntheticSpeechArgs,
        build=speech_data.build_synthetic_speech,
        description="multi-speaker English spoken by espeak-ng (accents, voices, pitch and speed as speakers)",
    ),
)


def register_datasets(registry: Any) -> None:
    """Add the speech datasets to a dataset :class:`tlengine.registry.Registry`."""
    for spec in SPEECH_DATASETS:
        registry.add(spec.name, spec, description=spec.description)
