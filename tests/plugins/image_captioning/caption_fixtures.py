"""Shared pieces of the image-captioning task tests: a tiny offline BERT whose vocabulary
covers the synthetic captions, the tiny pipeline (mobilenet_v2 at 64 px: a 2x2 grid; 24
synthetic scenes of 64 px) and small image/CSV writers.

Nothing here downloads anything: the encoder starts from random weights and the decoder
is a BERT folder written by :func:`write_caption_bert`."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
import torch
from PIL import Image

#: every word of the synthetic captions (shapes circle/square/triangle, colours
#: red/green/blue/yellow), plus a few for hand-written CSV captions
WORDS = (
    "a above and at below big blue bottom centre circle green in is large left little of on over red right "
    "small square the there to top triangle under yellow dog cat runs sits grass"
).split()
HIDDEN = 32
LAYERS = 2
MAX_POSITIONS = 40
SIZE = 64  # model.input_size (mobilenet_v2: a 2x2 grid of 1280 channels)
IMAGES = 24


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread for the module (and ``OMP_NUM_THREADS=1`` for the runs it starts in
    subprocesses). The models are tiny: with two threads on a busy 2-core machine every small
    matmul waits for the other thread (a 32x32 linear took 1.4 ms instead of 16 us), which
    made beam and greedy decoding the slowest part of every run. Results do not depend on it."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


def write_caption_bert(
    folder: Path, *, seed: int = 0, max_positions: int = MAX_POSITIONS, words: Sequence[str] = WORDS
) -> Path:
    """A BertModel checkpoint folder (config.json, model.safetensors, fast tokenizer) with a
    word-level vocabulary of ``words`` (default :data:`WORDS`), 2 layers of width 32."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 takes the vocab itself (it ignores vocab_file=, leaving only the specials)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    assert tokenizer.convert_tokens_to_ids(words[-1]) == len(vocab) - 1
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=2 * HIDDEN,
        max_position_embeddings=max_positions,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder, safe_serialization=True)
    return folder


#: the tiny pipeline; ``model.decoder`` is filled in by :func:`tiny_config`
TINY_CAPTION: dict[str, Any] = {
    "name": "cap-tiny",
    "task": "image-captioning",
    "seed": 0,
    "data": {
        "dataset": "synthetic-captions",
        "args": {"images": IMAGES, "size": SIZE, "seed": 3, "captions_per_image": 2},
        "val_fraction": 0.2,
        "test_fraction": 0.25,
        "augment": "light",
    },
    "model": {
        "backbone": "mobilenet_v2",
        "weights": None,
        "input_size": SIZE,
        "decoder": None,
        "max_length": 32,
        "num_beams": 1,
        "projection_dropout": 0.0,
    },
    "strategy": {"name": "feature-extraction", "cache": {"views": 2}},
    # fp32: on CPUs with bf16 the precision check and bf16 convolutions cost more than they save here
    "extraction": {"precision": "fp32"},
    "baseline": {"name": "scratch"},
    "train": {"epochs": 2, "batch_size": 8, "lr": 0.003, "optimizer": "adamw"},
}


def tiny_config(bert: Path, weights: Path | None = None, **changes: Any) -> dict[str, Any]:
    """A deep copy of :data:`TINY_CAPTION` with the decoder folder ``bert`` and the encoder
    weights ``weights`` (see :func:`write_encoder_weights`); top-level keys in ``changes``
    replace the config's."""
    config = copy.deepcopy(TINY_CAPTION)
    config["model"]["decoder"] = str(bert)
    config["model"]["weights"] = None if weights is None else str(weights)
    config.update(copy.deepcopy(changes))
    return config


def write_png(path: Path, size: tuple[int, int] = (48, 40), colour: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return path


def write_encoder_weights(path: Path, *, seed: int = 0) -> Path:
    """A torchvision mobilenet_v2 classification state dict as a ``.pth`` file: the
    ``model.weights`` of an offline "pretrained" encoder (arms that start pretrained load it,
    and with it the decoder loads ``model.decoder``). Random convolutions, but batch-norm
    statistics measured on synthetic scenes: with the initial ones (mean 0, variance 1) a
    random mobilenet_v2 in eval mode gives tokens of ~1e-10, the same for every image."""
    import torchvision
    from tlengine_plugins.image_captioning.synthetic import generate_caption_scenes

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v2(weights=None)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a plain average over the calibration batches
    scenes = generate_caption_scenes(images=32, size=SIZE, seed=seed + 100)
    images = torch.stack(
        [torch.frombuffer(bytearray(s.image.tobytes()), dtype=torch.uint8).view(SIZE, SIZE, 3) for s in scenes]
    )
    x = images.permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    model.train()
    with torch.no_grad():
        for batch in x.split(8):
            model(batch)
    torch.save(model.state_dict(), path)
    return path
