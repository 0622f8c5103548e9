"""Transcribed speech by speaker: the :class:`Utterance` record and its three sources.

* :func:`read_manifest`: a JSONL manifest (NeMo style), one utterance per line::

      {"audio_filepath": "alice/0001.wav", "text": "Hello there.", "speaker": "alice", "duration": 1.93}

  ``audio_filepath`` is relative to the manifest's folder (an absolute path is accepted if
  it lies inside the data root) and may not lead out of the data root; ``duration``
  (seconds) is optional; ``speaker`` is a string (an integer is read as its decimal
  digits); any other keys are ignored.
* :func:`read_speaker_folder`: a folder with one sub-folder per speaker holding its clips,
  and a ``transcripts.tsv`` at the top::

      voices/transcripts.tsv          speaker/file<TAB>transcript, one clip per line
      voices/alice/0001.wav
      voices/bob/hello.flac

  Each non-blank line of ``transcripts.tsv`` (UTF-8) is ``<speaker>/<file>.wav`` (or
  ``.flac``) a tab and the transcript (the rest of the line, tabs included). An optional
  first line ``path<TAB>text`` (first cell ``path``, ``audio``, ``file`` or
  ``audio_filepath``, any case) is a header and skipped. The speaker is the sub-folder's
  name. Every clip needs exactly one line and every line its clip (hidden files and
  folders, starting with ``.``, and files of other extensions are ignored).
* :func:`synthesize_speakers`: multi-speaker synthetic speech spoken by espeak-ng
  (distinct voices, variants, pitches and speeds: :data:`DEFAULT_SPEAKERS`), from
  deterministic sentences (:func:`generate_sentences`), cached on disk with a manifest.

Conventions for every source: a transcript is stripped and its inner whitespace runs
collapsed to one space; an empty transcript is an error (it is *not* normalised here:
:mod:`.text_normalize` is the task's job); audio paths are resolved and must exist.
Every problem is a DataError, one sentence naming the file and the line.

The pydantic argument models :class:`ManifestArgs`, :class:`SpeakerFolderArgs` and
:class:`SyntheticSpeechArgs` and their ``build_*(args, root) -> list[Utterance]`` functions
are what the plugin registers as datasets.

This module imports no torch (audio headers are read with soundfile), so registering the
datasets stays cheap.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tlengine.atomic import write_text
from tlengine.data import resolve_under
from tlengine.errors import DataError

from .channel import ChannelArgs, channel_copy

__all__ = [
    "AUDIO_EXTENSIONS",
    "TRANSCRIPTS_FILE",
    "MANIFEST_FILE",
    "Utterance",
    "read_manifest",
    "read_speaker_folder",
    "SpeakerVoice",
    "DEFAULT_SPEAKERS",
    "speaker_voices",
    "generate_sentences",
    "synthesize_speakers",
    "ManifestArgs",
    "SpeakerFolderArgs",
    "SyntheticSpeechArgs",
    "build_manifest",
    "build_speaker_folder",
    "build_synthetic_speech",
    "synthetic_speech_dir",
]

#: Audio file extensions a speaker folder may hold (lower-case).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac")
#: The transcript file at the top of a speaker folder.
TRANSCRIPTS_FILE = "transcripts.tsv"
#: The manifest :func:`synthesize_speakers` writes (last, so its presence means "complete").
MANIFEST_FILE = "manifest.jsonl"
_SYNTHESIS_FILE = "synthesis.json"
_SYNTHESIS_FORMAT = 1
_HEADER_CELLS = {"path", "audio", "file", "audio_filepath"}
_SPACES = re.compile(r"\s+")


@dataclass
class Utterance:
    """One transcribed clip.

    audio_path: the audio file, resolved (absolute).
    text: the transcript as written (whitespace collapsed, otherwise verbatim: case,
        punctuation and digits are the normaliser's business).
    speaker: who speaks (a speaker id; a folder name for speaker folders).
    duration: length in seconds if known (a manifest may give it; speaker folders and
        synthetic speech read it from the header), else None.
    """

    audio_path: Path
    text: str
    speaker: str
    duration: float | None = None


# --------------------------------------------------------------------------- helpers
def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _decode(path: Path, what: str) -> str:
    """The file's UTF-8 text (a byte-order mark is dropped); DataError naming the bad line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{what} {path} line {line} is not UTF-8 text ({exc.reason})") from None


def _lines(content: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of the non-blank lines."""
    for number, line in enumerate(content.split("\n"), 1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}.get(type(value), "value")


def _header_duration(path: Path) -> float:
    """Seconds of audio from the file's header; DataError naming the file if it is not audio."""
    from .audio import audio_duration  # torch stays out of registration

    return audio_duration(path)


# --------------------------------------------------------------------------- manifest
def read_manifest(path: Path, root: Path) -> list[Utterance]:
    """The utterances of a JSONL manifest (see the module docstring for the format).

    path: the manifest, absolute or relative to ``root``; it must lie inside ``root``.
    root: the data root: no manifest or audio path may lead out of it.

    DataError naming the file and line for: a line that is not a JSON object, a missing
    ``audio_filepath``/``text``/``speaker`` key or one of the wrong type, an empty text or
    speaker, a negative duration, an audio path outside ``root``, a missing audio file; and
    for a manifest with no utterances. Audio files are not opened (see :func:`.audio.load_audio`).
    """
    root = Path(root).resolve()
    manifest = resolve_under(root, path, what="manifest")
    if not manifest.is_file():
        raise DataError(f"manifest {manifest} {'is not a file' if manifest.exists() else 'does not exist'}")
    out: list[Utterance] = []
    for number, line in _lines(_decode(manifest, "manifest")):
        where = f"manifest {manifest} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where} is a JSON {_json_type(obj)}, not an object with audio_filepath, text and speaker")
        for key in ("audio_filepath", "text", "speaker"):
            if key not in obj:
                raise DataError(f"{where} has no '{key}' key (it has: {', '.join(obj) or 'none'})")
        rel, text, speaker = obj["audio_filepath"], obj["text"], obj["speaker"]
        if not isinstance(rel, str) or not rel.strip():
            raise DataError(f"{where}: 'audio_filepath' must be a non-empty string, not {json.dumps(rel)}")
        if not isinstance(text, str):
            raise DataError(f"{where}: 'text' is a JSON {_json_type(text)}, not a string")
        if isinstance(speaker, int) and not isinstance(speaker, bool):
            speaker = str(speaker)
        if not isinstance(speaker, str):
            raise DataError(f"{where}: 'speaker' is a JSON {_json_type(speaker)}, not a string")
        text, speaker = _clean(text), speaker.strip()
        if not text:
            raise DataError(f"{where} has an empty text")
        if not speaker:
            raise DataError(f"{where} has an empty speaker")
        duration = obj.get("duration")
        if duration is not None:
            if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration >= 0:
                raise DataError(f"{where}: 'duration' must be a number of seconds >= 0, not {json.dumps(duration)}")
            duration = float(duration)
        try:
            audio = resolve_under(root, manifest.parent / rel.strip(), what="audio path")
        except DataError:
            raise DataError(f"{where}: audio path '{rel}' is outside the data root {root}") from None
        if not audio.is_file():
            raise DataError(f"{where}: audio file {audio} {'is not a file' if audio.exists() else 'does not exist'}")
        out.append(Utterance(audio, text, speaker, duration))
    if not out:
        raise DataError(f"manifest {manifest} has no utterances")
    return out


# --------------------------------------------------------------------------- speaker folder
def read_speaker_folder(folder: Path) -> list[Utterance]:
    """The utterances of a speaker folder (layout and ``transcripts.tsv`` format: module docstring).

    Utterances come in ``transcripts.tsv`` line order; durations are read from the audio
    headers (an unreadable clip is an error here already). No path may lead out of ``folder``.

    DataError naming the file (and line) for: no folder or no ``transcripts.tsv``, a line
    without a tab, a path that is not ``<speaker>/<file>.wav|.flac``, an empty transcript,
    a clip listed twice, a line whose clip does not exist, a clip without a line, a clip
    that is not readable audio, and a folder with no utterances.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise DataError(f"speaker folder {folder} {'is not a folder' if folder.exists() else 'does not exist'}")
    tsv = folder / TRANSCRIPTS_FILE
    if not tsv.is_file():
        raise DataError(
            f"speaker folder {folder} has no {TRANSCRIPTS_FILE} (one '<speaker>/<file>.wav<TAB>transcript' "
            "line per clip)"
        )
    listed: dict[Path, int] = {}
    out: list[Utterance] = []
    for index, (number, line) in enumerate(_lines(_decode(tsv, "transcript file"))):
        where = f"transcript file {tsv} line {number}"
        if "\t" not in line:
            raise DataError(f"{where} has no tab (each line is <speaker>/<file>.wav<TAB>transcript)")
        cell, text = line.split("\t", 1)
        cell = cell.strip()
        if index == 0 and cell.lower() in _HEADER_CELLS:
            continue
        posix = PurePosixPath(cell.replace("\\", "/"))
        parts = posix.parts
        if len(parts) != 2 or posix.suffix.lower() not in AUDIO_EXTENSIONS:
            raise DataError(f"{where}: '{cell}' is not <speaker>/<file> with extension {' or '.join(AUDIO_EXTENSIONS)}")
        try:
            audio = resolve_under(folder, "/".join(parts), what="audio path")
        except DataError:
            raise DataError(f"{where}: audio path '{cell}' is outside the speaker folder {folder}") from None
        if audio in listed:
            raise DataError(f"{where} lists {cell} again (it is on line {listed[audio]} already)")
        listed[audio] = number
        text = _clean(text)
        if not text:
            raise DataError(f"{where} has an empty transcript")
        if not audio.is_file():
            raise DataError(f"{where} names {cell}, but {audio} does not exist")
        out.append(Utterance(audio, text, parts[0], None))
    for speaker_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for clip in sorted(speaker_dir.iterdir()):
            if clip.name.startswith(".") or clip.suffix.lower() not in AUDIO_EXTENSIONS:
                continue  # hidden files (editor backups, interrupted writes) and non-audio files are ignored
            if clip.is_file() and clip.resolve() not in listed:
                raise DataError(f"audio file {clip} has no line in {tsv}")
    if not out:
        raise DataError(f"speaker folder {folder} has no utterances ({tsv} lists no clips)")
    for utt in out:
        utt.duration = _header_duration(utt.audio_path)
    return out


# --------------------------------------------------------------------------- synthetic speech
@dataclass(frozen=True)
class SpeakerVoice:
    """One synthetic speaker: an espeak-ng voice, a voice variant, a pitch and a speed.

    name: the speaker id (also its folder name: letters, digits, ``-``, ``_``, ``.``).
    voice: espeak-ng voice (``espeak-ng --voices=en``), e.g. ``en-us``, ``en-gb-scotland``.
    variant: espeak-ng variant (``espeak-ng --voices=variant``), e.g. ``m3``, ``f2``,
        ``klatt``, ``croak``, ``whisper``; "" for none.
    pitch: 0-99 (espeak-ng ``-p``; 50 is the voice's normal pitch).
    speed: words per minute (espeak-ng ``-s``), 80-450.
    """

    name: str
    voice: str
    variant: str
    pitch: int
    speed: int

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", self.name):
            raise ValueError(f"speaker name '{self.name}' must be letters, digits, '-', '_' and '.' (a folder name)")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.voice):
            raise ValueError(f"speaker '{self.name}': '{self.voice}' is not an espeak-ng voice name")
        if self.variant and not re.fullmatch(r"[A-Za-z0-9_-]+", self.variant):
            raise ValueError(f"speaker '{self.name}': '{self.variant}' is not an espeak-ng variant name")
        if not 0 <= self.pitch <= 99:
            raise ValueError(f"speaker '{self.name}': pitch must be 0-99, got {self.pitch}")
        if not 80 <= self.speed <= 450:
            raise ValueError(f"speaker '{self.name}': speed must be 80-450 words per minute, got {self.speed}")

    @property
    def espeak_voice(self) -> str:
        """The ``-v`` argument: ``voice+variant``."""
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


#: Eight distinct default speakers: different accents (espeak-ng voices), voice variants
#: (male/female formant sets, the klatt synthesiser, croaky and whispered voices), pitches
#: and speeds. ``speakers=N`` takes the first N.
DEFAULT_SPEAKERS: tuple[SpeakerVoice, ...] = (
    SpeakerVoice("us-f2", "en-us", "f2", 70, 170),
    SpeakerVoice("scot-m3", "en-gb-scotland", "m3", 35, 150),
    SpeakerVoice("rp-f4", "en-gb-x-rp", "f4", 60, 185),
    SpeakerVoice("carib-m7", "en-029", "m7", 45, 160),
    SpeakerVoice("wmid-croak", "en-gb-x-gbcwmd", "croak", 25, 140),
    SpeakerVoice("nyc-klatt", "en-us-nyc", "klatt", 55, 195),
    SpeakerVoice("lanc-f3", "en-gb-x-gbclan", "f3", 80, 155),
    SpeakerVoice("gb-whisper", "en", "whisper", 50, 145),
)
_EXTRA_VARIANTS = ("m1", "f1", "m2", "f5", "m4", "klatt2", "m5", "klatt3", "m6", "m8")
MAX_SPEAKERS = 64


def speaker_voices(count: int) -> list[SpeakerVoice]:
    """``count`` distinct speakers: :data:`DEFAULT_SPEAKERS`, then (beyond eight) the same
    accents with other variants, pitches and speeds, named ``<accent voice>-<variant>-<k>``."""
    if not 1 <= count <= MAX_SPEAKERS:
        raise ValueError(f"speakers must be between 1 and {MAX_SPEAKERS}, got {count}")
    out = list(DEFAULT_SPEAKERS[:count])
    for k in range(len(DEFAULT_SPEAKERS), count):
        base = DEFAULT_SPEAKERS[k % len(DEFAULT_SPEAKERS)]
        variant = _EXTRA_VARIANTS[(k - len(DEFAULT_SPEAKERS)) % len(_EXTRA_VARIANTS)]
        pitch, speed = 20 + (k * 37) % 61, 135 + (k * 29) % 61
        out.append(SpeakerVoice(f"{base.voice}-{variant}-{k:02d}", base.voice, variant, pitch, speed))
    return out


# Word lists of the sentence grammar: common words espeak-ng reads plainly.
_NAMES = ("Anna", "Ben", "Carla", "David", "Emma", "Frank", "Grace", "Henry", "Lucy", "Max", "Nora", "Oscar")
_ADJECTIVES = (
    "big", "small", "old", "new", "red", "green", "blue", "happy", "quiet", "loud", "warm", "cold",
    "dark", "bright", "little", "young", "heavy", "fast", "slow", "clean", "long", "short", "sweet", "brown",
)  # fmt: skip
_NOUNS = (  # plural: + "s"
    "dog", "cat", "bird", "car", "house", "tree", "book", "table", "chair", "window", "garden", "river",
    "teacher", "doctor", "farmer", "friend", "horse", "boat", "train", "apple", "letter", "kitchen",
    "street", "door", "bottle", "flower", "road", "song", "cup", "ball", "shoe", "bag",
)  # fmt: skip
_PAST = (
    "saw", "found", "painted", "carried", "opened", "washed", "bought", "sold", "moved", "cleaned",
    "watched", "liked", "needed", "wanted", "took", "made", "kept", "heard", "followed", "brought",
)  # fmt: skip
_BASE = ("open", "close", "move", "wash", "watch", "find", "take", "bring", "carry", "paint", "clean", "follow")
_PREPOSITIONS = ("near", "behind", "under", "over", "beside", "inside", "outside", "past")
_TIMES = ("today", "yesterday", "this morning", "last night", "every day", "on Monday", "after lunch", "at noon")
_ADVERBS = ("slowly", "quickly", "quietly", "again", "carefully", "happily")
_PLACES = ("garden", "kitchen", "city", "park", "school", "market", "station", "village")
# Sentence templates, 4-10 words each; {num} is written in digits (2-99: espeak-ng and
# num2words read these the same way, unlike "105" or "1999").
_TEMPLATES = (
    "The {adj} {noun} {past} the {noun2}.",
    "{name} {past} a {adj} {noun} {prep} the {noun2}.",
    "{num} {adj} {noun}s {past} the {noun2} {time}.",
    "{name} has {num} {noun}s in the {place}.",
    "Where is the {adj} {noun}?",
    "It's {time} and the {noun} is {adj}.",
    "Please {base} the {noun} {adv}.",
    "The {noun} is {adj}, but the {noun2} is {adj2}.",
    "Don't {base} the {num} {noun}s {prep} the {noun2}!",
    "We {past} {num} {adj} {noun}s {time}.",
    "{name} and {name2} {past} the {noun} {adv}.",
    "Did you see the {adj} {noun} {prep} the {place}?",
)
_SENTENCE_KEY = 0x5E7A_11CE  # the sentence stream shares random numbers with nothing else


def _two(rng: np.random.Generator, words: tuple[str, ...]) -> tuple[str, str]:
    i, j = rng.choice(len(words), size=2, replace=False)
    return words[int(i)], words[int(j)]


def _sentence(rng: np.random.Generator) -> str:
    def pick(words: tuple[str, ...]) -> str:
        return words[int(rng.integers(len(words)))]

    template = pick(_TEMPLATES)
    noun, noun2 = _two(rng, _NOUNS)
    adj, adj2 = _two(rng, _ADJECTIVES)
    name, name2 = _two(rng, _NAMES)
    text = template.format(
        adj=adj, adj2=adj2, noun=noun, noun2=noun2, name=name, name2=name2, num=int(rng.integers(2, 100)),
        past=pick(_PAST), base=pick(_BASE), prep=pick(_PREPOSITIONS), time=pick(_TIMES), adv=pick(_ADVERBS),
        place=pick(_PLACES),
    )  # fmt: skip
    return text[0].upper() + text[1:]


def generate_sentences(count: int, seed: int) -> list[str]:
    """``count`` distinct short English sentences (4-10 words), the same for the same seed.

    A seeded grammar over fixed word lists; a third of the templates hold a number written
    in digits ("Anna has 42 cups in the park.") and they carry case and punctuation, so
    the text normaliser matters. The list for ``count`` is a prefix of the list for any
    larger ``count``. Distinct while the grammar allows (it has far more than 10^6 sentences).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    s = seed % 2**64
    rng = np.random.default_rng([s & 0xFFFFFFFF, s >> 32, _SENTENCE_KEY])
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        text = _sentence(rng)
        for _ in range(20):
            if text not in seen:
                break
            text = _sentence(rng)
        seen.add(text)
        out.append(text)
    return out


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError(
            "espeak-ng is not installed; install it with `apt-get install espeak-ng` (it speaks the synthetic speech)"
        )
    return exe


def _espeak_version(exe: str) -> str:
    try:
        run = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DataError(f"espeak-ng at {exe} does not run ({exc})") from None
    return run.stdout.strip()


def _check_variants(exe: str, voices: list[SpeakerVoice]) -> None:
    """espeak-ng ignores an unknown variant silently: refuse it instead."""
    wanted = {v.variant for v in voices if v.variant}
    if not wanted:
        return
    run = subprocess.run([exe, "--voices=variant"], capture_output=True, text=True, timeout=30)
    known = {m.lower() for m in re.findall(r"!v/(\S+)", run.stdout)}
    if not known:  # an espeak-ng that lists no variants: let it decide
        return
    unknown = sorted(v for v in wanted if v.lower() not in known)
    if unknown:
        raise DataError(
            f"espeak-ng has no voice variant {', '.join(unknown)} (`espeak-ng --voices=variant` lists the variants)"
        )


def _speak(exe: str, voice: SpeakerVoice, text: str, target: Path) -> None:
    """Speak ``text`` into the WAV file ``target`` (written whole or not at all)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".wav", dir=target.parent)
    os.close(fd)
    try:
        cmd = [exe, "-v", voice.espeak_voice, "-p", str(voice.pitch), "-s", str(voice.speed), "-b", "1"]
        run = subprocess.run([*cmd, "-w", tmp, "--stdin"], input=text.encode(), capture_output=True, timeout=120)
        if run.returncode != 0 or os.path.getsize(tmp) <= 44:
            reason = run.stderr.decode(errors="replace").strip() or f"exit status {run.returncode}, no audio"
            raise DataError(
                f"espeak-ng could not speak '{text}' as speaker '{voice.name}' (voice {voice.espeak_voice}): {reason}"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _synthesis_key(voices: list[SpeakerVoice], per_speaker: int, seed: int, sentences: list[str] | None) -> dict:
    digest = None
    if sentences is not None:
        digest = hashlib.sha256(json.dumps(sentences, ensure_ascii=False).encode()).hexdigest()
    return {
        "format": _SYNTHESIS_FORMAT,
        "speakers": [asdict(v) for v in voices],
        "utterances_per_speaker": per_speaker,
        "seed": seed,
        "sentences_sha256": digest,
    }


def _cached(out_dir: Path, key: dict, expected: int) -> list[Utterance] | None:
    """The utterances of a complete earlier generation with the same key, else None."""
    manifest, record = out_dir / MANIFEST_FILE, out_dir / _SYNTHESIS_FILE
    if not manifest.is_file() or not record.is_file():
        return None
    try:
        stored = json.loads(record.read_text(encoding="utf-8"))
        if not isinstance(stored, dict) or stored.get("key") != key:
            return None
        utterances = read_manifest(manifest, out_dir)
    except (OSError, ValueError, DataError):
        return None
    return utterances if len(utterances) == expected else None


def synthesize_speakers(
    out_dir: Path,
    *,
    speakers: list[SpeakerVoice] | int,
    utterances_per_speaker: int,
    seed: int,
    sentences: list[str] | None = None,
) -> list[Utterance]:
    """Multi-speaker synthetic speech spoken by espeak-ng, written to ``out_dir`` (and reused).

    speakers: the voices, or a number N for the first N of :func:`speaker_voices`.
    utterances_per_speaker: clips per speaker.
    seed: picks the sentences (:func:`generate_sentences`); espeak-ng itself is deterministic.
    sentences: the texts to speak instead of generated ones (cycled if too few).

    Speaker ``k`` (0-based) says sentences ``k*M ... k*M + M - 1`` (M = utterances per
    speaker), so no two speakers say the same sentence and a split by speaker or by
    utterance never shares text. Files: ``out_dir/<speaker>/<speaker>-<u:04d>.wav``
    (espeak-ng's 22050 Hz mono 16-bit PCM), ``synthesis.json`` (the arguments) and
    ``manifest.jsonl`` (readable by :func:`read_manifest` with ``root=out_dir``), written
    last and atomically: a folder holding a manifest and the same arguments is reused
    without running espeak-ng. A new generation removes the manifest first, so an
    interrupted one is never taken for complete. Up to four espeak-ng processes run at once.

    Returns the utterances in speaker order, then utterance order (durations filled in).
    DataError if espeak-ng is missing or fails, or a variant is unknown; ValueError for bad
    arguments.
    """
    voices = speaker_voices(speakers) if isinstance(speakers, int) else list(speakers)
    if not voices:
        raise ValueError("synthesize_speakers needs at least one speaker")
    names = [v.name for v in voices]
    if len(set(names)) != len(names):
        raise ValueError(f"speaker names must be distinct, got {', '.join(names)}")
    if utterances_per_speaker < 1:
        raise ValueError(f"utterances_per_speaker must be >= 1, got {utterances_per_speaker}")
    if sentences is not None:
        sentences = [_clean(s) for s in sentences]
        if not sentences or not all(sentences):
            raise ValueError("sentences must be a non-empty list of non-blank texts")
    out_dir = Path(out_dir).resolve()
    total = len(voices) * utterances_per_speaker
    key = _synthesis_key(voices, utterances_per_speaker, seed, sentences)
    cached = _cached(out_dir, key, total)
    if cached is not None:
        return cached

    exe = _espeak()
    _check_variants(exe, voices)
    texts = sentences or generate_sentences(total, seed)
    jobs: list[tuple[SpeakerVoice, str, Path]] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
        for k, voice in enumerate(voices):
            (out_dir / voice.name).mkdir(exist_ok=True)
            for u in range(utterances_per_speaker):
                text = texts[(k * utterances_per_speaker + u) % len(texts)]
                jobs.append((voice, text, out_dir / voice.name / f"{voice.name}-{u:04d}.wav"))
        with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
            list(pool.map(lambda job: _speak(exe, *job), jobs))
    except OSError as exc:
        raise DataError(f"cannot write synthetic speech to {out_dir} ({exc.strerror or exc})") from None

    lines = []
    for voice, text, wav in jobs:
        record = {
            "audio_filepath": wav.relative_to(out_dir).as_posix(),
            "text": text,
            "speaker": voice.name,
            "duration": round(_header_duration(wav), 4),
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    write_text(out_dir / _SYNTHESIS_FILE, json.dumps({"key": key, "espeak_ng": _espeak_version(exe)}, indent=2) + "\n")
    write_text(out_dir / MANIFEST_FILE, "\n".join(lines) + "\n")
    return read_manifest(out_dir / MANIFEST_FILE, out_dir)


# --------------------------------------------------------------------------- dataset arguments
class ManifestArgs(BaseModel):
    """Arguments of a JSONL-manifest dataset (see :func:`read_manifest`)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="JSONL manifest relative to data.root: one {audio_filepath, text, speaker[, duration]} per line, "
        "audio paths relative to the manifest's folder"
    )

    @field_validator("path")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class SpeakerFolderArgs(BaseModel):
    """Arguments of a speaker-folder dataset (see :func:`read_speaker_folder`)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="folder relative to data.root holding <speaker>/<clip>.wav|.flac and transcripts.tsv "
        "('<speaker>/<clip>.wav<TAB>transcript' lines)"
    )

    @field_validator("path")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class SyntheticSpeechArgs(BaseModel):
    """Arguments of the synthetic-speech dataset (see :func:`synthesize_speakers`)."""

    model_config = ConfigDict(extra="forbid")

    speakers: int = Field(6, ge=1, le=MAX_SPEAKERS, description="speakers (the first 8 are DEFAULT_SPEAKERS)")
    utterances_per_speaker: int = Field(30, ge=1, le=5000, description="clips per speaker")
    seed: int = Field(0, description="sentence seed (independent of the run's seed)")
    sentences: list[str] | None = Field(
        None, min_length=1, description="texts to speak instead of generated sentences (cycled if too few)"
    )
    out_dir: str | None = Field(
        None,
        description="folder for the audio, relative to data.root (default: "
        "$TLENGINE_CACHE_DIR/synthetic-speech/<digest of these arguments>, else ~/.cache/tlengine/...)",
    )
    channel: ChannelArgs | None = Field(
        None,
        description="hear the clips through a recording channel (band-pass, gain, noise; see channel.py): the same "
        "speakers and texts as without it, a domain shift; the shifted copy is written beside the clean audio",
    )

    @field_validator("sentences")
    @classmethod
    def _sentences(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not s.strip() for s in v):
            raise ValueError("sentences must not be blank")
        return v


def build_manifest(args: ManifestArgs, root: Path) -> list[Utterance]:
    """The utterances of ``args.path`` (inside ``root``)."""
    return read_manifest(Path(args.path), Path(root))


def build_speaker_folder(args: SpeakerFolderArgs, root: Path) -> list[Utterance]:
    """The utterances of the speaker folder ``args.path`` (inside ``root``)."""
    return read_speaker_folder(resolve_under(Path(root), args.path, what="speaker folder"))


def synthetic_speech_dir(args: SyntheticSpeechArgs, root: Path) -> Path:
    """Where :func:`build_synthetic_speech` writes: ``args.out_dir`` inside ``root``, or a
    folder under the tlengine cache named by a digest of the arguments."""
    if args.out_dir is not None:
        return resolve_under(Path(root), args.out_dir, what="out_dir")
    from tlengine.cache.manage import cache_base

    cache = cache_base()
    # the channel is left out: the clean clips are shared, each channel's copy sits inside
    digest = hashlib.sha256(args.model_dump_json(exclude={"out_dir", "channel"}).encode()).hexdigest()[:16]
    return cache / "synthetic-speech" / digest


def build_synthetic_speech(args: SyntheticSpeechArgs, root: Path) -> list[Utterance]:
    """Generate (or reuse) the synthetic speech of ``args`` in :func:`synthetic_speech_dir`;
    with ``args.channel``, its copy heard through that channel (in ``channel-<digest>/``
    inside that folder)."""
    folder = synthetic_speech_dir(args, root)
    clean = synthesize_speakers(
        folder,
        speakers=args.speakers,
        utterances_per_speaker=args.utterances_per_speaker,
        seed=args.seed,
        sentences=args.sentences,
    )
    if args.channel is None:
        return clean
    return channel_copy(clean, args.channel, folder / f"channel-{args.channel.digest()}", folder)
