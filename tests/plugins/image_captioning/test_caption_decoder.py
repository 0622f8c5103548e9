"""The BERT caption decoder: wiring, masks, padding-aware loss, checkpoint loading, decoding.

Every test uses a tiny BERT folder written here (random weights, a word-level vocab of
caption words), so nothing is downloaded and the file runs in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from caption_fixtures import write_caption_bert
from tlengine.errors import WeightsError
from tlengine_plugins.image_captioning.decoder import (
    IGNORE_INDEX,
    CaptionDecoder,
    build_caption_decoder,
    caption_loss,
)

WORDS = "a an the small big red green blue yellow circle square triangle above below left of right next to and".split()
HIDDEN = 32
LAYERS = 2


def write_tiny_bert(folder: Path, *, seed: int = 0, max_positions: int = 32) -> Path:
    """A tiny BERT checkpoint folder whose vocabulary is this module's :data:`WORDS`."""
    return write_caption_bert(folder, seed=seed, max_positions=max_positions, words=WORDS)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("caption-bert"))


def build(bert_dir: Path, *, pretrained: bool = True, **overrides) -> CaptionDecoder:
    torch.manual_seed(1)
    return build_caption_decoder(
        str(bert_dir) if pretrained else None,
        weights_registry=None,
        base_dir=bert_dir.parent,
        config_overrides={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **overrides},
        architecture=str(bert_dir),
    )


@pytest.fixture(scope="module")
def decoder(bert_dir: Path) -> CaptionDecoder:
    dec = build(bert_dir)
    # random BERT init (std 0.02) barely lets the visual tokens through; make them count
    with torch.no_grad():
        for name, p in dec.model.named_parameters():
            if ".crossattention." in name and name.endswith("weight") and "LayerNorm" not in name:
                p.normal_(0.0, 0.3)
    return dec.eval()


def visual(n: int = 2, t: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, t, HIDDEN, generator=torch.Generator().manual_seed(seed))


def test_shapes_tokens_and_blocks(decoder: CaptionDecoder) -> None:
    batch = decoder.tokenize(["a red circle above a blue square", "a big triangle"], max_length=16)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape == (2, 9)
    assert ids[:, 0].tolist() == [decoder.bos_token_id] * 2
    assert ids[1, 4].item() == decoder.eos_token_id and mask[1].tolist() == [1] * 5 + [0] * 4
    assert (labels[1, 5:] == IGNORE_INDEX).all() and torch.equal(labels[0], ids[0])
    assert decoder.decode(ids) == ["a red circle above a blue square", "a big triangle"]
    vis_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    out = decoder(ids, mask, visual(), vis_mask, labels)
    assert out.logits.shape == (2, 9, decoder.vocab_size) and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert decoder(ids, mask, visual(), None).loss is None
    assert decoder.hidden_size == HIDDEN
    assert [name for name, _ in decoder.blocks] == ["embeddings", "layer.0", "layer.1"]
    # float16 cached features are accepted (cast to the model's dtype)
    assert torch.allclose(decoder(ids, mask, visual().half(), vis_mask).logits, out.logits, atol=1e-2)


def test_cross_attention_sees_visual_tokens_and_honours_their_mask(decoder: CaptionDecoder) -> None:
    batch = decoder.tokenize(["a red circle", "the big blue square"], max_length=16)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    vis, vis_mask = visual(), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        base = decoder(ids, mask, vis, vis_mask).logits
        other = decoder(ids, mask, visual(seed=7), vis_mask).logits
        changed_masked = vis.clone()
        changed_masked[0, 3:] = 100.0  # only where row 0's mask is 0
        masked = decoder(ids, mask, changed_masked, vis_mask).logits
        unmasked = decoder(ids, mask, changed_masked, None).logits
    assert (base - other).abs().amax(dim=(1, 2)).min() > 1e-2  # every row depends on its tokens
    assert torch.allclose(masked, base, atol=1e-5)  # masked-out tokens are not seen
    assert not torch.allclose(unmasked[0], base[0], atol=1e-3)  # ... but would be without the mask


def test_loss_ignores_padding(decoder: CaptionDecoder) -> None:
    batch = decoder.tokenize(["a red circle above a blue square", "a big triangle"], max_length=16)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    vis = visual()
    with torch.no_grad():
        out = decoder(ids, mask, vis, None, labels)
        # different ids at the padded positions change nothing
        junk = ids.masked_fill(mask == 0, decoder.tokenizer.convert_tokens_to_ids("circle"))
        out_junk = decoder(junk, mask, vis, None, labels)
        # the padded row on its own gives the same logits on its real tokens
        alone = decoder(ids[1:, :5], mask[1:, :5], vis[1:], None).logits
    assert torch.allclose(out.loss, out_junk.loss, atol=1e-6)
    assert torch.allclose(alone[0], out.logits[1, :5], atol=1e-5)
    # mean over the 8 + 4 labelled next tokens, none at padding
    logp = out.logits.log_softmax(-1)
    terms = [-logp[0, t, ids[0, t + 1]] for t in range(8)] + [-logp[1, t, ids[1, t + 1]] for t in range(4)]
    assert torch.allclose(out.loss, torch.stack(terms).mean(), atol=1e-5)
    smoothed = caption_loss(out.logits, labels, label_smoothing=0.1)
    keep = labels[:, 1:] != IGNORE_INDEX
    expected = F.cross_entropy(out.logits[:, :-1][keep], labels[:, 1:][keep], label_smoothing=0.1)
    assert torch.allclose(smoothed, expected, atol=1e-5) and smoothed > out.loss
    assert caption_loss(out.logits, torch.full_like(labels, IGNORE_INDEX)).item() == 0.0


def test_checkpoint_loads_everything_but_the_new_parts(bert_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    saved = load_file(str(bert_dir / "model.safetensors"))
    dec = build(bert_dir)
    params = dict(dec.model.named_parameters())
    expected_new = {
        f"bert.encoder.layer.{i}.crossattention.{part}.{kind}"
        for i in range(LAYERS)
        for part in ("self.query", "self.key", "self.value", "output.dense", "output.LayerNorm")
        for kind in ("weight", "bias")
    } | {
        "cls.predictions.bias",
        "cls.predictions.transform.dense.weight",
        "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight",
        "cls.predictions.transform.LayerNorm.bias",
    }
    assert set(dec.new_parameter_names) == expected_new
    assert len(dec.new_parameters()) == len(expected_new)
    assert set(dec.loaded_parameter_names) == {"bert." + k for k in saved if not k.endswith("position_ids")}
    for name in dec.loaded_parameter_names:
        assert torch.equal(params[name], saved[name[len("bert.") :]]), name
    # the output layer is the word embedding matrix (tied), so it is loaded, not new
    assert dec.model.get_output_embeddings().weight is dec.model.get_input_embeddings().weight
    assert dec.pretrained and dec.model.config.is_decoder and dec.model.config.add_cross_attention

    scratch = build(bert_dir, pretrained=False)
    assert not scratch.pretrained and set(scratch.new_parameter_names) == set(params)
    emb = scratch.model.get_input_embeddings().weight
    assert emb.shape == params["bert.embeddings.word_embeddings.weight"].shape
    assert not torch.equal(emb, params["bert.embeddings.word_embeddings.weight"])

    # a decoder saved whole loads whole: nothing new
    whole = tmp_path / "decoder"
    dec.model.save_pretrained(whole, safe_serialization=True)
    dec.tokenizer.save_pretrained(whole)
    reloaded = build_caption_decoder(str(whole), weights_registry=None, base_dir=tmp_path)
    assert reloaded.new_parameter_names == []

    # a checkpoint without some tensors is refused, saying so
    broken = tmp_path / "broken"
    write_tiny_bert(broken)
    from safetensors.torch import save_file

    state = load_file(str(broken / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "layer.1." not in k}, str(broken / "model.safetensors"))
    with pytest.raises(WeightsError, match="tensors missing"):
        build_caption_decoder(str(broken), weights_registry=None, base_dir=tmp_path)
    with pytest.raises(WeightsError, match="neither named weights"):
        build_caption_decoder("no-such-bert", weights_registry=None, base_dir=tmp_path)


def hand_greedy(decoder: CaptionDecoder, vis: torch.Tensor, max_length: int) -> list[list[int]]:
    """Greedy decoding by repeated full forward passes (no cache, no transformers generation)."""
    out = []
    for row in range(vis.shape[0]):
        ids = [decoder.bos_token_id]
        for _ in range(max_length):
            x = torch.tensor([ids])
            with torch.no_grad():
                logits = decoder(x, torch.ones_like(x), vis[row : row + 1]).logits
            ids.append(int(logits[0, -1].argmax()))
            if ids[-1] == decoder.eos_token_id:
                break
        out.append(ids)
    return out


def test_greedy_matches_hand_decoding_and_beam_width_one(decoder: CaptionDecoder) -> None:
    vis = visual(3, seed=3)
    ids = decoder.generate_ids(vis, max_length=8)
    expected = hand_greedy(decoder, vis, 8)
    for row, exp in zip(ids.tolist(), expected):
        assert row[: len(exp)] == exp and all(t == decoder.pad_token_id for t in row[len(exp) :])
    greedy = decoder.generate(vis, max_length=8)
    assert greedy == decoder.decode(expected)
    assert greedy == decoder.generate(vis, max_length=8, num_beams=1, length_penalty=2.0)


def test_beam_search_is_bounded_and_agrees_with_uncached_search(decoder: CaptionDecoder) -> None:
    vis, vis_mask = visual(3, seed=4), torch.tensor([[1] * 5, [1, 1, 1, 0, 0], [1] * 5])
    for max_length in (1, 4, 9):
        ids = decoder.generate_ids(vis, vis_mask, max_length=max_length, num_beams=3)
        assert ids.shape[0] == 3 and ids.shape[1] <= 1 + max_length
        captions = decoder.generate(vis, vis_mask, max_length=max_length, num_beams=3, length_penalty=0.5)
        assert len(captions) == 3 and all(len(c.split()) <= max_length for c in captions)
    # the cache this module hands to generate changes nothing but speed
    bos = torch.full((3, 1), decoder.bos_token_id)
    uncached = decoder.model.generate(
        input_ids=bos,
        attention_mask=torch.ones_like(bos),
        encoder_hidden_states=vis,
        encoder_attention_mask=vis_mask,
        use_cache=False,
        max_new_tokens=9,
        num_beams=3,
        do_sample=False,
        length_penalty=1.0,
        early_stopping=True,
        eos_token_id=decoder.eos_token_id,
        pad_token_id=decoder.pad_token_id,
    )
    cached = decoder.generate_ids(vis, vis_mask, max_length=9, num_beams=3)
    assert torch.equal(cached, uncached)
    with pytest.raises(ValueError, match="positions"):
        decoder.generate(vis, max_length=decoder.max_positions)


def repeats(ids: list[int], n: int) -> bool:
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) != len(set(grams))


def test_no_repeat_ngram_size(decoder: CaptionDecoder) -> None:
    vis = visual(4, seed=5)
    plain = decoder.generate_ids(vis, max_length=20)
    assert any(repeats(row, 2) for row in plain.tolist())  # a random model loops
    for num_beams in (1, 3):
        ids = decoder.generate_ids(vis, max_length=20, num_beams=num_beams, no_repeat_ngram_size=2)
        for row in ids.tolist():
            row = [t for t in row if t != decoder.pad_token_id]
            assert not repeats(row, 2), row


def test_teacher_forced_overfit_reproduces_two_captions(bert_dir: Path) -> None:
    dec = build(bert_dir, pretrained=False)
    dec.train()
    captions = ["a small red circle above a blue square", "the big green triangle left of a yellow circle"]
    batch = dec.tokenize(captions, max_length=16)
    vis = visual(2, t=4, seed=9)
    torch.manual_seed(0)
    optim = torch.optim.AdamW(dec.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(100):
        optim.zero_grad()
        loss = dec(batch["input_ids"], batch["attention_mask"], vis, None, batch["labels"], label_smoothing=0.0).loss
        loss.backward()
        optim.step()
    assert loss.item() < 0.05
    assert dec.training  # generate restores the mode it found
    assert dec.generate(vis, max_length=16) == captions
    assert dec.training
    assert dec.generate(vis, max_length=16, num_beams=3, no_repeat_ngram_size=3) == captions
