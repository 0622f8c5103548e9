"""Audio in, features out: reading clips, log-mel features, padding and length-bucketed batches.

* :func:`load_audio` reads a WAV/FLAC file (anything libsndfile reads) with soundfile and
  returns a mono float32 waveform at the sample rate asked for (resampled with
  ``torchaudio.functional.resample``); every problem with the file is a
  :class:`~tlengine.errors.DataError` in one sentence naming it.
* :func:`log_mel` turns waveforms into log-mel features (25 ms windows every 10 ms) for the
  small CTC model; :func:`num_frames` says how many frames a clip of N samples gives.
* :func:`pad_batch` right-pads a list of variable-length tensors into one batch.
* :func:`length_buckets` (the core's, :mod:`tlengine.data.buckets`) groups clips of similar
  length into batches, deterministically in a seed.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import soundfile as sf
import torch
import torchaudio
from tlengine.data.buckets import BUCKET_BATCHES, length_buckets
from tlengine.errors import DataError

__all__ = [
    "WINDOW_SECONDS",
    "HOP_SECONDS",
    "LOG_FLOOR",
    "BUCKET_BATCHES",
    "audio_duration",
    "load_audio",
    "log_mel",
    "hop_length",
    "num_frames",
    "pad_batch",
    "length_buckets",
]

#: log-mel analysis window and hop, in seconds
WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
#: mel energies are clamped to at least this before the log (log(1e-10) = -23.0)
LOG_FLOOR = 1e-10


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "error_string", None) or str(exc)  # libsndfile's own words, without the path
    text = text.strip().rstrip(".") or type(exc).__name__
    return text.replace("\n", " ")


def _info(path: Path) -> Any:
    """The file's header (rate, channels, frames); DataError if it is missing or not audio."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file {path} {'is not a file' if path.exists() else 'does not exist'}")
    if path.stat().st_size == 0:
        raise DataError(f"audio file {path} is empty (0 bytes)")
    try:
        return sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError for non-audio
        raise DataError(f"audio file {path} is not a readable audio file ({_reason(exc)})") from None


def audio_duration(path: Path) -> float:
    """Length of an audio file in seconds, from its header (no samples are decoded).

    DataError naming the file if it is missing or not a readable audio file.
    """
    info = _info(path)
    return info.frames / info.samplerate if info.samplerate else 0.0


def load_audio(
    path: Path, sample_rate: int, *, max_seconds: float | None = None, downmix: bool = False
) -> torch.Tensor:
    """The clip in ``path`` as a mono waveform at ``sample_rate`` Hz.

    Returns a float32 tensor of shape ``[S]`` (S samples at ``sample_rate``), values in
    [-1, 1] (integer PCM is scaled by soundfile; float files and resampling overshoot are
    clamped). A file at another rate is resampled with ``torchaudio.functional.resample``.

    downmix: average the channels of a multi-channel file; without it a file with more
        than one channel is an error (speech corpora are mono, a stereo file is usually a
        mistake).
    max_seconds: longest clip accepted, in seconds (None: any length); checked from the
        header, before decoding.

    Raises DataError (one sentence naming the file) if the file is missing, not readable
    audio, has more than one channel (without ``downmix``), has no samples, holds NaN or
    infinite samples, or is longer than ``max_seconds``. A silent clip is not an error.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    path = Path(path)
    info = _info(path)
    if info.channels > 1 and not downmix:
        raise DataError(
            f"audio file {path} has {info.channels} channels but speech must be mono "
            "(set downmix to average the channels)"
        )
    if info.frames == 0:
        raise DataError(f"audio file {path} is empty (it has no samples)")
    seconds = info.frames / info.samplerate
    if max_seconds is not None and seconds > max_seconds:
        raise DataError(f"audio file {path} is {seconds:.2f} s long, more than the {max_seconds:g} s allowed")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [S, C]
    except Exception as exc:
        raise DataError(f"audio file {path} is not a readable audio file ({_reason(exc)})") from None
    if data.shape[0] == 0:  # headers can lie (a truncated file)
        raise DataError(f"audio file {path} is empty (it has no samples)")
    wave = torch.from_numpy(data)
    wave = wave.mean(dim=1) if wave.shape[1] > 1 else wave[:, 0]
    if not bool(torch.isfinite(wave).all()):
        raise DataError(f"audio file {path} holds NaN or infinite samples")
    if rate != sample_rate:
        wave = torchaudio.functional.resample(wave, int(rate), int(sample_rate))
    return wave.clamp_(-1.0, 1.0).contiguous()


# --------------------------------------------------------------------------- features
def hop_length(sample_rate: int) -> int:
    """Samples between two feature frames: 10 ms (160 at 16 kHz)."""
    return round(HOP_SECONDS * sample_rate)


def _window_length(sample_rate: int) -> int:
    return round(WINDOW_SECONDS * sample_rate)


def num_frames(samples: int | torch.Tensor, sample_rate: int) -> int | torch.Tensor:
    """Frames :func:`log_mel` gives for a clip of ``samples`` samples: ``samples // hop + 1``.

    Works on an int or on a tensor of lengths (e.g. the ``[N]`` lengths of :func:`pad_batch`),
    which gives the valid frames of each row of a padded batch.
    """
    return samples // hop_length(sample_rate) + 1


@functools.lru_cache(maxsize=16)
def _mel_transform(sample_rate: int, n_mels: int, device: str) -> torchaudio.transforms.MelSpectrogram:
    """One transform per (rate, mels, device): ``Module.to`` moves in place, so none is shared."""
    win = _window_length(sample_rate)
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=win,
        win_length=win,
        hop_length=hop_length(sample_rate),
        n_mels=n_mels,
        power=2.0,
        center=True,
    )
    return transform.to(device)


def log_mel(waveform: torch.Tensor, sample_rate: int, n_mels: int = 80) -> torch.Tensor:
    """Log-mel features of a waveform ``[S]`` or a batch ``[N, S]`` (float, at ``sample_rate`` Hz).

    Power mel spectrogram (``torchaudio.transforms.MelSpectrogram``: Hann window of 25 ms,
    FFT size = window, hop 10 ms, centred frames, HTK mel scale) then natural log with a
    floor of :data:`LOG_FLOOR`. Returns ``[n_mels, frames]`` or ``[N, n_mels, frames]``
    float32 on the waveform's device, ``frames = num_frames(S, sample_rate)``. Frames past a
    row's own length in a padded batch are features of the zero padding.
    """
    if waveform.dim() not in (1, 2):
        raise ValueError(f"log_mel expects a waveform [S] or a batch [N, S], got shape {tuple(waveform.shape)}")
    transform = _mel_transform(int(sample_rate), int(n_mels), str(waveform.device))
    mel = transform(waveform.float())
    return torch.log(mel.clamp(min=LOG_FLOOR))


# --------------------------------------------------------------------------- batching
def pad_batch(tensors: Sequence[torch.Tensor], padding_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad tensors ``[L_i, ...]`` (same trailing shape and dtype) along their first dim.

    Returns ``(padded [N, L_max, ...], lengths [N] int64)``; positions past ``L_i`` hold
    ``padding_value``.
    """
    if len(tensors) == 0:
        raise ValueError("pad_batch needs at least one tensor")
    lengths = torch.tensor([int(t.shape[0]) for t in tensors], dtype=torch.int64)
    padded = torch.nn.utils.rnn.pad_sequence(list(tensors), batch_first=True, padding_value=padding_value)
    return padded, lengths
