"""Caption metrics: hand-computed BLEU, sacrebleu's documented example, COCO's own scorers called directly."""

from __future__ import annotations

import contextlib
import io
import math
import subprocess

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer
from sacrebleu.metrics import BLEU
from tlengine_plugins.image_captioning.metrics import (
    METRIC_NAMES,
    caption_metrics,
    normalise_caption,
    score_captions,
)

# sacrebleu's README example: three segments, two reference streams.
SACREBLEU_SYS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
SACREBLEU_REFS = [
    ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
    ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
]

# A small corpus with several references per image, every n-gram order matched somewhere.
CORPUS_PREDS = [
    "a small red circle above a blue square",
    "two green triangles next to a yellow circle",
    "a large blue square below a red circle",
    "a dog runs on the grass",
]
CORPUS_REFS = [
    ["a small red circle above a blue square", "a red circle over a small blue square"],
    [
        "two green triangles beside a yellow circle",
        "a yellow circle next to two triangles",
        "green triangles and a circle",
    ],
    ["a big blue square under a red circle"],
    ["a brown dog running on grass", "the dog runs across the green grass"],
]


def _normalised(preds, refs):
    return [normalise_caption(p) for p in preds], [[normalise_caption(r) for r in rs] for rs in refs]


# --- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  A man's red T-shirt, on a bench!  ", "a mans red t shirt on a bench"),
        ("Don\u2019t\tSTOP...\nnow", "dont stop now"),  # typographic apostrophe, tab, newline
        ("3 cats & 2 dogs (outside)", "3 cats 2 dogs outside"),  # symbols and brackets go, digits stay
        ("Ｆｕｌｌｗｉｄｔｈ text", "fullwidth text"),  # NFKC
        ("Ein Hund läuft über die Straße", "ein hund läuft über die straße"),
        ("...", ""),
        ("", ""),
    ],
)
def test_normalise_caption(raw, expected):
    assert normalise_caption(raw) == expected


def test_normalise_caption_rejects_non_strings():
    with pytest.raises(ValueError, match="must be a string"):
        normalise_caption(None)


def test_normalisation_applies_to_both_sides():
    shouted = caption_metrics(
        ["A RED CIRCLE, ABOVE A SQUARE!", "Two dogs."], [["a red circle above a square"], ["two dogs"]]
    )
    assert shouted == caption_metrics(
        ["a red circle above a square", "two dogs"], [["A red circle above a square."], ["TWO DOGS"]]
    )
    assert shouted["bleu_1"] == pytest.approx(1.0)


# --- BLEU ---------------------------------------------------------------------------------------


def test_bleu_hand_computed():
    # Prediction "the cat sat on the mat" vs reference "the cat is on the mat", same length (BP 1):
    # unigrams 5/6, bigrams 3/5 (the cat, on the, the mat), trigrams 1/4 (on the mat), 4-grams 0/3.
    m = caption_metrics(["The cat sat on the mat."], [["the cat is on the mat"]])
    assert m["bleu_1"] == pytest.approx(5 / 6)
    assert m["bleu_2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert m["bleu_3"] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))  # = 0.5
    assert m["bleu_4"] == 0.0  # no 4-gram matches and no smoothing at corpus level


def test_bleu_brevity_penalty_hand_computed():
    # Two words against a six-word reference: every precision 1, BP = exp(1 - 6/2) = e^-2; no trigrams at all.
    m = caption_metrics(["the cat"], [["the cat is on the mat"]])
    assert m["bleu_1"] == pytest.approx(math.exp(-2))
    assert m["bleu_2"] == pytest.approx(math.exp(-2))
    assert m["bleu_3"] == pytest.approx(0.0, abs=1e-12)


def test_bleu_multiple_references_clip_and_closest_length():
    # "the" is clipped at its maximum count in any one reference (2); the closest reference length is 3.
    m = caption_metrics(["the the the"], [["the cat", "the the dog"]])
    assert m["bleu_1"] == pytest.approx(2 / 3)


def test_sacrebleu_documented_example_and_ours_by_hand():
    # sacrebleu's README: "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)".
    documented = BLEU().corpus_score(SACREBLEU_SYS, SACREBLEU_REFS)
    assert round(documented.score, 2) == 48.53
    assert [round(p, 1) for p in documented.precisions] == [82.4, 50.0, 45.5, 37.5]
    assert (documented.sys_len, documented.ref_len) == (17, 18)

    # Ours on the same example, after normalisation ("it wasnt surprising"): hyp 14 tokens, closest
    # references 5 + 4 + 6 = 15, matches 11/14, 6/11, 4/8, 2/5 (counted by hand).
    references = [list(r) for r in zip(*SACREBLEU_REFS)]
    m = caption_metrics(SACREBLEU_SYS, references)
    bp = math.exp(1 - 15 / 14)
    precisions = [11 / 14, 6 / 11, 4 / 8, 2 / 5]
    for n in range(1, 5):
        expected = bp * math.exp(sum(math.log(p) for p in precisions[:n]) / n)
        assert m[f"bleu_{n}"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bleu_n_is_sacrebleu_with_max_ngram_order_n(n):
    preds, refs = _normalised(CORPUS_PREDS, CORPUS_REFS)
    streams = [[rs[k] if k < len(rs) else None for rs in refs] for k in range(max(map(len, refs)))]
    direct = BLEU(tokenize="none", smooth_method="none", max_ngram_order=n).corpus_score(preds, streams)
    assert caption_metrics(CORPUS_PREDS, CORPUS_REFS)[f"bleu_{n}"] == pytest.approx(direct.score / 100, rel=1e-12)


def test_bleu_agrees_with_coco_bleu_scorer():
    # COCO's scorer adds 1e-15 / 1e-9 to every count, hence the tolerance.
    preds, refs = _normalised(CORPUS_PREDS, CORPUS_REFS)
    with contextlib.redirect_stdout(io.StringIO()):
        coco, _ = Bleu(4).compute_score(
            {i: r for i, r in enumerate(refs)}, {i: [p] for i, p in enumerate(preds)}, verbose=0
        )
    m = caption_metrics(CORPUS_PREDS, CORPUS_REFS)
    for n in range(1, 5):
        assert m[f"bleu_{n}"] == pytest.approx(coco[n - 1], rel=1e-6)


# --- CIDEr-D ------------------------------------------------------------------------------------


def test_perfect_match_scores_bleu_one_and_cider_ten():
    # Distinct captions, every reference equal to the prediction: every cosine is 1, no length penalty.
    captions = [
        "a small red circle above a blue square",
        "two green triangles next to a yellow circle",
        "a dog runs on the grass",
    ]
    refs = [[c] * k for c, k in zip(captions, (1, 2, 3))]
    scores = score_captions(captions, refs)
    for n in range(1, 5):
        assert scores.metrics[f"bleu_{n}"] == pytest.approx(1.0)
    assert scores.metrics["cider"] == pytest.approx(10.0)
    # The library's own scorer, fed sample by sample, agrees.
    scorer = CiderScorer(n=4, sigma=6.0)
    for c, r in zip(captions, refs):
        scorer += (c, r)
    corpus, per_sample = scorer.compute_score()
    assert corpus == pytest.approx(10.0)
    assert [s["cider"] for s in scores.samples] == pytest.approx(list(per_sample))
    assert all(s["bleu_4"] == pytest.approx(1.0) for s in scores.samples)


def test_cider_d_equals_pycocoevalcap_cider_on_the_same_tokens():
    preds, refs = _normalised(CORPUS_PREDS, CORPUS_REFS)
    direct, direct_per_sample = Cider().compute_score(
        {i: r for i, r in enumerate(refs)}, {i: [p] for i, p in enumerate(preds)}
    )
    scores = score_captions(CORPUS_PREDS, CORPUS_REFS)
    assert scores.metrics["cider"] == pytest.approx(float(direct), rel=1e-12)
    assert [s["cider"] for s in scores.samples] == pytest.approx(list(direct_per_sample), rel=1e-12)
    assert 0.0 < scores.metrics["cider"] < 10.0
    assert caption_metrics(CORPUS_PREDS, CORPUS_REFS) == scores.metrics


def test_cider_d_of_a_single_image_is_zero():
    # The idf comes from the evaluated corpus: with one image, log(1) - log(df=1) = 0 for every n-gram.
    assert caption_metrics(["a red circle"], [["a red circle"]])["cider"] == 0.0


# --- per-sample details -------------------------------------------------------------------------


def test_per_sample_scores():
    scores = score_captions(CORPUS_PREDS, CORPUS_REFS)
    preds, refs = _normalised(CORPUS_PREDS, CORPUS_REFS)
    assert scores.predictions == preds and scores.references == refs
    assert len(scores.samples) == len(CORPUS_PREDS)
    sentence = BLEU(tokenize="none", smooth_method="exp", effective_order=True)
    for sample, p, r in zip(scores.samples, preds, refs):
        assert set(sample) == {"bleu_4", "cider"}
        assert sample["bleu_4"] == pytest.approx(sentence.sentence_score(p, r).score / 100)
    assert scores.samples[0]["bleu_4"] == pytest.approx(1.0)  # identical to its first reference
    assert sum(s["cider"] for s in scores.samples) / len(scores.samples) == pytest.approx(scores.metrics["cider"])


# --- edge cases ---------------------------------------------------------------------------------


def test_empty_prediction_scores_zero_and_the_rest_still_counts():
    preds = ["", *CORPUS_PREDS[1:]]
    scores = score_captions(preds, CORPUS_REFS)
    assert scores.samples[0] == {"bleu_4": 0.0, "cider": 0.0}
    assert set(scores.metrics) == set(METRIC_NAMES)
    assert all(math.isfinite(v) and v >= 0 for v in scores.metrics.values())
    assert 0 < scores.metrics["bleu_1"] < caption_metrics(CORPUS_PREDS, CORPUS_REFS)["bleu_1"]


def test_all_predictions_empty_scores_zero():
    m = caption_metrics(["", "?!"], [["a red circle"], ["a blue square"]])
    assert m == {name: 0.0 for name in METRIC_NAMES}


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        (["a", "b"], [["a"]], "Got 2 predictions but 1 reference lists"),
        ([], [], "nothing to score"),
        (["a dog"], [[]], "Sample 0 has no reference caption"),
        (["a dog", "a cat"], [["a dog"], ["a cat", "!!!"]], "Reference 1 of sample 1 .* is empty once normalised"),
        (["a dog"], ["a dog"], r"references\[0\] must be a list"),
        ("a dog", [["a dog"]], "predictions must be a list"),
        (["a dog"], "a dog", "references must be a list"),
        ([None], [["a dog"]], "must be a string"),
        (["a dog"], [[3]], "must be a string"),
    ],
)
def test_bad_inputs_raise_value_error_with_a_sentence(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        caption_metrics(predictions, references)
    with pytest.raises(ValueError, match=message):
        score_captions(predictions, references)


def test_runs_without_java(monkeypatch):
    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"caption metrics tried to start a process: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    scores = score_captions(CORPUS_PREDS, CORPUS_REFS)
    assert set(scores.metrics) == set(METRIC_NAMES)
