"""One text normaliser for both sides of speech recognition: training targets and scoring.

The model learns to write what :meth:`TextNormalizer.normalize` makes of a transcript, and
word/character error rates compare normalised references with normalised hypotheses, so
"Hello, World!" and "hello world" are the same words. In order, ``normalize``:

1. applies Unicode NFKC and turns typographic apostrophes (’ ‘ ʼ ` ´) into ``'``;
2. numbers (``numbers``): ``"words"`` spells every run of digits with num2words in English
   ("42" -> "forty two", "1,000" -> "one thousand", "3.14" -> "three point one four",
   "21st" -> "twenty first"; num2words' hyphens and commas become spaces and its British
   "and" is kept: "105" -> "one hundred and five"; years are read as cardinals, "1999" ->
   "one thousand nine hundred and ninety nine"; a leading zero is read digit by digit,
   "007" -> "zero zero seven"). ``"keep"`` leaves digits alone (thousands commas dropped,
   "1,000" -> "1000", and a decimal point kept, "3.5"). Number words back to digits
   ("forty two" -> "42") is **not offered**: doing it well needs a grammar of English number
   phrases ("one oh five", "twenty twenty four", "a hundred") this module does not have;
3. ``lowercase``;
4. ``strip_punctuation``: every punctuation mark and symbol (Unicode categories P* and S*)
   becomes a space, except an apostrophe between two letters/digits ("it's", "o'clock"
   keep theirs; "'quoted'" and "dogs'" lose them) and, with ``numbers: keep``, a decimal
   point between two digits;
5. collapses every run of whitespace to one space and strips both ends.

>>> TextNormalizer().normalize("Hello, World! It's 42.")
"hello world it's forty two"
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from num2words import num2words
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TextNormalizer", "spell_number"]

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
# 1,234,567 or 1234, an optional decimal part, an optional ordinal suffix.
_NUMBER = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?((?:st|nd|rd|th)\b)?", re.IGNORECASE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# num2words reads integers up to this many digits; longer runs are read digit by digit.
_MAX_DIGITS = 15


def _words(text: str) -> str:
    return text.replace("-", " ").replace(",", " ")


def _digits(digits: str) -> str:
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits)


def spell_number(integer: str, decimals: str | None = None, ordinal: bool = False) -> str:
    """English words for a number given as digit strings: ``spell_number("42")`` -> "forty two".

    integer: the digits before the decimal point (thousands commas allowed).
    decimals: the digits after it, read one by one ("14" -> "one four"), or None.
    ordinal: "21" -> "twenty first" (ignored when there are decimals).
    Hyphens and commas of num2words' output become spaces (not collapsed here).
    """
    integer = integer.replace(",", "")
    if len(integer) > 1 and integer.startswith("0") or len(integer) > _MAX_DIGITS:
        spoken = _digits(integer)
    elif ordinal and decimals is None:
        spoken = _words(num2words(int(integer), to="ordinal", lang="en"))
    else:
        spoken = _words(num2words(int(integer), lang="en"))
    if decimals is not None:
        spoken += " point " + _digits(decimals)
    return spoken


def _spell_match(match: re.Match[str]) -> str:
    integer, decimals, suffix = match.group(1), match.group(2), match.group(3)
    spoken = spell_number(integer, decimals, ordinal=suffix is not None)
    text, start, end = match.string, match.start(), match.end()
    before = " " if start > 0 and text[start - 1].isalnum() else ""  # "mp3" -> "mp three"
    after = " " if end < len(text) and text[end].isalnum() else ""
    return f"{before}{spoken}{after}"


def _keep_char(text: str, i: int, keep_decimal_point: bool) -> bool:
    """Whether the punctuation mark ``text[i]`` survives stripping."""
    ch = text[i]
    if ch not in "'.":
        return False
    before = text[i - 1] if i > 0 else ""
    after = text[i + 1] if i + 1 < len(text) else ""
    if ch == "'":
        return before.isalnum() and after.isalnum()
    return keep_decimal_point and before.isdigit() and after.isdigit()


class TextNormalizer(BaseModel):
    """Options of the normaliser (see the module docstring for what each step does).

    A pydantic model (``extra="forbid"``), so a task can take it as part of its arguments;
    ``normalize(text)`` (or calling the instance) gives the normalised text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lowercase: bool = Field(True, description="lower-case the text")
    strip_punctuation: bool = Field(
        True, description="punctuation and symbols become spaces (apostrophes inside words are kept)"
    )
    numbers: Literal["words", "keep"] = Field(
        "words",
        description="words: spell digits in English ('42' -> 'forty two'); keep: leave digits as they are",
    )

    def normalize(self, text: str) -> str:
        """The normalised form of ``text`` ("" for a text with nothing left, e.g. "?!")."""
        text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
        if self.numbers == "words":
            text = _NUMBER.sub(_spell_match, text)
        else:
            text = _THOUSANDS.sub("", text)
        if self.lowercase:
            text = text.lower()
        if self.strip_punctuation:
            keep_point = self.numbers == "keep"
            text = "".join(
                " " if unicodedata.category(ch)[0] in "PS" and not _keep_char(text, i, keep_point) else ch
                for i, ch in enumerate(text)
            )
        return " ".join(text.split())

    def __call__(self, text: str) -> str:
        return self.normalize(text)
