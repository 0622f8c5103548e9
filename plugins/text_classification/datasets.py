"""What every text-classification dataset builds (:class:`TextSamples`), the helpers the
datasets share, and their registration: ``text-file`` (:mod:`.text_file`) and
``chatterbot-corpus`` (:mod:`.chatterbot`).

Each dataset is a :class:`tlengine.data.DatasetSpec`: a pydantic model that validates
``data.args`` in the pipeline file, and ``build(args, root)`` that returns
:class:`TextSamples` - the texts, their label indices and the class names.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

__all__ = ["TASK", "TextSamples", "normalise_text", "texts_fingerprint", "register_datasets"]

TASK = "text-classification"

# Names listed in one message before "...".
MAX_NAMED = 20


@dataclass
class TextSamples:
    """What every text-classification dataset builds.

    texts: the texts (stripped of surrounding whitespace, otherwise verbatim).
    labels: label of each text, an index into ``classes``.
    classes: class names, in label order.
    source: one line for logs and reports, e.g. ``"TSV /data/sms.tsv (2 classes, 5,574 texts)"``.
    splits: a split the dataset ships with, as indices into ``texts``: keys ``train`` and
        ``test``, and ``val`` if the dataset has one (without it, validation comes out of
        ``train``). None: the whole set is split at random. See
        :func:`tlengine_plugins.text_classification.splits.split_text_samples`.
    """

    texts: list[str]
    labels: list[int]
    classes: list[str]
    source: str
    splits: dict[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.texts)


# --------------------------------------------------------------------------- helpers
def plural(n: int, word: str) -> str:
    """``plural(1, "text")`` -> "1 text"; ``plural(5574, "text")`` -> "5,574 texts"."""
    if n == 1:
        return f"1 {word}"
    return f"{n:,} {word}{'es' if word.endswith('s') else 's'}"


def list_names(values: list[str]) -> str:
    """``a, b, c`` with at most MAX_NAMED names."""
    shown = ", ".join(values[:MAX_NAMED])
    return shown + (f", ... ({len(values) - MAX_NAMED} more)" if len(values) > MAX_NAMED else "")


def check_class_names(v: list[str] | None) -> list[str] | None:
    """Shared validator: at least two distinct, non-blank class names."""
    if v is None:
        return v
    if len(v) < 2:
        raise ValueError("must list at least 2 classes (or be omitted)")
    if any(not c.strip() for c in v):
        raise ValueError("class names must not be blank")
    dupes = sorted({c for c in v if v.count(c) > 1})
    if dupes:
        raise ValueError(f"classes listed more than once: {', '.join(dupes)}")
    return v


def label_order(labels: set[str]) -> list[str]:
    """Default class order: ham before spam, integers numerically, anything else sorted."""
    if {label.lower() for label in labels} == {"ham", "spam"} and len(labels) == 2:
        return sorted(labels, key=lambda label: label.lower() != "ham")  # the negative class first
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def normalise_text(text: str) -> str:
    """Key under which two texts count as the same: whitespace collapsed, lower-cased."""
    return " ".join(text.split()).lower()


def texts_fingerprint(texts: list[str], labels: list[int]) -> str:
    """SHA-256 (hex) of the texts and labels in order; same data -> same string, on any machine."""
    if len(texts) != len(labels):
        raise ValueError(f"texts_fingerprint got {len(texts)} texts but {len(labels)} labels")
    digest = hashlib.sha256(b"tlengine-texts-v1\n")
    for text, label in zip(texts, labels):
        data = text.encode("utf-8", "surrogatepass")
        digest.update(f"{int(label)} {len(data)}\n".encode())  # length prefix: no two lists collide
        digest.update(data)
    return digest.hexdigest()


# --------------------------------------------------------------------------- registration
def register_datasets(registry: Any) -> None:
    """Add the two datasets to a dataset :class:`tlengine.registry.Registry`."""
    from .chatterbot import CHATTERBOT_CORPUS
    from .text_file import TEXT_FILE

    for spec in (TEXT_FILE, CHATTERBOT_CORPUS):
        registry.add(spec.name, spec, description=spec.description)
