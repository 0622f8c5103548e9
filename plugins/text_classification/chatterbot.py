"""The ``chatterbot-corpus`` dataset: the topic-labelled conversation files of the PyPI
package ``chatterbot-corpus`` (BSD licence), read from where it is installed; nothing is
downloaded. Every line of every conversation is a text labelled with its file's topic.

Pipeline example::

    data: {dataset: chatterbot-corpus, args: {categories: [food, sports, money]}}
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tlengine.data import DatasetSpec
from tlengine.errors import DataError

from .datasets import TASK, TextSamples, check_class_names, list_names, normalise_text, plural

#: Default ``chatterbot-corpus`` categories (English): the six files with the most distinct
#: lines (trivia 504, emotion 247, coding 194, ai 163, psychology 119, literature 73 before
#: filtering) whose topics differ. Left out: tech_support (2,100 lines but 20 distinct),
#: conversations and greetings (small talk that overlaps every other topic), and the files
#: with fewer than 50 distinct lines.
CHATTERBOT_DEFAULT_CATEGORIES: tuple[str, ...] = ("ai", "coding", "emotion", "literature", "psychology", "trivia")


# --------------------------------------------------------------------------- chatterbot-corpus
class ChatterbotCorpusArgs(BaseModel):
    """Arguments of the ``chatterbot-corpus`` dataset: one class per conversation file (topic)."""

    model_config = ConfigDict(extra="forbid")

    categories: list[str] | None = Field(
        None,
        description="file names (without .yml) to use, in label order (default for english: "
        f"{', '.join(CHATTERBOT_DEFAULT_CATEGORIES)}; for another language: all its files)",
    )
    language: str = Field("english", description="folder of chatterbot_corpus/data to read")
    min_chars: int = Field(3, ge=1, description="drop texts shorter than this many characters")
    max_per_class: int | None = Field(None, ge=1, description="keep only the first N texts of each category")

    @field_validator("categories")
    @classmethod
    def _class_names(cls, v: list[str] | None) -> list[str] | None:
        return check_class_names(v)

    @field_validator("language")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or not v.replace("_", "").isalnum():
            raise ValueError("must be a plain folder name such as english")
        return v


def _chatterbot_dir(language: str) -> Path:
    """``chatterbot_corpus/data/<language>`` of the installed package (found without importing it)."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the chatterbot-corpus dataset needs the Python package chatterbot-corpus, which is not installed; "
            "install it with: pip install chatterbot-corpus"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    folder = data / language
    if not folder.is_dir():
        languages = sorted(p.name for p in data.iterdir() if p.is_dir()) if data.is_dir() else []
        raise DataError(
            f"chatterbot-corpus has no language '{language}' (no folder {folder}); "
            f"available: {list_names(languages) or 'none'}"
        )
    return folder


def _conversation_lines(path: Path) -> list[str]:
    """Every statement and response in a corpus file, stripped; numbers become text, other values are skipped."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"chatterbot-corpus file {path} cannot be read ({reason})") from None
    conversations = doc.get("conversations") if isinstance(doc, dict) else None
    if not isinstance(conversations, list):
        raise DataError(f"chatterbot-corpus file {path} has no 'conversations' list")
    lines = []
    for conversation in conversations:
        for entry in conversation if isinstance(conversation, list) else [conversation]:
            # YAML turns a bare yes/no into a boolean: the original word is lost, so skip it.
            if entry is None or isinstance(entry, (bool, dict, list)):
                continue
            lines.append(str(entry).strip())
    return lines


def build_chatterbot_corpus(args: ChatterbotCorpusArgs, root: Path) -> TextSamples:
    """Texts labelled by their corpus file (``root`` is unused: the package's files are read).

    Texts are deduplicated within a category (ignoring case and spacing); a text found in
    two or more categories is ambiguous and dropped from all of them (counted in ``source``).
    """
    folder = _chatterbot_dir(args.language)
    available = sorted(p.stem for p in folder.glob("*.yml"))
    if args.categories is not None:
        categories = list(args.categories)
    elif args.language == "english":
        categories = list(CHATTERBOT_DEFAULT_CATEGORIES)
    else:
        categories = available
    unknown = [c for c in categories if c not in available]
    if unknown:
        listed = ", ".join(f"'{c}'" for c in unknown)
        raise DataError(
            f"chatterbot-corpus {args.language} has no category {listed} (in {folder}); "
            f"available: {', '.join(available) or 'none'}"
        )
    if len(categories) < 2:
        raise DataError(
            f"chatterbot-corpus {args.language} has only one category '{categories[0]}'; "
            "classification needs at least 2"
        )

    per_class: list[dict[str, str]] = []  # normalised text -> first spelling, in file order
    for category in categories:
        seen: dict[str, str] = {}
        for line in _conversation_lines(folder / f"{category}.yml"):
            if len(line) >= args.min_chars:
                seen.setdefault(normalise_text(line), line)
        per_class.append(seen)
    in_classes = Counter(key for seen in per_class for key in seen)
    ambiguous = {key for key, n in in_classes.items() if n > 1}

    texts: list[str] = []
    labels: list[int] = []
    for label, (category, seen) in enumerate(zip(categories, per_class)):
        kept = [text for key, text in seen.items() if key not in ambiguous][: args.max_per_class]
        if not kept:
            raise DataError(
                f"chatterbot-corpus file {folder / category}.yml has no texts of at least {args.min_chars} "
                "characters that appear in no other category"
            )
        texts += kept
        labels += [label] * len(kept)
    dropped = f"; {plural(len(ambiguous), 'text')} found in more than one category dropped" if ambiguous else ""
    return TextSamples(
        texts,
        labels,
        categories,
        source=(
            f"chatterbot-corpus {args.language} ({plural(len(categories), 'class')}, "
            f"{plural(len(texts), 'text')}{dropped})"
        ),
    )


CHATTERBOT_CORPUS = DatasetSpec(
    name="chatterbot-corpus",
    task=TASK,
    args=ChatterbotCorpusArgs,
    build=build_chatterbot_corpus,
    description="English chat lines labelled by topic, from the pip package chatterbot-corpus (no download)",
)
