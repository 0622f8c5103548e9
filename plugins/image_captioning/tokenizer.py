"""A WordPiece tokenizer trained on the training captions (``model.tokenizer: train``).

The alternative to the decoder checkpoint's own tokenizer when the captions' words are far
from the checkpoint's vocabulary, or when a small decoder should not carry a 30,522-row
output layer. Built with Hugging Face's ``tokenizers`` from the *training* split only (no
word of a validation or test caption leaks into it), BERT-style: lowercased, accents
stripped, split on whitespace and punctuation, WordPiece with ``##`` continuations, and the
special tokens the decoder needs (``[PAD]`` id 0, ``[UNK]``, ``[CLS]``, ``[SEP]``,
``[MASK]``); ``[CLS] caption [SEP]`` is added when encoding. The vocabulary is the
captions' characters (so no word of known letters is ever ``[UNK]``) and their most
frequent words, built deterministically (see :func:`train_caption_tokenizer`). The result is a
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
    """A WordPiece tokenizer of at most ``vocab_size`` tokens for ``captions``; returns its JSON.

    The vocabulary: the special tokens, every character seen (alone and as a ``##``
    continuation, so any word made of known characters still encodes), then whole words
    by frequency, ties in alphabetical order. Built here rather than by tokenizers'
    ``WordPieceTrainer``, which breaks ties in hash-map order and so gives another
    vocabulary on each call: a run, its resume and ``predict`` must agree on every id.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for caption in captions:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption)))
    chars = sorted({c for w in words for c in w})
    vocab = list(SPECIAL_TOKENS) + chars + [f"##{c}" for c in chars]
    if len(vocab) > vocab_size:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: the captions' {len(chars)} characters and the special "
            f"tokens alone need {len(vocab)}"
        )
    known = set(vocab)
    ranked = sorted((w for w in words if w not in known), key=lambda w: (-words[w], w))
    vocab += ranked[: vocab_size - len(vocab)]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
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
