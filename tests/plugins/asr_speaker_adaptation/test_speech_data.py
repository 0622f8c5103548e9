"""ASR speaker-adaptation data: manifests and speaker folders and their errors, reading audio
(and its errors), features, padding, length buckets, and the espeak-ng synthetic speakers.
Every file is tiny and made in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from pydantic import ValidationError
from tlengine.errors import DataError
from tlengine_plugins.asr_speaker_adaptation import speech_data
from tlengine_plugins.asr_speaker_adaptation.audio import (
    length_buckets,
    load_audio,
    log_mel,
    num_frames,
    pad_batch,
)
from tlengine_plugins.asr_speaker_adaptation.speech_data import (
    DEFAULT_SPEAKERS,
    ManifestArgs,
    SpeakerFolderArgs,
    SpeakerVoice,
    SyntheticSpeechArgs,
    Utterance,
    build_manifest,
    build_speaker_folder,
    generate_sentences,
    read_manifest,
    read_speaker_folder,
    speaker_voices,
    synthesize_speakers,
)
from tlengine_plugins.asr_speaker_adaptation.text_normalize import TextNormalizer


def wav(path: Path, seconds: float = 0.1, rate: int = 16000, channels: int = 1, subtype: str = "PCM_16") -> Path:
    """A quiet 440 Hz tone (stereo: the right channel at half amplitude)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * rate))) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    data = tone if channels == 1 else np.stack([tone * (1 if c == 0 else 0.5) for c in range(channels)], axis=1)
    sf.write(str(path), data.astype(np.float32), rate, subtype=subtype)
    return path


def one_sentence(message: str) -> None:
    assert "\n" not in message and message.strip() == message and message


def line(**obj) -> str:
    return json.dumps(obj)


# --------------------------------------------------------------------------- manifest
def test_manifest_reads_paths_relative_to_its_folder(tmp_path: Path) -> None:
    wav(tmp_path / "data" / "clips" / "a.wav")
    wav(tmp_path / "data" / "clips" / "b.flac")
    manifest = tmp_path / "data" / "train.jsonl"
    manifest.write_text(
        "\ufeff"
        + line(audio_filepath="clips/a.wav", text="  Hello,\tworld!  ", speaker="alice", duration=0.1, lang="en")
        + "\n\n"
        + line(audio_filepath="clips/b.flac", text="Two", speaker=7)
        + "\r\n",
        encoding="utf-8",
    )
    utts = read_manifest(Path("data/train.jsonl"), tmp_path)
    assert utts == [
        Utterance((tmp_path / "data/clips/a.wav").resolve(), "Hello, world!", "alice", 0.1),
        Utterance((tmp_path / "data/clips/b.flac").resolve(), "Two", "7", None),
    ]
    assert build_manifest(ManifestArgs(path="data/train.jsonl"), tmp_path) == utts


@pytest.mark.parametrize(
    "bad, expected",
    [
        ('{"audio_filepath": "a.wav", "text": "hi"', "is not valid JSON"),
        ('["a.wav", "hi", "alice"]', "is a JSON array, not an object"),
        (line(audio_filepath="a.wav", speaker="alice"), "has no 'text' key"),
        (line(text="hi", speaker="alice"), "has no 'audio_filepath' key"),
        (line(audio_filepath="a.wav", text="hi"), "has no 'speaker' key"),
        (line(audio_filepath="a.wav", text="   ", speaker="alice"), "has an empty text"),
        (line(audio_filepath="a.wav", text=5, speaker="alice"), "'text' is a JSON number, not a string"),
        (line(audio_filepath="a.wav", text="hi", speaker=""), "has an empty speaker"),
        (line(audio_filepath="a.wav", text="hi", speaker="a", duration=-1), "'duration' must be a number"),
        (line(audio_filepath="missing.wav", text="hi", speaker="alice"), "missing.wav does not exist"),
        (line(audio_filepath="../outside.wav", text="hi", speaker="alice"), "is outside the data root"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path: Path, bad: str, expected: str) -> None:
    root = tmp_path / "root"
    wav(root / "a.wav")
    wav(tmp_path / "outside.wav")
    manifest = root / "m.jsonl"
    manifest.write_text(line(audio_filepath="a.wav", text="fine", speaker="alice") + "\n" + bad + "\n")
    with pytest.raises(DataError) as err:
        read_manifest(manifest, root)
    message = str(err.value)
    one_sentence(message)
    assert f"manifest {manifest} line 2" in message and expected in message


def test_manifest_empty_missing_and_outside_root(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(DataError, match="has no utterances"):
        read_manifest(tmp_path / "empty.jsonl", tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(Path("nope.jsonl"), tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="outside the data root"):
        read_manifest(tmp_path / "empty.jsonl", tmp_path / "sub")
    with pytest.raises(ValidationError):
        ManifestArgs(path="m.jsonl", extra=1)


# --------------------------------------------------------------------------- speaker folder
def speaker_folder(root: Path, transcripts: str) -> Path:
    wav(root / "alice" / "one.wav", seconds=0.25)
    wav(root / "alice" / "two.flac", seconds=0.5)
    wav(root / "bob" / "x.wav", seconds=0.1)
    (root / "notes.txt").write_text("ignored")
    wav(root / "bob" / ".x.tmp.wav")  # hidden: an interrupted write, ignored
    (root / ".cache").mkdir()
    wav(root / ".cache" / "y.wav")
    (root / "transcripts.tsv").write_text(transcripts, encoding="utf-8")
    return root


GOOD_TSV = "path\ttext\nalice/one.wav\tHello there.\n\nbob/x.wav\tA\ttab inside\nalice/two.flac\t Good  bye \n"


def test_speaker_folder(tmp_path: Path) -> None:
    folder = speaker_folder(tmp_path / "voices", GOOD_TSV)
    utts = read_speaker_folder(folder)
    assert [(u.audio_path.relative_to(folder.resolve()).as_posix(), u.text, u.speaker) for u in utts] == [
        ("alice/one.wav", "Hello there.", "alice"),
        ("bob/x.wav", "A tab inside", "bob"),
        ("alice/two.flac", "Good bye", "alice"),
    ]
    assert [u.duration for u in utts] == pytest.approx([0.25, 0.1, 0.5])
    assert build_speaker_folder(SpeakerFolderArgs(path="voices"), tmp_path) == utts


@pytest.mark.parametrize(
    "tsv, expected",
    [
        ("alice/one.wav\thi\nalice/two.flac\tyo\n", "bob/x.wav has no line in"),
        (GOOD_TSV + "bob/gone.wav\tlost\n", "line 6 names bob/gone.wav, but"),
        (GOOD_TSV + "bob/x.wav\tagain\n", "line 6 lists bob/x.wav again (it is on line 4 already)"),
        ("alice/one.wav hi\n", "line 1 has no tab"),
        ("one.wav\thi\n", "line 1: 'one.wav' is not <speaker>/<file>"),
        ("alice/one.mp3\thi\n", "is not <speaker>/<file> with extension .wav or .flac"),
        ("alice/one.wav\t  \n", "line 1 has an empty transcript"),
        ("../one.wav\thi\n", "is outside the speaker folder"),
    ],
)
def test_speaker_folder_errors(tmp_path: Path, tsv: str, expected: str) -> None:
    folder = speaker_folder(tmp_path / "voices", tsv)
    with pytest.raises(DataError) as err:
        read_speaker_folder(folder)
    one_sentence(str(err.value))
    assert expected in str(err.value) and "voices" in str(err.value)


def test_speaker_folder_without_transcripts(tmp_path: Path) -> None:
    wav(tmp_path / "alice" / "a.wav")
    with pytest.raises(DataError, match="has no transcripts.tsv"):
        read_speaker_folder(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        read_speaker_folder(tmp_path / "nope")


# --------------------------------------------------------------------------- audio
def test_load_audio_mono_and_resampled(tmp_path: Path) -> None:
    same = load_audio(wav(tmp_path / "a.wav", seconds=0.5), 16000)
    assert same.dtype == torch.float32 and same.shape == (8000,)
    assert float(same.abs().max()) == pytest.approx(0.5, abs=1e-3)
    resampled = load_audio(wav(tmp_path / "b.wav", seconds=1.0, rate=22050), 16000)
    assert resampled.shape == (16000,) and float(resampled.abs().max()) <= 1.0
    loud = tmp_path / "loud.wav"
    sf.write(str(loud), np.full(100, 3.0, dtype=np.float32), 16000, subtype="FLOAT")
    assert float(load_audio(loud, 16000).max()) == 1.0  # clamped


def test_load_audio_downmix(tmp_path: Path) -> None:
    path = wav(tmp_path / "stereo.wav", channels=2)
    left = sf.read(str(path), dtype="float32")[0][:, 0]
    mono = load_audio(path, 16000, downmix=True)
    assert torch.allclose(mono, torch.from_numpy(left) * 0.75, atol=1e-4)


def test_load_audio_errors(tmp_path: Path) -> None:
    text = tmp_path / "text.wav"
    text.write_text("this is not audio")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    cases = [
        (text, {}, "is not a readable audio file (Format not recognised)"),
        (
            wav(tmp_path / "stereo.wav", channels=2),
            {},
            "has 2 channels but speech must be mono (set downmix to average the channels)",
        ),
        (empty, {}, "is empty (it has no samples)"),
        (zero, {}, "is empty (0 bytes)"),
        (wav(tmp_path / "long.wav", seconds=2.0), {"max_seconds": 1.5}, "is 2.00 s long, more than the 1.5 s allowed"),
        (tmp_path / "missing.flac", {}, "does not exist"),
    ]
    for path, kwargs, expected in cases:
        with pytest.raises(DataError) as err:
            load_audio(path, 16000, **kwargs)
        one_sentence(str(err.value))
        assert str(err.value) == f"audio file {path} {expected}"
    load_audio(tmp_path / "long.wav", 16000, max_seconds=2.0)  # exactly the limit is fine


def test_log_mel_and_pad_batch() -> None:
    a, b = torch.randn(16000) * 0.1, torch.randn(8000) * 0.1
    feats = log_mel(a, 16000)
    assert feats.shape == (80, num_frames(16000, 16000)) == (80, 101)
    batch, lengths = pad_batch([a, b])
    assert batch.shape == (2, 16000) and lengths.tolist() == [16000, 8000] and float(batch[1, 8000:].abs().sum()) == 0
    mel = log_mel(batch, 16000, n_mels=40)
    assert mel.shape == (2, 40, 101) and num_frames(lengths, 16000).tolist() == [101, 51]
    assert torch.allclose(mel[0], log_mel(a, 16000, n_mels=40), atol=1e-4)
    assert torch.isfinite(log_mel(torch.zeros(400), 16000)).all()  # silence hits the floor, not -inf
    padded, lengths = pad_batch([torch.ones(3, 2), torch.ones(1, 2)], padding_value=-1.0)
    assert padded.shape == (2, 3, 2) and padded[1, 1:].eq(-1).all() and lengths.tolist() == [3, 1]


def test_length_buckets_cover_every_index_once_deterministically() -> None:
    lengths = [(i * 37) % 101 for i in range(503)]
    batches = length_buckets(lengths, 8, seed=3, shuffle=True, bucket_batches=5)
    assert sorted(i for b in batches for i in b) == list(range(503))
    assert all(1 <= len(b) <= 8 for b in batches) and len(batches) == 63  # ceil(503 / 8)
    assert batches == length_buckets(lengths, 8, seed=3, shuffle=True, bucket_batches=5)
    assert batches != length_buckets(lengths, 8, seed=4, shuffle=True, bucket_batches=5)
    for b in batches:  # sorted by length inside a batch
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)
    ordered = length_buckets(lengths, 8, seed=0, shuffle=False)
    flat = [i for b in ordered for i in b]
    assert sorted(flat) == list(range(503)) and [lengths[i] for i in flat] == sorted(lengths)
    assert length_buckets([], 4, seed=0, shuffle=True) == []


def test_length_buckets_match_text_classification_sampler() -> None:
    from tlengine_plugins.text_classification.batches import LengthBucketBatchSampler

    lengths = [(i * 13) % 29 for i in range(1234)]
    for shuffle in (True, False):
        expected = list(LengthBucketBatchSampler(lengths, 7, shuffle=shuffle, seed=5))
        assert length_buckets(lengths, 7, seed=5, shuffle=shuffle) == expected


# --------------------------------------------------------------------------- synthetic speech
def test_sentences_are_deterministic_short_and_hold_numbers() -> None:
    sentences = generate_sentences(200, seed=1)
    assert sentences == generate_sentences(200, seed=1)
    assert sentences[:50] == generate_sentences(50, seed=1)
    assert sentences != generate_sentences(200, seed=2)
    assert len(set(sentences)) == 200
    assert all(4 <= len(s.split()) <= 10 for s in sentences)
    assert all(s[0].isupper() or s[0].isdigit() for s in sentences)
    with_digits = [s for s in sentences if any(c.isdigit() for c in s)]
    assert 30 <= len(with_digits) <= 120
    norm = TextNormalizer()
    assert not any(c.isdigit() for s in with_digits for c in norm(s))


def test_speaker_voices_are_distinct_and_validated() -> None:
    assert len(DEFAULT_SPEAKERS) == 8
    voices = speaker_voices(20)
    assert voices[:8] == list(DEFAULT_SPEAKERS)
    assert len({v.name for v in voices}) == 20
    assert len({(v.voice, v.variant, v.pitch, v.speed) for v in voices}) == 20
    with pytest.raises(ValueError, match="pitch must be 0-99"):
        SpeakerVoice("x", "en-us", "m1", 120, 150)
    with pytest.raises(ValueError, match="folder name"):
        SpeakerVoice("../x", "en-us", "m1", 50, 150)
    with pytest.raises(ValidationError):
        SyntheticSpeechArgs(speakers=0)
    with pytest.raises(ValidationError):
        SyntheticSpeechArgs(voices=3)
    assert SyntheticSpeechArgs().speakers == 6


def test_synthesize_speakers_writes_loadable_speech_and_reuses_it(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "synth"
    utts = synthesize_speakers(out, speakers=3, utterances_per_speaker=2, seed=0)
    assert [u.speaker for u in utts] == ["us-f2", "us-f2", "scot-m3", "scot-m3", "rp-f4", "rp-f4"]
    assert [u.text for u in utts] == generate_sentences(6, seed=0)
    assert read_manifest(out / "manifest.jsonl", out) == utts
    for u in utts:
        wave = load_audio(u.audio_path, 16000, max_seconds=10)
        assert wave.shape[0] == pytest.approx(u.duration * 16000, abs=2) and float(wave.abs().max()) > 0.05
    mtimes = {u.audio_path: u.audio_path.stat().st_mtime_ns for u in utts}

    def no_espeak(*args, **kwargs):
        raise AssertionError("espeak-ng ran although the folder holds the same generation")

    monkeypatch.setattr(speech_data, "_speak", no_espeak)
    assert synthesize_speakers(out, speakers=3, utterances_per_speaker=2, seed=0) == utts
    assert {u.audio_path: u.audio_path.stat().st_mtime_ns for u in utts} == mtimes
    monkeypatch.undo()

    voice = SpeakerVoice("quick", "en-us", "m3", 40, 220)
    other = synthesize_speakers(out, speakers=[voice], utterances_per_speaker=1, seed=0, sentences=["Hi 42."])
    assert [(u.speaker, u.text) for u in other] == [("quick", "Hi 42.")]
    assert read_manifest(out / "manifest.jsonl", out) == other


def test_synthesize_speakers_without_espeak(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(speech_data.shutil, "which", lambda name: None)
    with pytest.raises(DataError) as err:
        synthesize_speakers(tmp_path, speakers=1, utterances_per_speaker=1, seed=0)
    assert str(err.value) == (
        "espeak-ng is not installed; install it with `apt-get install espeak-ng` (it speaks the synthetic speech)"
    )


def test_synthesize_speakers_refuses_unknown_variant(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no voice variant nosuchvariant"):
        synthesize_speakers(
            tmp_path, speakers=[SpeakerVoice("x", "en-us", "nosuchvariant", 50, 150)], utterances_per_speaker=1, seed=0
        )
