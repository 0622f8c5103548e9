"""The caption decoder: a BERT checkpoint used as a causal decoder that cross-attends to visual tokens.

:func:`build_caption_decoder` reads the same checkpoints as the text encoder (``minilm-l6``,
a local BERT folder, ``hf:<id>``; resolved by
:func:`tlengine_plugins.text_classification.encoders.resolve_checkpoint`, never with
``trust_remote_code``) into transformers' causal-LM class for that family
(``BertLMHeadModel`` for BERT) with ``is_decoder=True`` and ``add_cross_attention=True``.
The checkpoint fills the embeddings and the self-attention/feed-forward layers; the
cross-attention of every layer and the LM head's transform and bias are *new*
(:attr:`CaptionDecoder.new_parameter_names`, which the task trains at full learning
rate). The output projection is tied to the word embeddings, so it is loaded, not new.
With ``weights=None`` the same architecture and tokenizer (``architecture``, MiniLM by
default) are randomly initialised: the scratch arm, every parameter new.

Decoding goes through ``model.generate`` with the visual tokens as the model kwargs
``encoder_hidden_states``/``encoder_attention_mask``, bos = ``[CLS]``, eos = ``[SEP]``,
pad = ``[PAD]``. In transformers 5.x ``generate`` builds a plain ``DynamicCache`` for a
model whose config is not ``is_encoder_decoder``, and BERT's cross-attention then fails
(``'DynamicCache' object has no attribute 'is_updated'``: it expects an
``EncoderDecoderCache`` that also holds the cross-attention keys/values). Passing an
empty ``EncoderDecoderCache`` as the cache (``cache=``, formerly
``past_key_values=``) fixes that: greedy and beam search
(with length penalty, no-repeat n-gram) then give exactly what ``use_cache=False`` gives,
which the tests check. No hand-written search is needed. (Verified with transformers
5.24; the 4.x releases the project still allows are not exercised here.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tlengine.errors import WeightsError
from tlengine.registry import Registry
from tlengine.weights import load_state_dict_file
from tlengine_plugins.text_classification.encoders import (
    MINILM_L6,
    Checkpoint,
    _config_kwargs,
    _hub_state,
    _strip_prefix,
    load_tokenizer,
    resolve_checkpoint,
)
from torch import nn

__all__ = ["IGNORE_INDEX", "CaptionDecoder", "DecoderOutput", "build_caption_decoder", "caption_loss", "labels_from"]

#: label value the loss skips (padding, and anything the task wants ignored)
IGNORE_INDEX = -100


@dataclass
class DecoderOutput:
    """logits [N,L,V] float (position t predicts token t+1); loss a scalar, or None without labels."""

    logits: torch.Tensor
    loss: torch.Tensor | None


class CaptionDecoder(nn.Module):
    """A transformers causal LM with cross-attention over visual tokens, plus its tokenizer.

    model: the transformers model (``BertLMHeadModel`` for BERT checkpoints).
    tokenizer: the checkpoint's fast tokenizer.
    checkpoint: the resolved checkpoint the architecture (and, when pretrained, weights) came from.
    pretrained: whether weights were loaded.
    new_parameter_names: parameters (``model.named_parameters()`` names) the checkpoint did
        not provide - the cross-attention blocks and LM-head transform/bias; every
        parameter for a randomly initialised decoder.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        checkpoint: Checkpoint,
        pretrained: bool,
        new_parameter_names: Sequence[str],
        new_vocabulary: bool = False,
    ):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.checkpoint = checkpoint
        self.pretrained = pretrained
        self.new_parameter_names: list[str] = list(new_parameter_names)
        #: the tokenizer is not the checkpoint's (trained on the captions): the word
        #: embeddings (tied to the output layer) are new parameters too
        self.new_vocabulary = bool(new_vocabulary)
        self.bos_token_id = int(tokenizer.cls_token_id)
        self.eos_token_id = int(tokenizer.sep_token_id)
        self.pad_token_id = int(tokenizer.pad_token_id)

    # -- shape facts -------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        """D_dec: the width the visual tokens must have (what the visual projection maps to)."""
        return int(self.model.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def max_positions(self) -> int:
        """Longest token sequence ([CLS] included) the position embeddings allow."""
        return int(self.model.config.max_position_embeddings)

    @property
    def loaded_parameter_names(self) -> list[str]:
        new = set(self.new_parameter_names)
        return [n for n, _ in self.model.named_parameters() if n not in new]

    def new_parameters(self) -> list[nn.Parameter]:
        """The parameters named in :attr:`new_parameter_names` (for a full-LR optimiser group)."""
        params = dict(self.model.named_parameters())
        return [params[n] for n in self.new_parameter_names]

    @property
    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(name, module) from the input side: ``embeddings``, ``layer.0`` .. ``layer.{L-1}``, as the
        text encoder's. A layer holds its (new) cross-attention as well as its (loaded)
        self-attention; the LM head's transform is outside every block."""
        base = self.model.base_model
        out: list[tuple[str, nn.Module]] = [("embeddings", base.embeddings)]
        out += [(f"layer.{i}", layer) for i, layer in enumerate(base.encoder.layer)]
        return out

    # -- tokens ------------------------------------------------------------------------

    def tokenize(self, captions: Sequence[str], *, max_length: int) -> dict[str, torch.Tensor]:
        """Captions -> ``input_ids``/``attention_mask`` [N,L] (``[CLS] caption [SEP]``, right-padded
        to the longest, truncated to ``max_length`` tokens) and ``labels`` (the ids, -100 at padding)."""
        if max_length > self.max_positions:
            raise ValueError(f"max_length {max_length} exceeds the decoder's {self.max_positions} positions")
        enc = self.tokenizer(
            list(captions),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels_from(input_ids, attention_mask),
        }

    def decode(self, token_ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Token ids (with or without the leading [CLS]) -> text, special tokens dropped."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        return [
            s.strip()
            for s in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        ]

    # -- training ----------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        visual_tokens: torch.Tensor,
        visual_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> DecoderOutput:
        """Teacher forcing.

        input_ids, attention_mask: [N,L] int64, ``[CLS] w1 .. wn [SEP] [PAD]..``, mask 1 on real tokens.
        visual_tokens: [N,T,D_dec] float (any float dtype; cast to the model's).
        visual_mask: [N,T] (1/True = attend) or None for all tokens; each row needs at least one 1.
        labels: [N,L] int64 aligned with ``input_ids`` (usually the ids themselves), -100 where no
            loss is wanted (padding); the loss is the mean cross-entropy of logits[:, t] against
            labels[:, t+1] over the labelled positions.
        """
        dtype = next(self.model.parameters()).dtype
        visual_tokens = visual_tokens.to(dtype)
        if visual_mask is not None:
            visual_mask = visual_mask.to(torch.long)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=visual_tokens,
            encoder_attention_mask=visual_mask,
            use_cache=False,
            return_dict=True,
        )
        logits = out.logits
        loss = None
        if labels is not None:
            loss = caption_loss(logits, labels, label_smoothing=label_smoothing)
        return DecoderOutput(logits, loss)

    # -- decoding ----------------------------------------------------------------------

    @torch.no_grad()
    def generate_ids(
        self,
        visual_tokens: torch.Tensor,
        visual_mask: torch.Tensor | None = None,
        *,
        max_length: int,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> torch.Tensor:
        """Token ids [N, 1+<=max_length]: [CLS] then at most ``max_length`` generated tokens
        ([SEP] included when one is produced; [PAD] after it)."""
        from transformers import DynamicCache, EncoderDecoderCache

        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if 1 + max_length > self.max_positions:
            raise ValueError(f"max_length {max_length} + [CLS] exceeds the decoder's {self.max_positions} positions")
        if num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {num_beams}")
        n = visual_tokens.shape[0]
        param = next(self.model.parameters())
        visual_tokens = visual_tokens.to(device=param.device, dtype=param.dtype)
        if visual_mask is None:
            visual_mask = torch.ones(visual_tokens.shape[:2], dtype=torch.long, device=param.device)
        visual_mask = visual_mask.to(device=param.device, dtype=torch.long)
        input_ids = torch.full((n, 1), self.bos_token_id, dtype=torch.long, device=param.device)
        options: dict[str, Any] = {
            "max_new_tokens": max_length,
            "min_new_tokens": 0,
            "do_sample": False,
            "num_beams": num_beams,
            "num_return_sequences": 1,
            "no_repeat_ngram_size": no_repeat_ngram_size,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "decoder_start_token_id": None,
        }
        if num_beams > 1:
            options["length_penalty"] = length_penalty
            options["early_stopping"] = True
        config = self.model.config
        cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                encoder_hidden_states=visual_tokens,
                encoder_attention_mask=visual_mask,
                use_cache=True,
                **{_cache_kwarg(self.model): cache},
                **options,
            )
        finally:
            self.model.train(was_training)

    def generate(
        self,
        visual_tokens: torch.Tensor,
        visual_mask: torch.Tensor | None = None,
        *,
        max_length: int,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
    ) -> list[str]:
        """One caption per row of ``visual_tokens`` [N,T,D_dec]; greedy when ``num_beams`` is 1.

        max_length: most generated tokens (WordPiece tokens, [SEP] counted), [CLS] not counted.
        length_penalty: beam search scores a hypothesis by log-prob / length**length_penalty.
        no_repeat_ngram_size: >0 forbids repeating any n-gram of that size.
        """
        ids = self.generate_ids(
            visual_tokens,
            visual_mask,
            max_length=max_length,
            num_beams=num_beams,
            length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        return self.decode(ids)


def _cache_kwarg(model: nn.Module) -> str:
    """``cache`` where the model's forward takes it (transformers >= 5.2x renamed it), else
    ``past_key_values``; both reach the same place in ``generate``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def labels_from(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The teacher-forcing labels: ``input_ids`` with -100 where ``attention_mask`` is 0."""
    return input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)


def caption_loss(logits: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean next-token cross-entropy: logits[:, t] [N,L,V] against labels[:, t+1], -100 skipped."""
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    target = labels[:, 1:].reshape(-1)
    if not bool((target != IGNORE_INDEX).any()):
        return shifted.sum() * 0.0  # no labelled token: a zero that still has a graph
    return F.cross_entropy(shifted, target, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)


def build_caption_decoder(
    weights: str | None,
    *,
    weights_registry: Registry[Any] | None,
    base_dir: Path,
    config_overrides: dict[str, Any] | None = None,
    architecture: str = MINILM_L6,
    tokenizer: Any = None,
) -> CaptionDecoder:
    """The caption decoder of checkpoint ``weights`` (named weights, a directory, ``hf:<id>``).

    ``weights=None``: random init of ``architecture``'s config, with its tokenizer (the
    scratch arm; ``architecture`` is any checkpoint reference, MiniLM by default).
    ``config_overrides``: config fields to change (e.g. ``hidden_dropout_prob``);
    with pretrained weights only fields that keep the weights' shapes make sense.
    ``tokenizer``: a tokenizer of another vocabulary (one trained on the captions,
    :mod:`.tokenizer`) instead of the checkpoint's: the vocabulary size follows it and the
    word embeddings start random (every other pretrained tensor still loads).
    Raises WeightsError when the checkpoint is missing, unreadable or does not fit.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    ref = weights if weights is not None else architecture
    checkpoint = resolve_checkpoint(ref, weights_registry=weights_registry, base_dir=base_dir)
    config_dict = dict(checkpoint.config)
    config_dict.update(config_overrides or {})
    config_dict.update(is_decoder=True, add_cross_attention=True, tie_word_embeddings=True)
    new_vocabulary = tokenizer is not None
    if new_vocabulary:
        config_dict.update(vocab_size=len(tokenizer), pad_token_id=int(tokenizer.pad_token_id or 0))
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **_config_kwargs(config_dict))
    model = AutoModelForCausalLM.from_config(config)
    tokenizer = tokenizer if new_vocabulary else load_tokenizer(checkpoint.directory)
    for token in ("cls_token_id", "sep_token_id", "pad_token_id"):
        if getattr(tokenizer, token, None) is None:
            raise WeightsError(f"the tokenizer of '{ref}' has no {token[:-3]} (the decoder needs [CLS], [SEP], [PAD])")
    if len(tokenizer) > config.vocab_size:
        raise WeightsError(f"the tokenizer of '{ref}' has {len(tokenizer)} tokens, its model only {config.vocab_size}")
    if weights is None:
        new = [n for n, _ in model.named_parameters()]
    else:
        loaded = _load_decoder_weights(model, checkpoint, skip_vocabulary=new_vocabulary)
        new = [n for n, _ in model.named_parameters() if n not in loaded]
    return CaptionDecoder(
        model,
        tokenizer,
        checkpoint=checkpoint,
        pretrained=weights is not None,
        new_parameter_names=new,
        new_vocabulary=new_vocabulary,
    )


def load_decoder_checkpoint(decoder: CaptionDecoder) -> None:
    """Load ``decoder``'s own checkpoint into it (as :func:`build_caption_decoder` does for a
    pretrained decoder), e.g. after an earlier stage gave the encoder but no decoder."""
    loaded = _load_decoder_weights(decoder.model, decoder.checkpoint, skip_vocabulary=decoder.new_vocabulary)
    decoder.new_parameter_names = [n for n, _ in decoder.model.named_parameters() if n not in loaded]
    decoder.pretrained = True


def _load_decoder_weights(model: nn.Module, checkpoint: Checkpoint, *, skip_vocabulary: bool = False) -> set[str]:
    """Load what the checkpoint has into ``model``; return the state keys that were loaded.

    Every tensor of the base model except the cross-attention must be present (a BERT
    checkpoint that lacks one is not the architecture its config says); the LM head is
    loaded when the checkpoint has it (a BertForMaskedLM or a decoder saved by this
    plugin) and new otherwise. ``skip_vocabulary``: the word embeddings and the output
    layer belong to another vocabulary and are left as initialised."""
    if checkpoint.ref.startswith("hf:"):
        state = _hub_state(checkpoint.directory)
    else:
        path = checkpoint.weights_file
        if path is None:
            raise WeightsError(f"text checkpoint {checkpoint.directory} has no model.safetensors or pytorch_model.bin")
        state = load_state_dict_file(path)
    own = model.state_dict()
    state = _align_keys(state, model)
    if skip_vocabulary:
        vocabulary = (
            "word_embeddings.weight",
            "predictions.bias",
            "predictions.decoder.weight",
            "predictions.decoder.bias",
        )
        state = {k: v for k, v in state.items() if not k.endswith(vocabulary)}
        own = {k: v for k, v in own.items() if not k.endswith(vocabulary)}
    prefix = model.base_model_prefix + "."
    required = [
        k for k in own if k.startswith(prefix) and ".crossattention." not in k and not k.endswith("position_ids")
    ]
    missing = [k for k in required if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        what = f"{len(missing)} tensors missing" if missing else f"tensor {wrong[0]} has another shape"
        raise WeightsError(
            f"weights of '{checkpoint.ref}' do not fit its config ({what}, e.g. {(missing or wrong)[0]})"
        )
    usable = {k: v for k, v in state.items() if k in own and not k.endswith("position_ids")}
    model.load_state_dict(usable, strict=False)
    # the output projection is tied to the word embeddings: loaded with them
    out_embeddings = model.get_output_embeddings()
    loaded = set(usable)
    tied = out_embeddings is not None and out_embeddings.weight is model.get_input_embeddings().weight
    if tied and not skip_vocabulary:
        loaded |= {k for k in own if k.endswith("decoder.weight") and k in own}
    return loaded


def _align_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Checkpoint keys -> the causal LM's keys: as they are (a saved task LM), or a base
    model's keys (``embeddings..``, possibly under another prefix) put under ``bert.``."""
    own = model.state_dict()
    prefix = model.base_model_prefix + "."
    as_is = sum(k in own for k in state)
    base = _strip_prefix(state, model.base_model)
    under_base = {prefix + k: v for k, v in base.items()}
    if sum(k in own for k in under_base) > as_is:
        return under_base
    return state
