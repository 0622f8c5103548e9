"""Caption metrics: corpus BLEU-1..4 through sacrebleu, CIDEr-D through pycocoevalcap's ``Cider``.

Both libraries get the same tokens: every caption, prediction and reference alike, goes through
:func:`normalise_caption` (NFKC, lowercase, punctuation and symbols out, whitespace collapsed) and
is then split on whitespace — sacrebleu runs with ``tokenize="none"``, and pycocoevalcap's scorers
split on whitespace themselves. Nothing here calls Java: COCO's PTBTokenizer (a Java jar) is
replaced by :func:`normalise_caption`, so scores can differ slightly from the COCO server's, whose
tokenizer e.g. splits ``man's`` into ``man 's`` where this one gives ``mans``.

What the numbers mean (all on a 0-1 scale except CIDEr-D, which is on COCO's scale):

* ``bleu_n`` (n = 1..4) is corpus BLEU with maximum n-gram order n, exactly sacrebleu's
  ``BLEU(max_ngram_order=n, smooth_method="none")``: the brevity penalty times the geometric mean
  of the corpus-level modified (clipped) n-gram precisions of orders 1..n. The counts are summed
  over the whole corpus before dividing; each prediction's reference length is the length of its
  closest reference (ties go to the shorter), as in sacrebleu and COCO. No smoothing: a corpus
  without a single matching n-gram of some order up to n has ``bleu_n`` 0 (COCO's BLEU scorer
  instead counts such a precision as about 1e-6, which leaves a small non-zero score).
* ``cider`` is CIDEr-D (Vedantam et al., 2015) as COCO reports it: pycocoevalcap's ``Cider``
  with n = 1..4, sigma = 6 — tf-idf n-gram vectors, clipped cosine similarity, a Gaussian
  penalty on the length difference, mean over references and n-gram orders, times 10. The idf
  comes from the references of the evaluated corpus itself, so CIDEr-D needs several images: on
  a single image every weight is 0 and the score is 0, and an n-gram found in every image's
  references weighs nothing. A perfect match on a corpus of distinct captions scores 10.

Per sample (:attr:`CaptionScores.samples`): sentence BLEU-4 (sacrebleu's ``sentence_score`` with
its recommended exponential smoothing and effective order, so short captions are not all 0) and
the sample's CIDEr-D under the corpus idf — for the JSON of predictions next to their references.

An empty prediction is allowed (it scores 0). Errors, as :class:`ValueError` with a sentence:
no samples, a different number of predictions and reference lists, a sample without
references, a reference that is empty once normalised, anything that is not a string.

METEOR is left out: pycocoevalcap's METEOR runs a Java jar, and NLTK's needs WordNet data that
is downloaded at run time.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

from pycocoevalcap.cider.cider import Cider
from sacrebleu.metrics import BLEU

BLEU_ORDERS = (1, 2, 3, 4)
METRIC_NAMES = tuple(f"bleu_{n}" for n in BLEU_ORDERS) + ("cider",)
CIDER_N = 4
CIDER_SIGMA = 6.0

# Deleted rather than turned into a space, so "don't" -> "dont" and "man's" -> "mans".
_APOSTROPHES = frozenset("'\u2018\u2019\u02bc`\u00b4")


def normalise_caption(text: str) -> str:
    """The one normalisation applied to predictions and references alike.

    NFKC-normalise, lowercase, delete apostrophes, turn every other Unicode punctuation (P*) or
    symbol (S*) character into a space, and collapse whitespace to single spaces with no
    leading or trailing space. Digits and letters of any script are kept.

    >>> normalise_caption("  A man's red T-shirt, on a bench!  ")
    'a mans red t shirt on a bench'
    """
    if not isinstance(text, str):
        raise ValueError(f"A caption must be a string, got {type(text).__name__}: {text!r}.")
    chars = []
    for ch in unicodedata.normalize("NFKC", text).lower():
        if ch in _APOSTROPHES:
            continue
        category = unicodedata.category(ch)
        chars.append(" " if category[0] in "PS" or category == "Cc" else ch)
    return " ".join("".join(chars).split())


@dataclass(frozen=True)
class CaptionScores:
    """Corpus metrics, per-sample scores and the normalised captions they were computed on."""

    metrics: dict[str, float]
    samples: list[dict[str, float]] = field(default_factory=list)
    predictions: list[str] = field(default_factory=list)
    references: list[list[str]] = field(default_factory=list)


def _normalise_inputs(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[list[str], list[list[str]]]:
    if isinstance(predictions, str) or not isinstance(predictions, Sequence):
        raise ValueError("predictions must be a list of caption strings, one per image.")
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise ValueError("references must be a list with one list of reference captions per image.")
    if len(predictions) != len(references):
        raise ValueError(
            f"Got {len(predictions)} predictions but {len(references)} reference lists: "
            "there must be exactly one list of reference captions per prediction."
        )
    if not predictions:
        raise ValueError("There is nothing to score: predictions and references are empty.")
    preds = [normalise_caption(p) for p in predictions]
    refs: list[list[str]] = []
    for i, sample_refs in enumerate(references):
        if isinstance(sample_refs, str) or not isinstance(sample_refs, Sequence):
            raise ValueError(f"references[{i}] must be a list of reference captions, got {type(sample_refs).__name__}.")
        if not sample_refs:
            raise ValueError(f"Sample {i} has no reference caption; every prediction needs at least one.")
        normalised = [normalise_caption(r) for r in sample_refs]
        for j, ref in enumerate(normalised):
            if not ref:
                raise ValueError(
                    f"Reference {j} of sample {i} ({sample_refs[j]!r}) is empty once normalised "
                    "(lowercase, punctuation removed); references must contain words."
                )
        refs.append(normalised)
    return preds, refs


def _corpus_bleu(preds: list[str], refs: list[list[str]]) -> dict[str, float]:
    """BLEU-1..4 from one pass of sacrebleu: the order-n score uses the first n precisions."""
    max_refs = max(len(r) for r in refs)
    # sacrebleu takes reference *streams*; None pads samples that have fewer references.
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(max_refs)]
    bleu = BLEU(tokenize="none", lowercase=False, smooth_method="none", max_ngram_order=max(BLEU_ORDERS))
    corpus = bleu.corpus_score(preds, streams)
    out = {}
    for n in BLEU_ORDERS:
        score = BLEU.compute_bleu(
            correct=list(corpus.counts[:n]),
            total=list(corpus.totals[:n]),
            sys_len=corpus.sys_len,
            ref_len=corpus.ref_len,
            smooth_method="none",
            max_ngram_order=n,
        )
        out[f"bleu_{n}"] = float(score.score) / 100.0
    return out


def _cider_d(preds: list[str], refs: list[list[str]]) -> tuple[float, list[float]]:
    gts = {i: list(r) for i, r in enumerate(refs)}
    res = {i: [p] for i, p in enumerate(preds)}
    corpus, per_sample = Cider(n=CIDER_N, sigma=CIDER_SIGMA).compute_score(gts, res)
    return float(corpus), [float(s) for s in per_sample]


def score_captions(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> CaptionScores:
    """Corpus metrics plus per-sample sentence BLEU-4 and CIDEr-D; see the module docstring."""
    preds, refs = _normalise_inputs(predictions, references)
    metrics = _corpus_bleu(preds, refs)
    cider, cider_per_sample = _cider_d(preds, refs)
    metrics["cider"] = cider
    sentence_bleu = BLEU(tokenize="none", lowercase=False, smooth_method="exp", effective_order=True)
    samples = [
        {"bleu_4": float(sentence_bleu.sentence_score(p, r).score) / 100.0, "cider": c}
        for p, r, c in zip(preds, refs, cider_per_sample)
    ]
    return CaptionScores(metrics=metrics, samples=samples, predictions=preds, references=refs)


def caption_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """``bleu_1`` .. ``bleu_4`` (corpus BLEU, 0-1) and ``cider`` (CIDEr-D, COCO scale).

    ``references[i]`` holds the reference captions of the image ``predictions[i]`` describes
    (any number >= 1 per image). Both sides go through :func:`normalise_caption` first.
    """
    preds, refs = _normalise_inputs(predictions, references)
    metrics = _corpus_bleu(preds, refs)
    metrics["cider"] = _cider_d(preds, refs)[0]
    return metrics
