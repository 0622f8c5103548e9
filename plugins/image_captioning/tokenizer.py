"""A WordPiece tokenizer trained on the training captions (``model.tokenizer: train``).

The alternative to the decoder checkpoint's own tokenizer when the captions' words are far
from the checkpoint's vocabulary, or when a small decoder should not carry a 30,522-row
output layer. Trained with Hugging Face's ``tokenizers`` on the *training* split only (no
word of a validation or test caption leaks into it), BERT-style: lowercased, accents
stripped, split on whitespace and punctuation, WordPiece with ``##`` continuations, and the
special tokens the decoder needs (``[PAD]`` id 0, ``[UNK]``, ``[CLS]``, ``[SEP]``,
``[MASK]``); ``[CLS] caption [SEP]`` is added when encoding. The result is a
``transformers.PreTrainedTokenizerFast``, so the decoder uses it exactly as a checkpoint's.

Its JSON (``tokenizer_json``) goes into the run's ``info``, stored with every checkpoint:
``predict`` rebuilds the same tokenizer without the data. A decoder with a trained
vocabulary has new word embeddings (see :mod:`.decoder`): the rest of a pretrained BERT
still transfers.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["SPECIAL_TOKENS", "train_caption_tokenizer", "tokenizer_from_json"]

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_caption_tokenizer(captions: Iterable[str], *, vocab_size: int) -> str:
    """Train a WordPiece tokenizer of at most ``vocab_size`` tokens (special tokens and
    single characters included) on ``captions``; returns its JSON."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=1)
    tokenizer.train_from_iterator(list(captions), trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer.to_str()


def tokenizer_from_json(text: str) -> Any:
    """The ``PreTrainedTokenizerFast`` of a JSON written by :func:`train_caption_tokenizer`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(text),
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
