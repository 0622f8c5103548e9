"""The from-scratch CTC recogniser: vocabulary, shapes, padding invariance, decoding, and that it learns."""

import json
import math
import time
from dataclasses import asdict

import jiwer
import pytest
import torch
import torchaudio
from tlengine_plugins.asr_speaker_adaptation.ctc import (
    CharVocabulary,
    CTCConfig,
    CTCRecognizer,
    SpecAugment,
    ctc_loss,
    greedy_decode,
)

KINDS = ["conformer", "bigru"]


def test_vocabulary_round_trip_and_json():
    vocab = CharVocabulary()
    assert len(vocab) == 29 and vocab.tokens[0] == "<blank>"
    ids = vocab.encode("don't stop")
    assert 0 not in ids and vocab.decode(ids) == "don't stop"
    again = CharVocabulary.from_json(vocab.to_json())
    assert again.tokens == vocab.tokens and again.encode("ab c") == vocab.encode("ab c")


def test_vocabulary_names_an_unknown_character():
    with pytest.raises(ValueError, match="'7'"):
        CharVocabulary().encode("room 7")


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_out_lengths(kind):
    torch.manual_seed(0)
    model = CTCRecognizer(CTCConfig(d_model=32, layers=2, heads=2, kind=kind))
    lengths = torch.tensor([100, 57, 7])
    log_probs, out_lengths = model(torch.randn(3, 100, 80), lengths)
    assert log_probs.shape == (3, 24, 29)
    assert out_lengths.tolist() == [24, 13, 1]  # ((T - 1) // 2 - 1) // 2
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 24), atol=1e-5)
    hidden, _ = model.forward_features(torch.randn(3, 100, 80), lengths)
    assert hidden.shape == (3, 24, 32) and len(model.layers) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_an_utterance_decodes_the_same_alone_or_padded_in_a_batch(kind):
    torch.manual_seed(0)
    model = CTCRecognizer(CTCConfig(d_model=32, layers=2, heads=2, kind=kind)).eval()
    features, lengths = torch.randn(3, 120, 80), torch.tensor([120, 61, 30])
    features[1:, 61:] = 1e3  # garbage in the padding must not reach the valid frames
    with torch.no_grad():
        batch, out_lengths = model(features, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone, _ = model(features[i : i + 1, :n], lengths[i : i + 1])
            assert torch.allclose(alone[0], batch[i, : out_lengths[i]], atol=1e-4)


def test_block_outputs_are_hookable_tensors():
    model = CTCRecognizer(CTCConfig(d_model=32, layers=2, heads=2)).eval()
    seen = []
    model.layers[1].register_forward_hook(lambda module, inputs, output: seen.append(output.shape) or output * 0)
    log_probs, _ = model(torch.randn(2, 50, 80), torch.tensor([50, 40]))
    assert seen == [(2, 11, 32)]
    # zeroed hidden states reach the head unchanged: the hook's output is what the next stage sees
    assert torch.allclose(log_probs, model.forward_head(torch.zeros(2, 11, 32)))


def test_greedy_decode_collapses_repeats_and_drops_blanks():
    vocab = CharVocabulary()
    h, i = vocab.encode("hi")
    path = [0, h, h, 0, i, i, 0, i, 5]  # the last frame lies beyond out_lengths
    log_probs = torch.full((1, len(path), len(vocab)), -10.0)
    log_probs[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert greedy_decode(log_probs, torch.tensor([8]), vocab) == ["hii"]
    assert greedy_decode(log_probs, torch.tensor([5]), vocab) == ["hi"]


def test_ctc_loss_is_finite_and_normalised_by_target_length():
    torch.manual_seed(0)
    log_probs = torch.randn(2, 20, 29).log_softmax(-1)
    loss = ctc_loss(log_probs, torch.tensor([20, 2]), [[3, 4, 5], [3, 3, 3]])  # the second one can't fit: zeroed
    assert torch.isfinite(loss)
    alone = ctc_loss(log_probs[:1], torch.tensor([20]), [[3, 4, 5]])
    assert torch.allclose(loss, alone / 2)


def test_normalizer_statistics_save_with_the_model():
    torch.manual_seed(0)
    utterances = [3 + 2 * torch.randn(n, 80) for n in (50, 70, 90)]
    model = CTCRecognizer(CTCConfig(d_model=32, layers=2, heads=2, kind="bigru"))
    model.normalizer.fit(utterances)
    normalised = model.normalizer(torch.cat(utterances))
    assert normalised.mean(0).abs().max() < 1e-4 and (normalised.std(0) - 1).abs().max() < 1e-2

    # a checkpoint in plain data: config, vocabulary tokens, state dict
    config, tokens = json.loads(json.dumps(asdict(model.config))), json.loads(json.dumps(CharVocabulary().to_json()))
    rebuilt = CTCRecognizer(CTCConfig(**config))
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.normalizer.mean, model.normalizer.mean) and len(CharVocabulary.from_json(tokens)) == 29
    x, lengths = torch.randn(2, 40, 80), torch.tensor([40, 33])
    assert torch.equal(rebuilt.eval()(x, lengths)[0], model.eval()(x, lengths)[0])


def test_specaugment_masks_in_train_mode_only():
    augment, x = SpecAugment(), torch.randn(4, 200, 80)
    assert torch.equal(augment.eval()(x), x)
    torch.manual_seed(0)
    masked = augment.train()(x)
    torch.manual_seed(0)
    assert torch.equal(augment(x), masked)  # seeded through torch's global RNG
    zeroed = masked == 0
    assert masked.shape == x.shape and zeroed.any() and not zeroed.all()
    assert not torch.equal(zeroed[0], zeroed[1])  # each utterance gets its own masks


# A toy speech task: each letter is a tone of its own pitch, 80 ms long with 40 ms of silence after it.
ALPHABET = "abdehn"
PITCH = {c: 300 * 1.45**k for k, c in enumerate(ALPHABET)}  # 300 Hz .. 1.9 kHz


def toy_words(n: int, generator: torch.Generator) -> list[str]:
    lengths = torch.randint(3, 6, (n,), generator=generator).tolist()
    return ["".join(ALPHABET[j] for j in torch.randint(0, 6, (k,), generator=generator).tolist()) for k in lengths]


def toy_waveform(word: str, generator: torch.Generator) -> torch.Tensor:
    sr, tone, gap = 16000, 1280, 640
    parts = [torch.zeros(1600)]
    for c in word:
        pitch = PITCH[c] * (1 + 0.03 * (torch.rand(1, generator=generator).item() - 0.5))
        amplitude = 0.3 + 0.4 * torch.rand(1, generator=generator).item()
        parts += [amplitude * torch.sin(2 * math.pi * pitch * torch.arange(tone) / sr), torch.zeros(gap)]
    parts.append(torch.zeros(1600))
    wave = torch.cat(parts)
    return wave + 0.02 * torch.randn(wave.shape, generator=generator)


def toy_features(words: list[str], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=80)
    feats = [torch.log(mel(toy_waveform(w, generator)) + 1e-6).T for w in words]
    lengths = torch.tensor([f.shape[0] for f in feats])
    return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_it_learns_a_toy_speech_task(kind):
    start = time.time()
    generator = torch.Generator().manual_seed(0)
    vocab = CharVocabulary()
    train_words, test_words = toy_words(60, generator), toy_words(20, generator)
    train_x, train_len = toy_features(train_words, generator)
    test_x, test_len = toy_features(test_words, generator)

    torch.manual_seed(0)
    model = CTCRecognizer(CTCConfig(d_model=64, layers=2, heads=4, kind=kind, dropout=0.1, specaugment=False))
    model.normalizer.fit(f[:n] for f, n in zip(train_x, train_len))
    with torch.no_grad():
        untrained_cer = jiwer.cer(test_words, greedy_decode(*model.eval()(test_x, test_len), vocab))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        idx = torch.randint(0, len(train_words), (16,), generator=generator)
        n = int(train_len[idx].max())
        log_probs, out_lengths = model(train_x[idx, :n], train_len[idx])
        loss = ctc_loss(log_probs, out_lengths, [vocab.encode(train_words[i]) for i in idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.eval()
    with torch.no_grad():
        hyps = greedy_decode(*model(test_x, test_len), vocab)
    cer = jiwer.cer(test_words, hyps)
    print(f"{kind}: final loss {loss.item():.3f}, held-out CER {cer:.3f}, {time.time() - start:.1f} s")
    assert untrained_cer > 0.8 and cer < 0.3
