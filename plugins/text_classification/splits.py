"""Train/val/test split of a text-classification dataset, checked class by class.

:func:`split_text_samples` keeps a split the dataset ships with (``TextSamples.splits``,
e.g. a ``text-file`` with a ``test_path``) and otherwise splits every class at random
with :func:`tlengine.data.split_indices` (stratified, deterministic for a seed). Then:

* a class with no training or no test texts -> :class:`~tlengine.errors.DataError`
  naming the class and its text count;
* a class with no validation texts -> a warning (one plain sentence) in
  ``SplitResult.warnings``;
* val/test texts that also occur in train (same text ignoring case and spacing; SMS data
  is full of them) -> a warning with the counts and one example.
  :func:`duplicates_across_splits` gives the counts for reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from tlengine.data import split_indices
from tlengine.errors import DataError

from .datasets import TextSamples, normalise_text

__all__ = ["SplitResult", "split_text_samples", "duplicates_across_splits"]

# Classes named in one message before "and N more"; characters of a quoted example.
_MAX_NAMED = 10
_EXAMPLE_CHARS = 60


@dataclass
class SplitResult:
    """Indices into ``samples.texts`` for each split (sorted), and what to tell the user.

    warnings: plain sentences for problems that do not stop a run; the caller prints them.
    """

    train: list[int]
    val: list[int]
    test: list[int]
    warnings: list[str] = field(default_factory=list)


def split_text_samples(samples: TextSamples, *, val_fraction: float, test_fraction: float, seed: int) -> SplitResult:
    """Split ``samples`` into train/val/test, check every class, and warn about duplicates.

    With ``samples.splits`` its ``train`` and ``test`` are kept and ``test_fraction`` is
    not used; its ``val`` too when present, otherwise validation is split from ``train``
    per class with ``val_fraction`` and ``seed``. Without it, every class is split with
    both fractions and ``seed``.

    Raises DataError when a class gets no training or no test texts.
    """
    labels = samples.labels
    if samples.splits is not None:
        result = _predefined(samples.splits, labels, val_fraction, seed)
    else:
        if test_fraction <= 0:
            raise DataError(
                f"{samples.source}: test_fraction is 0, so no text goes to the test split; "
                "set it above 0 (or give the dataset a test file)"
            )
        result = SplitResult(*split_indices(labels, val_fraction, test_fraction, seed))
    counts = {name: Counter(labels[i] for i in getattr(result, name)) for name in ("train", "val", "test")}
    total = Counter(labels)
    classes = range(len(samples.classes))

    problems = []
    for name in ("train", "test"):
        short = [c for c in classes if counts[name][c] == 0]
        if short:
            how = "in the predefined split" if samples.splits is not None else "after splitting"
            problems.append(
                f"{_name_classes(samples.classes, short, total)} no {name} texts {how} "
                f"(val_fraction {val_fraction:g}, test_fraction {test_fraction:g})"
            )
    if problems:
        raise DataError(f"{samples.source}: {'; '.join(problems)}; every class needs texts in train and in test")

    no_val = [c for c in classes if counts["val"][c] == 0]
    if no_val and (val_fraction > 0 or (samples.splits is not None and "val" in samples.splits)):
        them = "it" if len(no_val) == 1 else "them"
        result.warnings.append(
            f"{_name_classes(samples.classes, no_val, total)} no validation texts, so validation does not "
            f"measure {them}."
        )
    duplicate = _duplicate_warning(samples.texts, result)
    if duplicate:
        result.warnings.append(duplicate)
    return result


def duplicates_across_splits(texts: list[str], split: SplitResult) -> dict[str, int]:
    """``{"val": n, "test": m}``: how many val and test texts also occur in train (ignoring case and spacing)."""
    return {name: len(found) for name, found in _duplicates(texts, split).items()}


# ------------------------------------------------------------------------------ helpers
def _texts(n: int) -> str:
    return "1 text" if n == 1 else f"{n:,} texts"


def _name_classes(classes: list[str], which: Iterable[int], counts: Counter) -> str:
    """ "class 'a' (2 texts) has" / "classes 'a' (2 texts) and 'b' (1 text) have", at most _MAX_NAMED named."""
    which = list(which)
    parts = [f"'{classes[c]}' ({_texts(counts[c])})" for c in which[:_MAX_NAMED]]
    if len(which) > _MAX_NAMED:
        parts.append(f"{len(which) - _MAX_NAMED} more")
    if len(which) == 1:
        return f"class {parts[0]} has"
    return f"classes {', '.join(parts[:-1])} and {parts[-1]} have"


def _predefined(splits: dict[str, list[int]], labels: list[int], val_fraction: float, seed: int) -> SplitResult:
    missing = [k for k in ("train", "test") if k not in splits]
    if missing:  # a dataset bug, not a user error
        raise ValueError(f"TextSamples.splits needs 'train' and 'test' keys, it lacks {', '.join(missing)}")
    train, test = sorted(splits["train"]), sorted(splits["test"])
    if "val" in splits:
        return SplitResult(train, sorted(splits["val"]), test)
    sub_train, sub_val, _ = split_indices([labels[i] for i in train], val_fraction, 0.0, seed)
    return SplitResult(sorted(train[i] for i in sub_train), sorted(train[i] for i in sub_val), test)


def _duplicates(texts: list[str], split: SplitResult) -> dict[str, list[int]]:
    """Indices of the val and test texts whose normalised form is also a training text."""
    in_train = {normalise_text(texts[i]) for i in split.train}
    return {name: [i for i in getattr(split, name) if normalise_text(texts[i]) in in_train] for name in ("val", "test")}


def _duplicate_warning(texts: list[str], split: SplitResult) -> str:
    """One sentence with the duplicate counts and an example, or '' if there are none."""
    found = _duplicates(texts, split)
    parts = [
        f"{len(found[name]):,} of {_texts(len(getattr(split, name)))} in {name}"
        for name in ("test", "val")
        if found[name]
    ]
    if not parts:
        return ""
    example = " ".join(texts[(found["test"] or found["val"])[0]].split())
    if len(example) > _EXAMPLE_CHARS:
        example = example[: _EXAMPLE_CHARS - 3].rstrip() + "..."
    return (
        f'{" and ".join(parts)} also occur in train (same text ignoring case and spacing, e.g. "{example}"), '
        "so scores on them measure recall of training texts more than generalisation."
    )
