"""Word and character error rates of transcripts, overall and per speaker.

References and hypotheses are normalised with the same
:class:`~.text_normalize.TextNormalizer` the training targets went through, then aligned by
jiwer (``process_words`` / ``process_characters``). Rates are corpus-level: the errors of
every utterance summed, over the reference words (characters) summed, not a mean of
per-utterance rates.

Empty references. A reference that is empty after normalisation is allowed: it has no words
to get right, so its hypothesis words all count as insertions. A set whose references are
*all* empty has no rate (errors over zero words): that is a DataError, not 0 or infinity.
CER counts characters of the normalised text, spaces between words included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable

import jiwer
from tlengine.errors import DataError

__all__ = ["error_rates", "per_speaker_error_rates", "relative_reduction"]


def _normalised(texts: Sequence[str], normalizer: Callable[[str], str] | Any) -> list[str]:
    fn = normalizer.normalize if hasattr(normalizer, "normalize") else normalizer
    return [fn(t) for t in texts]


def error_rates(references: Sequence[str], hypotheses: Sequence[str], normalizer: Any) -> dict[str, float | int]:
    """WER, CER and the error counts of ``hypotheses`` against ``references`` (same order).

    normalizer: a :class:`~.text_normalize.TextNormalizer` (or any ``str -> str`` callable)
        applied to both sides first.

    Returns ``{"wer", "cer"}`` (fractions, 0 = perfect; above 1 with many insertions) and
    ``"utterances"``, ``"ref_words"``, ``"hyp_words"``, ``"hits"``, ``"substitutions"``,
    ``"deletions"``, ``"insertions"`` (word counts: wer = (S + D + I) / ref_words) and
    ``"ref_chars"``, ``"char_errors"`` (cer = char_errors / ref_chars).

    ValueError if the lists differ in length or are empty; DataError if every reference is
    empty after normalisation (see the module docstring).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"error_rates got {len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("error_rates needs at least one reference")
    refs, hyps = _normalised(references, normalizer), _normalised(hypotheses, normalizer)
    ref_words = sum(len(r.split()) for r in refs)
    if ref_words == 0:
        raise DataError(
            f"all {len(refs)} reference transcripts are empty after normalisation, so there is no error rate"
        )
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    ref_chars = chars.hits + chars.substitutions + chars.deletions
    return {
        "wer": float(words.wer),
        "cer": float(chars.cer),
        "utterances": len(refs),
        "ref_words": ref_words,
        "hyp_words": sum(len(h.split()) for h in hyps),
        "hits": int(words.hits),
        "substitutions": int(words.substitutions),
        "deletions": int(words.deletions),
        "insertions": int(words.insertions),
        "ref_chars": int(ref_chars),
        "char_errors": int(char_errors),
    }


def per_speaker_error_rates(
    references: Sequence[str], hypotheses: Sequence[str], speakers: Sequence[str], normalizer: Any
) -> dict[str, dict[str, float | int]]:
    """:func:`error_rates` of each speaker's utterances: ``{speaker: rates}``, speakers sorted.

    ``speakers[i]`` is the speaker of ``references[i]``/``hypotheses[i]``. DataError if one
    speaker's references are all empty after normalisation.
    """
    if not len(references) == len(hypotheses) == len(speakers):
        raise ValueError(
            f"per_speaker_error_rates got {len(references)} references, {len(hypotheses)} hypotheses "
            f"and {len(speakers)} speakers"
        )
    groups: dict[str, list[int]] = {}
    for i, speaker in enumerate(speakers):
        groups.setdefault(speaker, []).append(i)
    out: dict[str, dict[str, float | int]] = {}
    for speaker in sorted(groups):
        idx = groups[speaker]
        try:
            out[speaker] = error_rates([references[i] for i in idx], [hypotheses[i] for i in idx], normalizer)
        except DataError:
            raise DataError(
                f"speaker '{speaker}' has only reference transcripts that are empty after normalisation, "
                "so it has no error rate"
            ) from None
    return out


def relative_reduction(before: float, after: float) -> float:
    """How much of the error ``before`` that ``after`` removed: ``(before - after) / before``.

    0.25 means a quarter of the errors went away (WER 0.20 -> 0.15); negative means worse.
    ``before == 0``: 0.0 if ``after`` is 0 too, else ``-inf`` (any error is an unbounded
    increase over a perfect score). NaN in either gives NaN (a missing rate stays missing);
    ValueError for a negative rate.
    """
    if math.isnan(before) or math.isnan(after):
        return math.nan
    for name, value in (("before", before), ("after", after)):
        if value < 0:
            raise ValueError(f"relative_reduction: {name} must be a rate >= 0, got {value}")
    if before == 0:
        return 0.0 if after == 0 else float("-inf")
    return (before - after) / before
