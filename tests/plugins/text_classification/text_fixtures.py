"""A tiny BERT checkpoint the tests make themselves (random weights, a word-level vocab),
a small labelled text set and a tiny text pipeline: every text test runs in seconds,
offline, without the MiniLM package."""

from __future__ import annotations

import random
from pathlib import Path

TOPICS = {
    "sport": "goal match team score league coach player ball win season stadium referee",
    "food": "pizza pasta bread cheese soup salad dinner cook recipe taste spicy sweet",
    "tech": "computer code software laptop phone screen battery app bug server network chip",
}
FILLERS = "the a my your this that is was very really today yesterday and but with".split()


def make_texts(per_class: int = 24, seed: int = 0) -> list[tuple[str, str]]:
    """(label, text) pairs: a few topic words among filler words, lengths 4-14 words."""
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        vocab = words.split()
        for _ in range(per_class):
            n = rng.randint(4, 14)
            text = " ".join(rng.choice(vocab) if rng.random() < 0.5 else rng.choice(FILLERS) for _ in range(n))
            rows.append((label, text))
    rng.shuffle(rows)
    return rows


def write_tiny_bert(folder: Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A BERT checkpoint folder (config.json, model.safetensors, fast tokenizer) with a
    word-level WordPiece vocab of the topic and filler words."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for text in TOPICS.values() for w in text.split()} | set(FILLERS))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 ignores vocab_file= here (every word would be [UNK]): pass the vocab itself
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    assert tokenizer.convert_tokens_to_ids(words[0]) == 5, "the tiny tokenizer lost its vocabulary"
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    return folder


def text_pipeline(data_path: Path, checkpoint: Path, **train) -> dict:
    """A tiny text pipeline: fine-tune vs feature-extraction vs TF-IDF vs scratch."""
    return {
        "name": "tiny-text",
        "task": "text-classification",
        "seed": 0,
        "data": {
            "dataset": "text-file",
            "root": str(data_path.parent),
            "args": {"path": data_path.name, "format": "sms"},
            "val_fraction": 0.2,
            "test_fraction": 0.3,
        },
        "model": {"backbone": "bert", "weights": str(checkpoint), "max_length": 24},
        "strategy": {"name": "fine-tune", "backbone_lr_mult": 0.5, "layer_decay": 0.8},
        "compare": [{"name": "feature-extraction", "lr": 0.01}, {"name": "tfidf-logreg"}],
        "baseline": {"name": "scratch"},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.003, **train},
    }
