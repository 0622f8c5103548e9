"""ASR speaker adaptation: the text normaliser, and WER/CER (overall and per speaker) against
values counted by hand."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError
from tlengine.errors import DataError
from tlengine_plugins.asr_speaker_adaptation.scoring import error_rates, per_speaker_error_rates, relative_reduction
from tlengine_plugins.asr_speaker_adaptation.text_normalize import TextNormalizer, spell_number

NORM = TextNormalizer()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hello, World! It's 42.", "hello world it's forty two"),
        ("  Don’t   STOP\tnow!! ", "don't stop now"),
        ("'Quoted' words and the dogs' bowls", "quoted words and the dogs bowls"),
        ("well-known rock 'n' roll", "well known rock n roll"),
        (
            "1,000 people on the 21st, 3.14 and 007",
            "one thousand people on the twenty first three point one four and zero zero seven",
        ),
        ("105 and 1999", "one hundred and five and one thousand nine hundred and ninety nine"),
        ("mp3 covid19", "mp three covid nineteen"),
        ("$5 & 50%", "five fifty"),
        ("?! ...", ""),
        ("Café Ünïcode", "café ünïcode"),
    ],
)
def test_normalizer_default(text: str, expected: str) -> None:
    assert NORM.normalize(text) == expected
    assert NORM(text) == expected
    assert NORM(expected) == expected  # idempotent


def test_normalizer_options() -> None:
    keep = TextNormalizer(numbers="keep")
    assert keep("It costs 1,000 or 3.5, not 42.") == "it costs 1000 or 3.5 not 42"
    raw = TextNormalizer(lowercase=False, strip_punctuation=False)
    assert raw("Hello,   World! 42.") == "Hello, World! forty two."
    assert TextNormalizer(strip_punctuation=False)("It's 7!") == "it's seven!"
    assert spell_number("42") == "forty two" and spell_number("3", "05") == "three point zero five"
    with pytest.raises(ValidationError):
        TextNormalizer(numbers="digits")
    with pytest.raises(ValidationError):
        TextNormalizer(lower=True)


def test_error_rates_counted_by_hand() -> None:
    rates = error_rates(["the cat sat on the mat"], ["the cat sit on mat"], NORM)
    assert rates["wer"] == pytest.approx(2 / 6)  # sat->sit substituted, one "the" deleted
    assert (rates["substitutions"], rates["deletions"], rates["insertions"], rates["hits"]) == (1, 1, 0, 4)
    assert (rates["ref_words"], rates["hyp_words"], rates["utterances"]) == (6, 5, 1)
    assert rates["cer"] == pytest.approx(5 / 22)  # a->i, and "the " (4 characters) deleted
    assert (rates["char_errors"], rates["ref_chars"]) == (5, 22)

    both = error_rates(["the cat sat on the mat", "Hello, World!"], ["the cat sit on mat", "hello world"], NORM)
    assert both["wer"] == pytest.approx(2 / 8) and both["cer"] == pytest.approx(5 / 33)  # corpus level, not a mean
    assert error_rates(["I have 42 apples."], ["i have forty-two apples"], NORM)["wer"] == 0.0

    inserted = error_rates(["a b"], ["a x b c"], NORM)
    assert inserted["wer"] == 1.0 and inserted["insertions"] == 2


def test_empty_references() -> None:
    rates = error_rates(["", "one two"], ["uh", "one two"], NORM)
    assert rates["wer"] == pytest.approx(1 / 2) and rates["insertions"] == 1
    assert error_rates(["?", "one"], ["", "one"], NORM)["wer"] == 0.0
    with pytest.raises(DataError, match="all 2 reference transcripts are empty after normalisation"):
        error_rates(["", "!!"], ["a", ""], NORM)
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"], NORM)
    with pytest.raises(ValueError):
        error_rates([], [], NORM)


def test_per_speaker_error_rates() -> None:
    refs = ["the cat sat on the mat", "hello world", "good morning", "one two three"]
    hyps = ["the cat sit on mat", "hello world", "good evening", "one two three four"]
    speakers = ["bob", "alice", "bob", "alice"]
    rates = per_speaker_error_rates(refs, hyps, speakers, NORM)
    assert list(rates) == ["alice", "bob"]
    assert rates["alice"]["wer"] == pytest.approx(1 / 5) and rates["alice"]["insertions"] == 1
    assert rates["bob"]["wer"] == pytest.approx(3 / 8) and rates["bob"]["substitutions"] == 2
    assert rates["bob"] == error_rates([refs[0], refs[2]], [hyps[0], hyps[2]], NORM)
    with pytest.raises(DataError, match="speaker 'carol'"):
        per_speaker_error_rates(["a", "..."], ["a", "b"], ["alice", "carol"], NORM)
    with pytest.raises(ValueError):
        per_speaker_error_rates(["a"], ["a"], [], NORM)


def test_relative_reduction() -> None:
    assert relative_reduction(0.2, 0.15) == pytest.approx(0.25)
    assert relative_reduction(0.2, 0.3) == pytest.approx(-0.5)
    assert relative_reduction(0.4, 0.0) == 1.0
    assert relative_reduction(0.0, 0.0) == 0.0
    assert relative_reduction(0.0, 0.1) == -math.inf
    with pytest.raises(ValueError):
        relative_reduction(-0.1, 0.1)
    assert math.isnan(relative_reduction(float("nan"), 0.1))
