"""Train/val/test split of an image-classification dataset, checked class by class.

:func:`split_samples` keeps a split the dataset ships with (``ImageSamples.splits``,
e.g. an ``image-folder`` with ``train/``, ``val/`` and ``test/`` folders) and otherwise
splits every class at random with :func:`tlengine.data.split_indices` (stratified,
deterministic for a seed). Either way it then checks each class:

* no training images, or no test images -> :class:`~tlengine.errors.DataError` naming
  the class, its image count and how many images a class needs (a class the model never
  sees in training cannot be learnt; one absent from test is never measured);
* no validation images -> a warning (one plain sentence) in ``SplitResult.warnings``:
  the run still works, but validation (best epoch, early stopping) does not see it.

This module imports no torch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from tlengine.data import split_indices
from tlengine.errors import DataError

from .datasets import ImageSamples

__all__ = ["SplitResult", "split_samples"]

# Classes named in one message before "and N more".
_MAX_NAMED = 10


@dataclass
class SplitResult:
    """Indices into ``samples.items`` for each split (sorted), and what to tell the user.

    warnings: plain sentences for problems that do not stop a run (a class without
        validation images); the caller prints them.
    """

    train: list[int]
    val: list[int]
    test: list[int]
    warnings: list[str] = field(default_factory=list)


def split_samples(samples: ImageSamples, *, val_fraction: float, test_fraction: float, seed: int) -> SplitResult:
    """Split ``samples`` into train/val/test and check that every class can be learnt and measured.

    With ``samples.splits`` (a predefined split) its ``train`` and ``test`` are kept as
    they are and ``test_fraction`` is not used; its ``val`` too when present, otherwise
    validation is split from ``train`` per class with ``val_fraction`` and ``seed``.
    Without it, :func:`tlengine.data.split_indices` splits every class with both
    fractions and ``seed``.

    Returns a :class:`SplitResult`. Raises DataError when a class would get no training
    or no test images, naming the class, its image count and the minimum per class.
    """
    labels = samples.labels
    if samples.splits is not None:
        result = _predefined(samples.splits, labels, val_fraction, seed)
        problems = _predefined_problems(samples, result)
        if problems:
            raise DataError(problems)
        result.warnings += _missing_val_warnings(
            samples, result, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
        return result

    if test_fraction <= 0:
        raise DataError(
            f"{samples.source}: test_fraction is 0, so no image goes to the test split; "
            "set it above 0 (or give the dataset a test split)"
        )
    train, val, test = split_indices(labels, val_fraction, test_fraction, seed)
    result = SplitResult(train, val, test)
    counts = _counts(labels, result)
    total = Counter(labels)
    short = [c for c in range(len(samples.classes)) if counts["train"][c] == 0 or counts["test"][c] == 0]
    if short:
        need = _min_per_class(val_fraction, test_fraction, seed, need=("train", "test"))
        named = _name_classes(samples.classes, short, total)
        raise DataError(
            f"{samples.source}: {named} too few images to split into train and test with val_fraction "
            f"{val_fraction:g} and test_fraction {test_fraction:g}: each class needs {_at_least(need)}"
        )
    result.warnings += _missing_val_warnings(
        samples, result, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
    )
    return result


# ------------------------------------------------------------------------------ helpers
def _images(n: int) -> str:
    return "1 image" if n == 1 else f"{n} images"


def _at_least(n: int | None) -> str:
    return "more images" if n is None else f"at least {_images(n)}"


def _counts(labels: list[int], result: SplitResult) -> dict[str, Counter]:
    return {name: Counter(labels[i] for i in getattr(result, name)) for name in ("train", "val", "test")}


def _name_classes(classes: list[str], which: Iterable[int], counts: Counter, where: str = "") -> str:
    """ "class 'a' (2 images) has" / "classes 'a' (2 images), 'b' (1 image) have", at most _MAX_NAMED named."""
    which = list(which)
    parts = [f"'{classes[c]}' ({_images(counts[c])}{where})" for c in which[:_MAX_NAMED]]
    if len(which) > _MAX_NAMED:
        parts.append(f"{len(which) - _MAX_NAMED} more")
    if len(which) == 1:
        return f"class {parts[0]} has"
    return f"classes {', '.join(parts[:-1])} and {parts[-1]} have"


def _min_per_class(val_fraction: float, test_fraction: float, seed: int, need: tuple[str, ...]) -> int | None:
    """The fewest images a class needs for ``split_indices`` to give it one in each split of ``need``.

    Asked of ``split_indices`` itself (one class of n images, n = 1, 2, ...) so the
    number stays true if its rounding rules change.
    """
    for n in range(1, 1001):
        train, val, test = split_indices([0] * n, val_fraction, test_fraction, seed)
        got = {"train": train, "val": val, "test": test}
        if all(got[name] for name in need):
            return n
    return None


def _predefined(splits: dict[str, list[int]], labels: list[int], val_fraction: float, seed: int) -> SplitResult:
    missing = [k for k in ("train", "test") if k not in splits]
    if missing:  # a dataset bug, not a user error
        raise ValueError(f"ImageSamples.splits needs 'train' and 'test' keys, it lacks {', '.join(missing)}")
    train = sorted(splits["train"])
    test = sorted(splits["test"])
    if "val" in splits:
        return SplitResult(train, sorted(splits["val"]), test)
    sub_train, sub_val, _ = split_indices([labels[i] for i in train], val_fraction, 0.0, seed)
    return SplitResult(sorted(train[i] for i in sub_train), sorted(train[i] for i in sub_val), test)


def _predefined_problems(samples: ImageSamples, result: SplitResult) -> str:
    """One sentence about classes without train or test images in a predefined split ('' if none)."""
    counts = _counts(samples.labels, result)
    train_total = Counter(samples.labels[i] for i in samples.splits["train"])
    classes = range(len(samples.classes))
    no_train = [c for c in classes if counts["train"][c] == 0]
    no_test = [c for c in classes if counts["test"][c] == 0]
    sentences = []
    if no_train:
        named = _name_classes(samples.classes, no_train, counts["test"], " in test")
        sentences.append(
            f"{named} no images in the predefined train split; every class needs at least 1 training image"
        )
    if no_test:
        named = _name_classes(samples.classes, no_test, train_total, " in train")
        sentences.append(f"{named} no images in the predefined test split; every class needs at least 1 test image")
    return f"{samples.source}: " + "; ".join(sentences) if sentences else ""


def _missing_val_warnings(
    samples: ImageSamples, result: SplitResult, *, val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """One sentence naming the classes without validation images, if validation was asked for."""
    counts = _counts(samples.labels, result)
    no_val = [c for c in range(len(samples.classes)) if counts["val"][c] == 0]
    them = "it" if len(no_val) == 1 else "them"
    splits = samples.splits
    if not no_val:
        return []
    if splits is not None and "val" in splits:
        named = _name_classes(samples.classes, no_val, counts["train"], " in train")
        return [(f"{named} no images in the predefined val split, so validation does not measure {them}.")]
    if val_fraction <= 0:
        return []  # no validation asked for: nothing is missing
    if splits is not None:  # val comes out of the predefined train split
        pool = Counter(samples.labels[i] for i in splits["train"])
        need = _min_per_class(val_fraction, 0.0, seed, need=("train", "val"))
        where = " in train"
    else:
        pool = Counter(samples.labels)
        need = _min_per_class(val_fraction, test_fraction, seed, need=("train", "val", "test"))
        where = ""
    named = _name_classes(samples.classes, no_val, pool, where)
    return [
        (
            f"{named} no validation images (with val_fraction {val_fraction:g} a class needs "
            f"{_at_least(need)}{where}), so validation does not measure {them}."
        )
    ]
